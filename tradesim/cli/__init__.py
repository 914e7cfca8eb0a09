"""The `tradesim` command: one module per sub-command, each exposing `register(subparsers)`.

A sub-command's handler returns the process exit code; a `CliError` prints its message to stderr
and exits non-zero, so bad input never ends in a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class CliError(Exception):
    """A user-facing failure: its message is printed as is, the exit code is `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    from tradesim.cli import audit, cluster, replay, run, simulate, users

    parser = argparse.ArgumentParser(prog="tradesim", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, simulate, replay, audit, users, cluster):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"tradesim: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
