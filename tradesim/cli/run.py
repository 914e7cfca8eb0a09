"""`tradesim run`: the whole system in one process — bus, journal, venue, OMS, accounts, risk monitor,
and the HTTP API (REST, OpenAPI) served by uvicorn on the same event loop.

SIGINT or SIGTERM stops it cleanly: no new orders, in-flight ones drained, a final snapshot; the next
start continues where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from tradesim.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run the trading system (embedded: every service in one process)",
                            description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", help="TOML configuration file (default: the built-in demo venue)")
    parser.add_argument("--host", help="HTTP API host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP API port (default 8000)")
    parser.add_argument("--data-dir", help="where the journal and state live (default ./data)")
    parser.add_argument("--bus", help="memory:// (default) or nats://host:port")
    parser.add_argument("--db", help="PostgreSQL URL for the journal (default: SQLite under the data dir)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tradesim.services.config import ConfigError, load_config

    try:
        config = load_config(args.config).with_settings(
            host=args.host, port=args.port, data_dir=args.data_dir, bus=args.bus, db=args.db)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    return asyncio.run(_serve(config))


async def _serve(config: object) -> int:
    import uvicorn

    from tradesim.api.app import create_app
    from tradesim.api.metrics import Metrics, instrument_system
    from tradesim.api.server import EmbeddedServer
    from tradesim.bus import BusError
    from tradesim.logging import configure_logging
    from tradesim.services.config import SystemConfig
    from tradesim.services.system import System
    from tradesim.store import JournalError
    from tradesim.store.users import open_users

    assert isinstance(config, SystemConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def say(message: str) -> None:
        print(f"tradesim: {message}", file=sys.stderr, flush=True)

    settings = config.settings
    # JSON logs (structlog, with correlation ids) to a file; stderr keeps these progress lines.
    log_file = os.environ.get("TRADESIM_LOG_FILE") or str(Path(settings.data_dir) / "tradesim.log")
    configure_logging(log_file)
    system = System(config, progress=say)
    try:
        await system.start()
    except (BusError, JournalError, OSError) as exc:
        await system.stop()
        raise CliError(f"cannot start: {exc}") from exc
    users = await open_users(settings.db or settings.data_dir)
    metrics = Metrics()
    instrument_system(system, metrics)
    app = create_app(system.bus, config, users, metrics=metrics)
    server = EmbeddedServer(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    api = asyncio.create_task(server.serve(), name="api")
    say(f"running (bus {settings.bus}, journal {settings.journal_target}); "
        f"API on http://{settings.host}:{settings.port}/api/v1 (docs: /schema); Ctrl-C stops")
    try:
        done, _ = await asyncio.wait([api, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if api in done and api.exception() is not None:
            raise CliError(f"the API stopped: {api.exception()}")
        if api in done and not server.started:
            raise CliError(f"the API could not listen on {settings.host}:{settings.port} (port in use?)")
    finally:
        say("stopping: draining in-flight orders and writing a snapshot")
        server.should_exit = True
        await asyncio.gather(api, return_exceptions=True)
        await system.stop()
        await users.close()
        say("stopped")
    return 0

