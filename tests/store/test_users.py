"""The user store on SQLite and PostgreSQL: hashed passwords and API keys, roles, duplicates, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.store.users import (
    BadUserError,
    Role,
    UnknownUserError,
    UserExistsError,
    UserStore,
    check_password,
    hash_password,
    open_users,
)


async def exercise(users: UserStore) -> None:
    alice = await users.add("alice", "trader", "s3cret-pass")
    assert (alice.role, alice.account) == (Role.TRADER, "alice")
    await users.add("cora", "COMPLIANCE", "s3cret-pass", account="desk-7")
    assert (await users.authenticate("alice", "s3cret-pass")) == alice
    assert await users.authenticate("alice", "wrong-pass!") is None
    assert await users.authenticate("nobody", "s3cret-pass") is None
    with pytest.raises(UserExistsError):
        await users.add("alice", "viewer", "another-pass")
    with pytest.raises(BadUserError, match="unknown role"):
        await users.add("bob", "king", "s3cret-pass")
    with pytest.raises(BadUserError, match="at least 8"):
        await users.add("bob", "viewer", "short")
    with pytest.raises(BadUserError, match="bad username"):
        await users.add("bad name", "viewer", "s3cret-pass")
    with pytest.raises(UnknownUserError):
        await users.add_api_key("nobody")
    key = await users.add_api_key("cora")
    found = await users.authenticate_key(key)
    assert found is not None and found[0].username == "cora" and found[0].account == "desk-7"
    assert await users.authenticate_key(key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert await users.authenticate_key("tsk_nothere_abc") is None
    assert await users.authenticate_key("garbage") is None
    second = await users.add_api_key("cora")
    assert await users.revoke_key(key.split("_")[1]) == "cora"  # by id: that key stops working, not the other
    assert await users.authenticate_key(key) is None
    assert await users.authenticate_key(second) is not None
    assert await users.revoke_key(second) == "cora"  # by the whole key
    assert await users.authenticate_key(second) is None
    assert await users.revoke_key(second) is None and await users.revoke_key("nothere") is None
    assert [u.username for u in await users.list()] == ["alice", "cora"]


async def test_sqlite_store_keeps_only_hashes_and_persists(tmp_path: Path) -> None:
    users = await open_users(tmp_path)
    try:
        await exercise(users)
        key = await users.add_api_key("alice")
    finally:
        await users.close()
    dump = "\n".join(sqlite3.connect(tmp_path / "users.db").iterdump())
    assert "s3cret-pass" not in dump and key.split("_", 2)[2] not in dump and "scrypt$" in dump
    again = await open_users(f"sqlite:///{tmp_path / 'users.db'}")
    try:
        assert (await again.authenticate("alice", "s3cret-pass")) is not None
        assert (await again.authenticate_key(key)) is not None
    finally:
        await again.close()


async def test_postgres_store(pg_url: str) -> None:  # noqa: F811
    users = await open_users(pg_url)
    try:
        await exercise(users)
    finally:
        await users.close()
    again = await open_users(pg_url)
    try:
        assert (await again.get("cora")) is not None
    finally:
        await again.close()


def test_password_hash_is_salted_and_checked() -> None:
    a, b = hash_password("pw-12345678"), hash_password("pw-12345678")
    assert a != b and check_password("pw-12345678", a) and check_password("pw-12345678", b)
    assert not check_password("pw-12345679", a)
    assert not check_password("pw-12345678", "garbage")
