"""The manifests' own commands, run for real: the venue and a risk monitor start from their Deployment's
arguments and the chart's configuration (on a private nats-server and a fresh PostgreSQL database instead of
the cluster's services), answer the startup, liveness and readiness probes exactly as the manifests declare
them, and stop cleanly on the SIGTERM a pod gets."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.support import ROOT, container_argv, load_render
from tests.support.nats_server import start_nats_server
from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.bus.natsserver import LocalNatsServer, free_port

render = load_render()
TIMEOUT = 90.0  # generous: Python processes starting on a shared, loaded machine


@pytest.fixture
def nats() -> Iterator[LocalNatsServer]:
    server = start_nats_server()
    try:
        yield server
    finally:
        server.stop()


def local_argv(deployment: dict[str, Any], secrets: dict[str, dict[str, str]], *, bus: str, db: str,
               config: Path, port: int, data_dir: Path) -> list[str]:
    """The container's arguments with only the cluster's addresses swapped for this machine's."""
    argv = container_argv(deployment, secrets)
    swaps = {"--bus": bus, "--db": db, "--config": str(config), "--port": str(port), "--data-dir": str(data_dir),
             "--host": "127.0.0.1"}
    for option, value in swaps.items():
        argv[argv.index(option) + 1] = value
    return argv


def test_manifest_commands_serve_their_probes(tmp_path: Path, nats: LocalNatsServer, pg_url: str) -> None:  # noqa: F811
    objs = [d.obj for d in render.render_chart()]
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objs if o["kind"] == "Secret"}
    config = tmp_path / "tradesim.toml"
    config.write_text(next(o for o in objs if o["kind"] == "ConfigMap")["data"]["tradesim.toml"])
    deployments = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs if o["kind"] == "Deployment"}
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for role in ("venue", "risk"):
            port = free_port()
            argv = local_argv(deployments[role], secrets, bus=nats.url, db=pg_url, config=config, port=port,
                              data_dir=tmp_path / role)
            log = tmp_path / f"{role}.stderr"
            with log.open("wb") as err:
                proc = subprocess.Popen([sys.executable, "-m", "tradesim", *argv], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=err)
            procs.append((role, proc, log))
            container = deployments[role]["spec"]["template"]["spec"]["containers"][0]
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert named[get["port"]] == int(container["args"][container["args"].index("--port") + 1])
                wait_ok(proc, log, f"http://127.0.0.1:{port}{get['path']}")
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    finally:
        codes = {}
        for role, proc, _ in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                codes[role] = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[role] = proc.wait(10)
    for role, _, log in procs:
        assert codes[role] == 0, f"{role} did not stop cleanly on SIGTERM:\n{log.read_text(errors='replace')}"


def wait_ok(proc: subprocess.Popen[bytes], log: Path, url: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before {url} answered:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} not 200 within {TIMEOUT} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
