"""`tradesim user add` and `tradesim token create`: the token they print works on the API; bad input exits
non-zero with a message."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.api.conftest import Stack, http
from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.api import create_app
from tradesim.cli import main


def run(*argv: str) -> int:
    return main(list(argv))


async def test_user_add_then_token_create_then_the_token_works(tmp_path: Path, stack: Stack,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "cli-data")
    code = await asyncio.to_thread(run, "user", "add", "dana", "--role", "trader", "--password", "pass-word-1",
                                   "--account", "alice", "--data-dir", data, "--api-key")
    out = capsys.readouterr().out
    assert code == 0 and "added trader dana (account alice)" in out
    api_key = out.split("api key (shown once, keep it safe): ")[1].strip()
    assert await asyncio.to_thread(run, "token", "create", "dana", "--data-dir", data, "--ttl", "120") == 0
    token = capsys.readouterr().out.strip()
    assert oct(os.stat(Path(data) / "jwt.secret").st_mode & 0o777) == "0o600"

    from tradesim.store.users import open_users

    users = await open_users(data)
    config = stack.config.with_settings(data_dir=data)
    try:
        async with http(create_app(stack.bus, config, users)) as client:
            r = await client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and r.json()["account"]["account"] == "alice", r.text
            r = await client.post("/api/v1/auth/token", json={"username": "dana", "password": "pass-word-1"})
            assert r.status_code == 200
            r = await client.post("/api/v1/auth/token", json={"api_key": api_key})
            assert r.status_code == 200
            other = create_app(stack.bus, config.with_settings(data_dir=str(tmp_path / "elsewhere")), users)
            async with http(other) as client2:  # another secret: the token is not valid there
                r = await client2.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401
    finally:
        await users.close()


def test_bad_cli_input_exits_non_zero_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "d")
    assert run("user", "add", "erin", "--role", "viewer", "--password", "pass-word-1", "--data-dir", data) == 0
    capsys.readouterr()
    cases = [
        (("user", "add", "erin", "--role", "viewer", "--password", "pass-word-1", "--data-dir", data),
         "already exists"),
        (("user", "add", "fred", "--role", "king", "--password", "pass-word-1", "--data-dir", data), "unknown role"),
        (("user", "add", "fred", "--role", "viewer", "--password", "short", "--data-dir", data), "at least 8"),
        (("token", "create", "nobody", "--data-dir", data), "no user 'nobody'"),
        (("token", "create", "erin", "--data-dir", data, "--ttl", "0"), "--ttl must be positive"),
    ]
    for argv, message in cases:
        assert run(*argv) != 0, argv
        assert message in capsys.readouterr().err, argv


def test_token_for_a_user_in_postgres(pg_url: str,  # noqa: F811
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("user", "add", "gina", "--role", "admin", "--password", "pass-word-1", "--db", pg_url) == 0
    assert run("token", "create", "gina", "--db", pg_url, "--data-dir", str(tmp_path)) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.count(".") == 2



async def test_a_postgres_token_works_on_every_api_process_without_a_shared_file(
        pg_url: str, tmp_path: Path, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """In distributed mode the key lives in the users database: a token made by `token create --db` on one
    machine is valid on an API process with another data directory (and no `[api] jwt_secret`)."""
    assert await asyncio.to_thread(run, "user", "add", "hana", "--role", "trader", "--password", "pass-word-1",
                                   "--account", "alice", "--db", pg_url) == 0
    assert await asyncio.to_thread(run, "token", "create", "hana", "--db", pg_url,
                                   "--data-dir", str(tmp_path / "cli")) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]

    from tradesim.api.auth import token_secret
    from tradesim.store.users import open_users

    first, second = await open_users(pg_url), await open_users(pg_url)
    try:
        assert await first.shared_secret("jwt") == await second.shared_secret("jwt")
        config = stack.config.with_settings(data_dir=str(tmp_path / "api"))
        async with http(create_app(stack.bus, config, second, secret=await token_secret(config, second))) as client:
            r = await client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            assert not (tmp_path / "api" / "jwt.secret").exists()
        sqlite = await open_users(str(tmp_path / "local"))
        try:
            assert await sqlite.shared_secret("jwt") is None  # one machine: the jwt.secret file serves
        finally:
            await sqlite.close()
    finally:
        await first.close()
        await second.close()


async def test_a_revoked_api_key_no_longer_authenticates(tmp_path: Path, stack: Stack,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "keys")
    assert await asyncio.to_thread(run, "user", "add", "ivan", "--role", "trader", "--password", "pass-word-1",
                                   "--account", "alice", "--data-dir", data, "--api-key") == 0
    key = capsys.readouterr().out.split("api key (shown once, keep it safe): ")[1].strip()
    key_id = key.split("_")[1]

    from tradesim.store.users import open_users

    users = await open_users(data)
    config = stack.config.with_settings(data_dir=data)
    try:
        app = create_app(stack.bus, config, users)
        app.state["auth"].key_recheck = 0.05
        async with http(app) as client:
            exchanged = await client.post("/api/v1/auth/token", json={"api_key": key})
            assert exchanged.status_code == 200
            bearer = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
            password = await client.post("/api/v1/auth/token", json={"username": "ivan", "password": "pass-word-1"})
            by_password = {"Authorization": f"Bearer {password.json()['access_token']}"}
            assert (await client.get("/api/v1/accounts/me", headers=bearer)).status_code == 200
            assert await asyncio.to_thread(run, "user", "revoke-key", key_id, "--data-dir", data) == 0
            assert capsys.readouterr().out.strip() == f"revoked API key {key_id} of ivan"
            r = await client.post("/api/v1/auth/token", json={"api_key": key})
            assert r.status_code == 401, r.text
            await asyncio.sleep(0.06)  # the token exchanged for the key is refused from the next key check on
            r = await client.get("/api/v1/accounts/me", headers=bearer)
            assert (r.status_code, r.json()["error"]) == (401, "key_revoked"), r.text
            assert (await client.get("/api/v1/accounts/me", headers=by_password)).status_code == 200
    finally:
        await users.close()
    assert await asyncio.to_thread(run, "user", "revoke-key", key, "--data-dir", data) == 2  # the whole key, again
    assert f"no API key {key_id!r}" in capsys.readouterr().err
