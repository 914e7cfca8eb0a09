"""`tradesim audit verify` on good, tampered, missing and unreachable journals: exit codes and messages."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.store.conftest import Backend
from tests.store.streams import listing, random_commands
from tradesim.cli import main
from tradesim.store.chain import encode_command


def where(backend: Backend) -> list[str]:
    return ["--data-dir", backend.target] if backend.name == "sqlite" else ["--db", backend.target]


def make_journal(backend: Backend, n: int = 30) -> None:
    async def run() -> None:
        async with await backend.open() as journal:
            await journal.append_many([listing(), *random_commands(random.Random(n), n - 1)])

    asyncio.run(run())


def test_good_journal_exits_0_with_the_count(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    make_journal(backend, 30)
    assert main(["audit", "verify", *where(backend)]) == 0
    assert "ok: 30 records, chain verified" in capsys.readouterr().out


def test_tampered_journal_names_the_first_bad_record(backend: Backend,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_journal(backend, 30)
    forged = encode_command(listing(ts=5))
    asyncio.run(backend.sql("UPDATE journal SET command = ? WHERE seq = ?", forged, 17))
    assert main(["audit", "verify", *where(backend)]) == 1
    err = capsys.readouterr().err
    assert "record seq 17: hash mismatch" in err and "16 records before it verified" in err


def test_gap_is_named(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    make_journal(backend, 30)
    asyncio.run(backend.sql("DELETE FROM journal WHERE seq = ?", 21))
    assert main(["audit", "verify", *where(backend)]) == 1
    assert "record seq 21: sequence gap: expected seq 21, found seq 22" in capsys.readouterr().err


def test_missing_journal_is_a_clear_error(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", *where(backend)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tradesim: no journal")
    assert not (Path(backend.target) / "journal.db").exists()


def test_unreachable_database_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", "postgresql://postgres@127.0.0.1:1/tradesim"]) == 2
    assert "tradesim: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/tradesim" in \
        capsys.readouterr().err


def test_sqlite_url_in_a_separate_process(tmp_path: Path) -> None:
    backend = Backend("sqlite", str(tmp_path))
    make_journal(backend, 12)
    entry = "import sys; from tradesim.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", entry, "audit", "verify", "--db", f"sqlite:///{tmp_path}/journal.db"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("ok: 12 records")


def test_data_dir_and_db_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["audit", "verify", "--data-dir", "x", "--db", "postgresql://h/d"])
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
