"""`tradesim user add|revoke-key` and `tradesim token create`: manage API users and keys, mint access tokens
offline.

All take `--data-dir DIR` (users.db and jwt.secret live there, default ./data) or `--db URL`
(users in PostgreSQL), matching what `tradesim run` is given, so a token made here works on its API.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from tradesim.cli import CliError

if TYPE_CHECKING:
    from tradesim.services.config import SystemConfig
    from tradesim.store.users import User, UserStore

DEFAULT_DATA_DIR = "./data"


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"data directory (users.db, jwt.secret; default {DEFAULT_DATA_DIR})")
    parser.add_argument("--db", help="users database URL: postgresql://… (or sqlite:///path/users.db)")
    parser.add_argument("--config", help="configuration file ([api] jwt_secret, token_ttl; [system] data_dir)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="manage API users", description="Manage the HTTP API's users.")
    user_actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_actions.add_parser("add", help="create a user",
                                  description="Create a user with a role (admin, trader, viewer, compliance).")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="admin, trader, viewer or compliance")
    add.add_argument("--password", required=True, help="at least 8 characters")
    add.add_argument("--account", help="the trading account the user acts on (default: the username)")
    add.add_argument("--api-key", action="store_true", help="also create an API key and print it (shown once)")
    _where(add)
    add.set_defaults(handler=run_user_add)

    revoke = user_actions.add_parser("revoke-key", help="revoke an API key",
                                     description="Delete an API key (give its id or the whole key): requests "
                                                 "with it fail at once, WebSockets opened with it are closed.")
    revoke.add_argument("key", help="the key id (the part after tsk_) or the whole key")
    _where(revoke)
    revoke.set_defaults(handler=run_revoke_key)

    token = sub.add_parser("token", help="mint access tokens", description="Mint API access tokens.")
    token_actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_actions.add_parser("create", help="print a JWT for a user",
                                      description="Print an access token (JWT) for an existing user.")
    create.add_argument("username")
    create.add_argument("--ttl", type=int, help="seconds the token is valid (default [api] token_ttl)")
    _where(create)
    create.set_defaults(handler=run_token_create)


def _config(args: argparse.Namespace) -> SystemConfig:
    from tradesim.services.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    return config.with_settings(data_dir=args.data_dir)


def _target(args: argparse.Namespace, data_dir: str) -> str:
    return str(args.db or data_dir)


def run_user_add(args: argparse.Namespace) -> int:
    config = _config(args)
    return asyncio.run(_user_add(args, _target(args, config.settings.data_dir)))


async def _user_add(args: argparse.Namespace, target: str) -> int:
    from tradesim.store.users import UsersError

    users = await _open(target)
    try:
        user = await users.add(args.username, args.role, args.password, args.account)
        key = await users.add_api_key(user.username) if args.api_key else None
    except UsersError as exc:
        raise CliError(str(exc)) from exc
    finally:
        await users.close()
    print(f"added {user.role.value} {user.username} (account {user.account}) to {users.location}")
    if key is not None:
        print(f"api key (shown once, keep it safe): {key}")
    return 0


def run_revoke_key(args: argparse.Namespace) -> int:
    config = _config(args)
    return asyncio.run(_revoke_key(args.key, _target(args, config.settings.data_dir)))


async def _revoke_key(key: str, target: str) -> int:
    from tradesim.store.users import split_api_key

    users = await _open(target)
    try:
        owner = await users.revoke_key(key)
    finally:
        await users.close()
    shown = (split_api_key(key) or (key, ""))[0]
    if owner is None:
        raise CliError(f"no API key {shown!r} in {users.location}")
    print(f"revoked API key {shown} of {owner}")
    return 0


def run_token_create(args: argparse.Namespace) -> int:
    from tradesim.api.auth import issue_token, jwt_secret

    config = _config(args)
    if args.ttl is not None and args.ttl <= 0:
        raise CliError(f"--ttl must be positive, got {args.ttl}")
    user, shared = asyncio.run(_find(args.username, _target(args, config.settings.data_dir)))
    try:
        secret = config.api.jwt_secret or shared or jwt_secret(config)
    except OSError as exc:
        raise CliError(f"cannot read or create the token secret under {config.settings.data_dir}: {exc}") from exc
    print(issue_token(secret, user, args.ttl or config.api.token_ttl))
    return 0


async def _find(username: str, target: str) -> tuple[User, str | None]:
    """The user, and the store's shared token secret (PostgreSQL: the one every API replica uses)."""

    users = await _open(target)
    try:
        user = await users.get(username)
        shared = await users.shared_secret("jwt") if user is not None else None
    finally:
        await users.close()
    if user is None:
        raise CliError(f"no user {username!r} in {users.location} (create one with `tradesim user add`)")
    return user, shared


async def _open(target: str) -> UserStore:
    from tradesim.store.users import UsersError, open_users

    try:
        return await open_users(target)
    except UsersError as exc:
        raise CliError(str(exc)) from exc
