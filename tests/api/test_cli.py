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

