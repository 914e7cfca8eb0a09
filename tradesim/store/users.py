"""API users: salted scrypt password hashes, hashed API keys and roles, in SQLite or PostgreSQL.

`open_users(target)` takes what `open_journal` takes: a data directory (SQLite `<dir>/users.db`),
`sqlite:///path/to/users.db`, or `postgresql://…`. Secrets never leave this module in clear text
except a new API key, returned once by `add_api_key`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from abc import ABC, abstractmethod
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import msgspec

from tradesim.store.threads import run_serialized

SQLITE_FILE: Final = "users.db"
USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD: Final = 8
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, tens of ms) — the OWASP floor for interactive logins.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
KEY_PREFIX: Final = "tsk"


class Role(StrEnum):
    ADMIN = "admin"
    TRADER = "trader"
    VIEWER = "viewer"
    COMPLIANCE = "compliance"


class User(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    role: Role
    account: str
    created_ts: int = 0


class UsersError(Exception):
    """A refused user operation; the message says what to fix."""


class UserExistsError(UsersError):
    pass


class UnknownUserError(UsersError):
    pass


class BadUserError(UsersError, ValueError):
    """A bad username, role, account or password."""


def parse_role(role: str) -> Role:
    try:
        return Role(role.lower())
    except ValueError:
        raise BadUserError(f"unknown role {role!r} (known: {', '.join(r.value for r in Role)})") from None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` (base64url): self-describing, so the cost can be raised later."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def new_api_key() -> tuple[str, str, str]:
    """(key id, the full key to show once, the hash to store). Keys are random 192-bit secrets, so a fast
    hash is enough; the id makes the lookup an index hit."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}", _key_hash(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_new(username: str, role: str, password: str, account: str | None) -> tuple[Role, str]:
    if not USERNAME_RE.match(username):
        raise BadUserError(f"bad username {username!r}: 1-64 of letters, digits and _.@- starting with a "
                           "letter or digit")
    parsed = parse_role(role)
    if len(password) < MIN_PASSWORD:
        raise BadUserError(f"password must be at least {MIN_PASSWORD} characters")
    account = account if account is not None else username
    if not account or not account.strip() or account != account.strip():
        raise BadUserError(f"bad account {account!r}")
    return parsed, account


class UserStore(ABC):
    """Users and their API keys; every method is safe to call from the event loop (hashing runs in a thread)."""

    location: str

    async def add(self, username: str, role: str, password: str, account: str | None = None) -> User:
        """Create a user; the account defaults to the username. Raises UserExistsError / BadUserError."""
        parsed, account = _check_new(username, role, password, account)
        hashed = await asyncio.to_thread(hash_password, password)
        user = User(username=username, role=parsed, account=account, created_ts=time.time_ns())
        await self._insert_user(user, hashed)
        return user

    async def get(self, username: str) -> User | None:
        row = await self._user_row(username)
        return None if row is None else row[0]

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches; None for an unknown user or a wrong password (same cost)."""
        row = await self._user_row(username)
        stored = row[1] if row is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, password, stored)
        return row[0] if row is not None and ok else None

    async def add_api_key(self, username: str) -> str:
        """A new API key for `username`, returned in clear this once; only its hash is kept."""
        if await self.get(username) is None:
            raise UnknownUserError(f"no user {username!r}")
        key_id, key, hashed = new_api_key()
        await self._insert_key(key_id, username, hashed)
        return key

    async def authenticate_key(self, key: str) -> tuple[User, str] | None:
        """(the key's user, the key id) for a valid key, else None."""
        parts = split_api_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        found = await self._key_row(key_id)
        if found is None or not hmac.compare_digest(found[1], _key_hash(secret)):
            return None
        user = await self.get(found[0])
        return None if user is None else (user, key_id)

    async def key_exists(self, key_id: str) -> bool:
        """Whether the API key `key_id` is still there (not revoked)."""
        return await self._key_row(key_id) is not None

    async def revoke_key(self, key: str) -> str | None:
        """Delete an API key, named by its id or by the whole key; returns the key's user, None if unknown.

        Exchanging the key fails at once; tokens exchanged for it are refused, and a WebSocket holding it
        is closed, at their next key check (docs/api.md)."""
        parts = split_api_key(key)
        key_id = parts[0] if parts is not None else key
        found = await self._key_row(key_id)
        if found is None:
            return None
        await self._delete_key(key_id)
        return found[0]

    async def shared_secret(self, name: str) -> str | None:
        """A random secret named `name`, created on first use, that every process using this store reads
        alike — or None when the store is local to one machine (SQLite: the secret files next to it serve).

        The API's token key lives here in distributed mode, so that `tradesim token create --db …` and every
        API replica sign and check tokens with the same key."""
        return None

    @abstractmethod
    async def list(self) -> list[User]: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _insert_user(self, user: User, hashed: str) -> None: ...

    @abstractmethod
    async def _user_row(self, username: str) -> tuple[User, str] | None: ...

    @abstractmethod
    async def _insert_key(self, key_id: str, username: str, hashed: str) -> None: ...

    @abstractmethod
    async def _key_row(self, key_id: str) -> tuple[str, str] | None: ...

    @abstractmethod
    async def _delete_key(self, key_id: str) -> None: ...


_DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS api_users (username TEXT PRIMARY KEY, role TEXT NOT NULL, account TEXT NOT NULL, "
    "password_hash TEXT NOT NULL, created_ts BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, username TEXT NOT NULL "
    "REFERENCES api_users(username), key_hash TEXT NOT NULL, created_ts BIGINT NOT NULL)",
)


def _user(row: Any) -> tuple[User, str]:
    username, role, account, password_hash, created_ts = row
    return User(username=username, role=Role(role), account=account, created_ts=created_ts), password_hash


class SqliteUserStore(UserStore):
    """One SQLite file; calls run in a worker thread under a lock (one connection, few writes)."""

    def __init__(self, path: Path) -> None:
        self.location = str(path)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._lock = asyncio.Lock()

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        def work() -> list[Any]:
            return self._conn.execute(sql, args).fetchall()

        return await run_serialized(self._lock, work)

    async def _insert_user(self, user: User, hashed: str) -> None:
        try:
            await self._run("INSERT INTO api_users VALUES (?, ?, ?, ?, ?)", user.username, user.role.value,
                            user.account, hashed, user.created_ts)
        except sqlite3.IntegrityError:
            raise UserExistsError(f"user {user.username!r} already exists") from None

    async def _user_row(self, username: str) -> tuple[User, str] | None:
        rows = await self._run("SELECT username, role, account, password_hash, created_ts FROM api_users "
                               "WHERE username = ?", username)
        return _user(rows[0]) if rows else None

    async def _insert_key(self, key_id: str, username: str, hashed: str) -> None:
        await self._run("INSERT INTO api_keys VALUES (?, ?, ?, ?)", key_id, username, hashed, time.time_ns())

    async def _delete_key(self, key_id: str) -> None:
        await self._run("DELETE FROM api_keys WHERE key_id = ?", key_id)

    async def _key_row(self, key_id: str) -> tuple[str, str] | None:
        rows = await self._run("SELECT username, key_hash FROM api_keys WHERE key_id = ?", key_id)
        return (rows[0][0], rows[0][1]) if rows else None

    async def list(self) -> list[User]:
        rows = await self._run("SELECT username, role, account, password_hash, created_ts FROM api_users "
                               "ORDER BY username")
        return [_user(r)[0] for r in rows]

    async def close(self) -> None:
        async with self._lock:
            self._conn.close()


class PostgresUserStore(UserStore):
    """Tables `api_users` and `api_keys` in the given database (the journal's, typically)."""

    def __init__(self, url: str, pool: Any) -> None:
        self.location = url
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresUserStore:
        import asyncpg

        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise UsersError(f"cannot open users database {url}: {exc}") from exc
        async with pool.acquire() as conn:
            for statement in _SCHEMA:
                await conn.execute(statement)
        return cls(url, pool)

    async def shared_secret(self, name: str) -> str | None:
        await self._pool.execute("CREATE TABLE IF NOT EXISTS api_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        await self._pool.execute("INSERT INTO api_secrets VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name,
                                 secrets.token_urlsafe(48))
        value: str = await self._pool.fetchval("SELECT value FROM api_secrets WHERE name = $1", name)
        return value

    async def _insert_user(self, user: User, hashed: str) -> None:
        import asyncpg

        try:
            await self._pool.execute("INSERT INTO api_users VALUES ($1, $2, $3, $4, $5)", user.username,
                                     user.role.value, user.account, hashed, user.created_ts)
        except asyncpg.UniqueViolationError:
            raise UserExistsError(f"user {user.username!r} already exists") from None

    async def _user_row(self, username: str) -> tuple[User, str] | None:
        row = await self._pool.fetchrow("SELECT username, role, account, password_hash, created_ts FROM api_users "
                                        "WHERE username = $1", username)
        return _user(tuple(row)) if row is not None else None

    async def _insert_key(self, key_id: str, username: str, hashed: str) -> None:
        await self._pool.execute("INSERT INTO api_keys VALUES ($1, $2, $3, $4)", key_id, username, hashed,
                                 time.time_ns())

    async def _delete_key(self, key_id: str) -> None:
        await self._pool.execute("DELETE FROM api_keys WHERE key_id = $1", key_id)

    async def _key_row(self, key_id: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow("SELECT username, key_hash FROM api_keys WHERE key_id = $1", key_id)
        return (row[0], row[1]) if row is not None else None

    async def list(self) -> list[User]:
        rows = await self._pool.fetch("SELECT username, role, account, password_hash, created_ts FROM api_users "
                                      "ORDER BY username")
        return [_user(tuple(r))[0] for r in rows]

    async def close(self) -> None:
        await self._pool.close()


class MemoryUserStore(UserStore):
    """For tests and throwaway runs: nothing persists."""

    def __init__(self) -> None:
        self.location = "memory"
        self._users: dict[str, tuple[User, str]] = {}
        self._keys: dict[str, tuple[str, str]] = {}

    async def _insert_user(self, user: User, hashed: str) -> None:
        if user.username in self._users:
            raise UserExistsError(f"user {user.username!r} already exists")
        self._users[user.username] = (user, hashed)

    async def _user_row(self, username: str) -> tuple[User, str] | None:
        return self._users.get(username)

    async def _insert_key(self, key_id: str, username: str, hashed: str) -> None:
        self._keys[key_id] = (username, hashed)

    async def _key_row(self, key_id: str) -> tuple[str, str] | None:
        return self._keys.get(key_id)

    async def _delete_key(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    async def list(self) -> list[User]:
        return [u for u, _ in sorted(self._users.values(), key=lambda x: x[0].username)]

    async def close(self) -> None:
        pass


async def open_users(target: str | Path) -> UserStore:
    """The user store at `target`: `postgresql://…`, `sqlite:///file.db`, or a data directory (created)."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return await PostgresUserStore.open(text)
    if text.startswith("sqlite://"):
        path = Path(text.removeprefix("sqlite://"))
        if path.name == "journal.db":  # the journal's URL given for the data dir: keep users beside it
            path = path.with_name(SQLITE_FILE)
    else:
        path = Path(text) / SQLITE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(SqliteUserStore, path)
    except (OSError, sqlite3.Error) as exc:
        raise UsersError(f"cannot open users database {path}: {exc}") from exc
