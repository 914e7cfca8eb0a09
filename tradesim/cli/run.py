"""`tradesim run`: the whole system in one process — bus, journal, venue, OMS, accounts, risk monitor,
and the HTTP API (REST, OpenAPI) served by uvicorn on the same event loop.

With `--role ROLE` it runs one service of the distributed mode instead, over a NATS bus and PostgreSQL:
registered in the service registry, with `/healthz`, `/readyz` and `/metrics` on its HTTP port (the
`api` role serves the whole API there). See docs/running.md.

SIGINT or SIGTERM stops it cleanly: no new orders, in-flight ones drained, a final snapshot (a leader
releases its election at once); the next start continues where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tradesim.cli import CliError
from tradesim.services.roles import ROLES

if TYPE_CHECKING:
    from tradesim.services.config import SystemConfig


HTTP_PROTOCOL = "httptools"
"""uvicorn's HTTP/1.1 implementation for the API: httptools (C, llhttp) cost an order POST ~20% less server
CPU than h11 (pure Python) in bench/api.py. Named, not left to uvicorn's "auto", so it cannot fall back silently."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run the trading system (embedded: every service in one process), "
                                        "or one role of the distributed mode",
                            description=" ".join(__doc__.split("\n\n")[0].split()) if __doc__ else None)
    parser.add_argument("--role", choices=ROLES, metavar="ROLE",
                        help=f"run only this service ({', '.join(ROLES)}); needs --bus nats://… "
                             "(and --db postgresql://… for venue, oms, marketdata, api)")
    parser.add_argument("--instance-id", help="this instance's name in the registry and elections "
                                              "(default {role}-{hostname}-{pid}); needs --role")
    parser.add_argument("--config", help="TOML configuration file (default: the built-in demo venue)")
    parser.add_argument("--host", help="HTTP host (default 127.0.0.1): the API, or a role's health and metrics")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--data-dir", help="where the journal and state live (default ./data)")
    parser.add_argument("--bus", help="memory:// (default) or nats://host:port")
    parser.add_argument("--db", help="PostgreSQL URL for the journal and stores (default: SQLite under the data dir)")
    parser.add_argument("--shard", help="with --role venue: the venue shard this instance runs, one of the config's "
                                        "[[shards]] (needed when there are several)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tradesim.services.config import ConfigError, load_config

    try:
        config = load_config(args.config).with_settings(
            host=args.host, port=args.port, data_dir=args.data_dir, bus=args.bus, db=args.db, shard=args.shard)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    if args.role is None:
        if args.instance_id is not None:
            raise CliError("--instance-id names one role's instance: give --role too")
        if args.shard is not None:
            raise CliError("--shard names the venue shard of a venue instance: give --role venue too")
        return asyncio.run(_serve(config))
    from tradesim.services.roles import RoleError, check_instance_id, check_role, default_instance_id

    if args.shard is not None and args.role != "venue":
        raise CliError(f"--shard is for --role venue (a {args.role} instance serves every shard)")
    try:
        check_role(args.role, config.settings.bus, config.settings.db)
        instance_id = (check_instance_id(args.instance_id) if args.instance_id is not None
                       else default_instance_id(args.role))
    except RoleError as exc:
        raise CliError(str(exc)) from exc
    return asyncio.run(_serve_role(config, args.role, instance_id))


async def _serve(config: object) -> int:
    import uvicorn

    from tradesim.api.app import create_app
    from tradesim.api.auth import token_secret
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
    app = create_app(system.bus, config, users, metrics=metrics, secret=await token_secret(config, users))
    server = EmbeddedServer(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           http=HTTP_PROTOCOL))
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



async def _serve_role(config: SystemConfig, role: str, instance_id: str) -> int:
    """One role: start its service, serve its HTTP, register it, and stop it all on a signal or a failure."""
    import uvicorn
    from litestar import Litestar

    from tradesim.api.role import ApiRole
    from tradesim.api.role_app import create_role_app
    from tradesim.api.server import EmbeddedServer
    from tradesim.bus import BusError, open_bus
    from tradesim.cluster.registry import Registration
    from tradesim.logging import configure_logging
    from tradesim.services.marketdata.store import MarketDataStoreError
    from tradesim.services.roles import RoleError
    from tradesim.services.roles.processes import RoleProcess, create_role
    from tradesim.store import JournalError
    from tradesim.store.users import UsersError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def say(message: str) -> None:
        print(f"tradesim: {message}", file=sys.stderr, flush=True)

    settings = config.settings
    log_file = os.environ.get("TRADESIM_LOG_FILE") or str(Path(settings.data_dir) / f"tradesim-{instance_id}.log")
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    configure_logging(log_file)
    try:
        bus = await open_bus(settings.bus)
    except BusError as exc:
        raise CliError(f"cannot start role {role}: {exc}") from exc
    process: RoleProcess | None = None
    registration: Registration | None = None
    server: EmbeddedServer | None = None
    http: asyncio.Task[None] | None = None

    async def serve_http(app: Litestar) -> tuple[EmbeddedServer, asyncio.Task[None]]:
        """Starts uvicorn and returns once it listens (CliError if it cannot)."""
        srv = EmbeddedServer(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                            http=HTTP_PROTOCOL))
        task = asyncio.create_task(srv.serve(), name="http")
        while not srv.started and not task.done():
            await asyncio.sleep(0.02)
        if task.done():
            failure = task.exception()
            raise CliError(f"cannot listen on {settings.host}:{settings.port}"
                           + (f": {failure}" if failure else " (port in use?)"))
        return srv, task

    try:
        try:
            process = ApiRole(config, bus, instance_id, progress=say) if role == "api" else create_role(
                role, config, bus, instance_id, progress=say)
            if not isinstance(process, ApiRole):  # health answers (503 until ready) while the service starts
                server, http = await serve_http(create_role_app(process))
            await process.start()
        except RoleError as exc:
            raise CliError(str(exc)) from exc
        except (BusError, JournalError, MarketDataStoreError, UsersError, OSError) as exc:
            raise CliError(f"cannot start role {role}: {exc}") from exc
        if isinstance(process, ApiRole):
            assert process.app is not None
            server, http = await serve_http(process.app)
        assert http is not None
        registration = Registration(bus, process.service_name, instance_id, role=role, state=process.state,
                                    metrics=process.metrics, port=settings.port)
        await registration.start()
        what = "API on" if role == "api" else "health and metrics on"
        say(f"role {role} running as {instance_id} ({process.state().value}; bus {settings.bus}); "
            f"{what} http://{settings.host}:{settings.port}; Ctrl-C stops")
        waits = [http, asyncio.create_task(stop.wait()), asyncio.create_task(process.failed.wait())]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits[1:]:
                task.cancel()
        if http in done:
            raise CliError(f"the HTTP server stopped: {http.exception() or 'no reason given'}", code=1)
        if process.failed.is_set():
            raise CliError(f"role {role} failed: {process.failure}", code=1)
    finally:
        say(f"stopping {instance_id}")
        if registration is not None:
            await registration.stop()
        if process is not None:
            await process.stop()
        if server is not None and http is not None:
            server.should_exit = True
            await asyncio.gather(http, return_exceptions=True)
        await bus.close()
        say("stopped")
    return 0
