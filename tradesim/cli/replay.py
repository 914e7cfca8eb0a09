"""`tradesim replay`: run a JSONL command file through a fresh engine, one event per output line."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import msgspec

from tradesim.cli import CliError

PROGRESS_EVERY = 100_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("replay", help="replay a JSONL command file through the matching engine",
                            description="Replay commands (docs/replay.md) and write one event per line.")
    parser.add_argument("--input", "-i", required=True, help="commands file (JSONL), or - for stdin")
    parser.add_argument("--output", "-o", help="events file (JSONL); default stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tradesim.services.replay import Replayer

    with ExitStack() as stack:
        source: IO[bytes] = sys.stdin.buffer if args.input == "-" else stack.enter_context(_open_in(args.input))
        sink: IO[bytes] = sys.stdout.buffer if not args.output else stack.enter_context(_open_out(args.output))
        replayer = Replayer()
        encode = msgspec.json.Encoder().encode
        started = time.perf_counter()
        for number, raw in enumerate(source, start=1):
            for event in replayer.feed(raw, number):
                sink.write(encode(event) + b"\n")
            if not args.quiet and number % PROGRESS_EVERY == 0:
                print(f"replay: {number:,} lines, {replayer.events:,} events", file=sys.stderr, flush=True)
        sink.flush()
    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(f"replay: {replayer.lines:,} commands -> {replayer.events:,} events "
              f"({replayer.trades:,} trades, {replayer.rejected:,} rejected) in {elapsed:.2f} s",
              file=sys.stderr)
    return 0


def _open_in(path: str) -> IO[bytes]:
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise CliError(f"cannot read input {path}: {exc.strerror}") from exc


def _open_out(path: str) -> IO[bytes]:
    try:
        return Path(path).open("wb")
    except OSError as exc:
        raise CliError(f"cannot write output {path}: {exc.strerror}") from exc
