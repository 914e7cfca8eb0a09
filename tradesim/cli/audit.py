"""`tradesim audit verify`: recompute the journal's hash chain, name the first record that does not match."""

from __future__ import annotations

import argparse
import asyncio
import sys

from tradesim.cli import CliError

DEFAULT_DATA_DIR = "./data"
EXIT_BAD_RECORD = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="audit the command journal",
                            description="Audit the venue's command journal.")
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="recompute the hash chain",
        description="Recompute the journal's hash chain. Exit 0 printing the record count when every "
                    "record matches; exit 1 naming the first record that does not.")
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help=f"data directory holding journal.db (default {DEFAULT_DATA_DIR})")
    where.add_argument("--db", help="database URL: postgresql://… or sqlite:///path/to/journal.db")
    verify.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    target = args.db or args.data_dir or DEFAULT_DATA_DIR
    return asyncio.run(_verify(target))


async def _verify(target: str) -> int:
    from tradesim.store import JournalError, open_journal

    try:
        journal = await open_journal(target, create=False)
    except JournalError as exc:
        raise CliError(str(exc)) from exc
    try:
        report = await journal.verify()
    except JournalError as exc:
        raise CliError(f"cannot read journal {journal.location}: {exc}") from exc
    finally:
        await journal.close()
    if report.bad is None:
        print(f"ok: {report.count} records, chain verified (head {report.head_hash.hex()})")
        return 0
    print(f"FAILED at {report.bad} ({report.count} records before it verified)", file=sys.stderr)
    return EXIT_BAD_RECORD
