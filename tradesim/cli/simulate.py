"""`tradesim simulate`: the whole system with its agents on simulated time, then a summary."""

from __future__ import annotations

import argparse
import re
import sys

import msgspec

from tradesim.cli import CliError

_UNITS = {"h": 3600, "m": 60, "s": 1}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("simulate", help="run the system with its agents on simulated time",
                            description="Runs venue, OMS, risk, market data, market makers and noise traders "
                                        "on a simulated clock as fast as it can, then prints a summary. "
                                        "The same config and seed give the same result.")
    parser.add_argument("--config", help="TOML configuration (default: the built-in demo venue and agents)")
    parser.add_argument("--duration", default="1h", help="simulated time, e.g. 90s, 15m, 1h, 1h30m (default 1h)")
    parser.add_argument("--seed", type=int, help="seed for the agents and the price process")
    parser.add_argument("--data-dir", help="keep the journal here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run)


def parse_duration(text: str) -> float:
    """'1h30m' → 5400.0; a bare number is seconds."""
    try:
        seconds = float(text)
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
        if not parts or not any(parts.groups()):
            raise CliError(f"bad --duration {text!r}: use e.g. 90s, 15m, 1h or 1h30m") from None
        seconds = sum(float(v) * u for v, u in zip(parts.groups(), _UNITS.values(), strict=True) if v)
    if seconds <= 0:
        raise CliError(f"--duration must be positive, got {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    from tradesim.services.config import ConfigError, load_config
    from tradesim.services.simulation import simulate

    duration = parse_duration(args.duration)
    try:
        config = load_config(args.config).with_settings(data_dir=args.data_dir)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    if not config.agents.symbols:
        raise CliError("the configuration lists no agents ([[agents.symbols]]): nobody would trade")

    def say(message: str) -> None:
        if not args.quiet:
            print(f"simulate: {message}", file=sys.stderr, flush=True)

    summary = simulate(config, duration, seed=args.seed, progress=say)
    if args.json:
        print(msgspec.json.encode(summary).decode())
        return 0
    print(f"simulated {duration:,.0f} s in {summary.wall_s:,.1f} s wall ({summary.speedup:,.0f}x), "
          f"seed {summary.seed}: {summary.journaled_commands:,} commands, {summary.events:,} events, "
          f"{summary.trades:,} trades, volume {summary.volume:,}")
    print(f"\n{'symbol':<14}{'trades':>9}{'volume':>11}{'mean spread':>13}{'last':>12}")
    for s in summary.symbols:
        spread = "-" if s.mean_spread is None else str(s.mean_spread)
        print(f"{s.symbol:<14}{s.trades:>9,}{s.volume:>11,}{spread:>13}{s.last if s.last is not None else '-':>12}")
    print(f"\n{'agent':<24}{'position':>18}{'realized':>14}{'unrealized':>14}{'fees':>11}{'net P&L':>14}")
    for a in summary.agents:
        position = ", ".join(f"{q:+}" for q in a.position.values()) or "flat"
        print(f"{a.account:<24}{position:>18}{a.realized_pnl:>14,.2f}{a.unrealized_pnl:>14,.2f}"
              f"{a.fees:>11,.2f}{a.net_pnl:>14,.2f}")
    return 0
