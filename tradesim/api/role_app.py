"""The HTTP face of a non-API role process: `/healthz`, `/readyz` and `/metrics`, for supervisors, load
balancers and Prometheus (the `api` role serves the whole API instead, these paths included)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get

from tradesim.api.metrics import _escape, _num
from tradesim.cluster.registry import State
from tradesim.services.roles.processes import RoleProcess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get("/healthz", sync_to_thread=False)
def healthz(request: Request[Any, Any, Any]) -> dict[str, str]:
    """200 while the process runs (its event loop answers)."""
    process: RoleProcess = request.app.state["process"]
    return {"status": "ok", "role": process.role, "instance_id": process.instance_id}


@get("/readyz", sync_to_thread=False)
def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """200 once the role's service started and the bus is connected (a STANDBY is ready: the body says so);
    503 before that, after a failure, or while the bus is disconnected."""
    process: RoleProcess = request.app.state["process"]
    readiness = process.readiness()
    body = msgspec.to_builtins(readiness)
    if process.failure:
        body["failure"] = process.failure
    return Response(body, status_code=200 if readiness.ready else 503)


@get("/metrics", media_type=CONTENT_TYPE, sync_to_thread=False)
def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    """The role's figures as Prometheus gauges `tradesim_<role>_<figure>{instance="…"}`."""
    process: RoleProcess = request.app.state["process"]
    return Response(exposition(process, request.app.state["started"]), media_type=CONTENT_TYPE)


def exposition(process: RoleProcess, started: float) -> str:
    """Text format 0.0.4: up, active, uptime, then one gauge per numeric figure of `process.metrics()`."""
    label = f'{{role="{_escape(process.role)}",instance="{_escape(process.instance_id)}"}}'
    figures: list[tuple[str, str, float]] = [
        ("tradesim_role_ready", "1 when /readyz answers 200", float(process.readiness().ready)),
        ("tradesim_role_active", "1 when ACTIVE, 0 when STANDBY", float(process.state() is State.ACTIVE)),
        ("tradesim_role_uptime_seconds", "seconds since the process started", time.monotonic() - started),
    ]
    for name, value in sorted(process.metrics().items()):
        if isinstance(value, bool | int | float):
            figures.append((f"tradesim_{process.role}_{name}", f"{process.role} {name.replace('_', ' ')}",
                            float(value)))
    out: list[str] = []
    for name, help_text, value in figures:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{label} {_num(value)}"]
    return "\n".join(out) + "\n"


def create_role_app(process: RoleProcess) -> Litestar:
    """The app for one role process; it only reads `process`, which the caller starts and stops."""
    return Litestar(route_handlers=[healthz, readyz, metrics], logging_config=None,
                    state={"process": process, "started": time.monotonic()})  # type: ignore[arg-type]
