"""Simulation speed: one simulated hour of two symbols, each with one market maker and 50 noise traders.

Prints one JSON line: simulated seconds per wall second, journaled commands/s and venue events/s (wall),
trades. Progress goes to stderr. Target: one simulated hour in under 60 s of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import msgspec

from tradesim.services.agents.service import AgentsConfig, SymbolAgents
from tradesim.services.config import load_config
from tradesim.services.simulation import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3600.0, help="simulated seconds (default 3600)")
    parser.add_argument("--noise", type=int, default=50, help="noise traders per symbol (default 50)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    config = load_config(env={})
    symbols = ["AAPL.SIM", "MSFT.SIM"]
    config = msgspec.structs.replace(config, agents=AgentsConfig(seed=args.seed, symbols=[
        SymbolAgents(symbol=s, market_makers=1, noise_traders=args.noise) for s in symbols]))
    summary = simulate(config, args.duration, seed=args.seed,
                       progress=lambda m: print(f"bench/simulate: {m}", file=sys.stderr, flush=True),
                       progress_every_s=max(args.duration / 20, 1.0))
    print(json.dumps({
        "bench": "simulate",
        "symbols": len(symbols),
        "noise_traders_per_symbol": args.noise,
        "simulated_s": summary.simulated_s,
        "wall_s": round(summary.wall_s, 2),
        "simulated_s_per_wall_s": round(summary.speedup, 1),
        "commands": summary.journaled_commands,
        "commands_per_wall_s": round(summary.journaled_commands / summary.wall_s),
        "events": summary.events,
        "events_per_wall_s": round(summary.events / summary.wall_s),
        "trades": summary.trades,
        "target_wall_s_per_simulated_hour": 60,
        "wall_s_per_simulated_hour": round(summary.wall_s * 3600 / summary.simulated_s, 1),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
