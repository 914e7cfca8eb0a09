"""`tradesim run --role …` as real processes on a private nats-server and a fresh PostgreSQL database.

A topology of venue + oms + accounts + risk + api takes an order over HTTP end to end; the registry
(`tradesim cluster status`, `GET /api/v1/system/services`) lists every instance; a risk monitor started
after the trades catches up to the same positions; market data is single-active; non-api roles answer
/healthz, /readyz and /metrics; bad command lines fail with a clear message.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.nats_server import start_nats_server
from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.bus.natsserver import LocalNatsServer, free_port
from tradesim.cli import main

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # generous: five Python processes start at once on a shared, loaded machine
QUIET = """\
[agents]
seed = 0

[marketdata]
interval = 3600.0
"""


class Role:
    """One `tradesim run --role` child process, its HTTP port and its stderr log."""

    def __init__(self, base: Path, role: str, instance_id: str, bus: str, db: str, config: Path) -> None:
        self.role = role
        self.instance_id = instance_id
        self.port = free_port()
        self.data_dir = base / f"data-{instance_id}"
        self.log = base / f"{instance_id}.stderr"
        argv = [sys.executable, "-m", "tradesim", "run", "--role", role, "--instance-id", instance_id,
                "--bus", bus, "--db", db, "--config", str(config), "--port", str(self.port),
                "--data-dir", str(self.data_dir)]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5.0, **kwargs)

    def wait_ready(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Polls /readyz until 200; fails with the process's stderr if it exits or never gets ready."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.instance_id} exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                r = self.get("/readyz")
                if r.status_code == 200:
                    body: dict[str, Any] = r.json()
                    return body
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.instance_id} not ready within {timeout} s:\n{self.stderr()}")
            time.sleep(0.1)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class Cluster:
    def __init__(self, base: Path, bus: str, db: str) -> None:
        self.base = base
        self.bus = bus
        self.db = db
        self.config = base / "quiet.toml"
        self.config.write_text(QUIET)
        self.roles: list[Role] = []

    def start(self, role: str, instance_id: str) -> Role:
        r = Role(self.base, role, instance_id, self.bus, self.db, self.config)
        self.roles.append(r)
        return r

    def stop_all(self) -> None:
        for r in reversed(self.roles):
            r.terminate()


@pytest.fixture
def nats() -> Iterator[LocalNatsServer]:
    """A private server per test: the topologies' streams, elections and registry must not meet."""
    server = start_nats_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, nats: LocalNatsServer, pg_url: str) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, nats.url, pg_url)
    try:
        yield c
    finally:
        c.stop_all()


def eventually(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Calls `check` until it returns something truthy (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"{what}: not true within {timeout} s (last: {last!r})")


def cli(*argv: str) -> tuple[int, str]:
    """Runs the `tradesim` command in a child process: (exit code, stdout + stderr)."""
    done = subprocess.run([sys.executable, "-m", "tradesim", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    return done.returncode, done.stdout + done.stderr


def services(api: Role, token: str) -> dict[str, dict[str, Any]]:
    r = api.get("/api/v1/system/services", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return {i["instance_id"]: i for i in r.json()["instances"]}


def test_topology_takes_an_order_over_http_and_lists_every_instance(cluster: Cluster) -> None:
    venue = cluster.start("venue", "venue-1")
    venue.wait_ready()  # the others ask it for books and instruments at start
    oms = cluster.start("oms", "oms-1")
    accounts = cluster.start("accounts", "accounts-1")
    risk = cluster.start("risk", "risk-1")
    api = cluster.start("api", "api-1")
    for r in (oms, accounts, risk, api):
        r.wait_ready()

    # /healthz, /readyz and /metrics of a role that is not the API
    health = accounts.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "role": "accounts",
                                                           "instance_id": "accounts-1"}
    ready = oms.get("/readyz").json()
    assert ready["ready"] is True and ready["state"] == "ACTIVE" and ready["connected"] is True
    metrics = venue.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'tradesim_role_ready{role="venue",instance="venue-1"} 1' in metrics.text
    assert 'tradesim_venue_seq{role="venue",instance="venue-1"}' in metrics.text

    for user in ("alice", "bob"):
        code, out = cli("user", "add", user, "--role", "trader", "--password", f"{user}-pass-word",
                        "--db", cluster.db)
        assert code == 0, out
    tokens = {}
    for user in ("alice", "bob"):
        code, out = cli("token", "create", user, "--db", cluster.db, "--data-dir", str(api.data_dir))
        assert code == 0, out
        tokens[user] = out.strip().splitlines()[-1]

    def post(user: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(api.url + "/api/v1/orders", json=body, timeout=10.0,
                          headers={"Authorization": f"Bearer {tokens[user]}"})

    resp = post("bob", {"symbol": "AAPL.SIM", "side": "sell", "type": "limit", "tif": "GTC", "price": "190.00",
                        "qty": 10, "client_order_id": "b-1"})
    assert resp.status_code == 201 and resp.json()["status"] == "accepted", resp.text
    resp = post("alice", {"symbol": "AAPL.SIM", "side": "buy", "type": "market", "qty": 10, "client_order_id": "a-1"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "filled" and resp.json()["filled_qty"] == 10

    def alice_long_10() -> bool:
        got = api.get("/api/v1/positions", headers={"Authorization": f"Bearer {tokens['alice']}"})
        assert got.status_code == 200, got.text
        return [(p["symbol"], p["qty"]) for p in got.json()["positions"]] == [("AAPL.SIM", 10)]

    eventually(alice_long_10, "alice's position of 10 AAPL.SIM")

    # the registry: every instance, ACTIVE and LIVE, with where it runs and its live metrics
    expected = {r.instance_id: r for r in (venue, oms, accounts, risk, api)}

    def all_listed() -> dict[str, dict[str, Any]] | None:
        got = services(api, tokens["alice"])
        return got if set(got) == set(expected) else None

    listed = eventually(all_listed, "every instance in /api/v1/system/services")
    for iid, entry in listed.items():
        role = expected[iid]
        assert (entry["service"], entry["role"], entry["state"], entry["health"]) == (
            role.role, role.role, "ACTIVE", "LIVE"), entry
        assert entry["pid"] == role.proc.pid and entry["port"] == role.port and entry["host"]
    eventually(lambda: services(api, tokens["alice"]).get("risk-1", {}).get("metrics", {}).get("positions") == 2,
               "the risk monitor's positions (alice long, bob short) in its registry metrics")
    assert api.get("/api/v1/system/services").status_code == 401  # auth like the other system endpoints

    code, out = cli("cluster", "status", "--bus", cluster.bus, "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert {row["info"]["instance_id"]: row["info"]["state"] for row in rows} == {
        iid: "ACTIVE" for iid in expected}

    # a risk monitor started after the trades catches up to the same positions as the first one
    late = cluster.start("risk", "risk-2")
    late.wait_ready()

    def same_state() -> bool:
        first, second = risk.get("/readyz").json()["detail"], late.get("/readyz").json()["detail"]
        assert second["trades_applied"] == 1 and second["positions"] == 2, second
        return bool(first["state_hash"] == second["state_hash"] and first["last_seq"] == second["last_seq"])

    eventually(same_state, "the late risk monitor holding the first one's state")

    # graceful stop: exit 0, the instance leaves the registry at once
    assert late.terminate() == 0, late.stderr()
    assert "stopped" in late.stderr()
    eventually(lambda: "risk-2" not in services(api, tokens["alice"]), "risk-2 gone from the registry")


def test_market_data_is_single_active_and_a_standby_takes_over(cluster: Cluster) -> None:
    first = cluster.start("marketdata", "md-1")
    assert first.wait_ready()["state"] == "ACTIVE"
    second = cluster.start("marketdata", "md-2")
    ready = second.wait_ready()
    assert ready["ready"] is True and ready["state"] == "STANDBY"  # a standby is ready: it can take over
    assert 'tradesim_role_active{role="marketdata",instance="md-2"} 0' in second.get("/metrics").text

    def states() -> dict[str, str]:
        code, out = cli("cluster", "status", "--bus", cluster.bus, "--json", "--service", "marketdata")
        assert code == 0, out
        return {row["info"]["instance_id"]: row["info"]["state"] for row in json.loads(out)}

    eventually(lambda: states() == {"md-1": "ACTIVE", "md-2": "STANDBY"}, "one ACTIVE, one STANDBY")
    assert first.terminate() == 0, first.stderr()
    eventually(lambda: second.get("/readyz").json()["state"] == "ACTIVE", "the standby taking over", timeout=10)
    assert "md-2 is now ACTIVE for marketdata" in second.stderr()


@pytest.mark.parametrize(("argv", "message"), [
    (("--role", "oms", "--bus", "memory://"), "needs a shared bus: --bus nats://"),
    (("--role", "accounts"), "needs a shared bus: --bus nats://"),
    (("--role", "venue", "--bus", "nats://127.0.0.1:4222"), "role venue needs --db postgresql://"),
    (("--role", "api", "--bus", "nats://127.0.0.1:4222", "--db", "/tmp/x"), "role api needs --db postgresql://"),
    (("--role", "oms", "--bus", "nats://127.0.0.1:4222", "--db", "postgresql://h/d", "--instance-id", "a.b"),
     "invalid --instance-id 'a.b'"),
    (("--instance-id", "oms-1"), "--instance-id names one role's instance: give --role too"),
])
def test_bad_role_command_lines_exit_non_zero_with_a_message(
        argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADESIM_BUS", raising=False)
    monkeypatch.delenv("TRADESIM_DB", raising=False)
    assert main(["run", *argv]) != 0
    assert message in capsys.readouterr().err


def test_unknown_role_and_unreachable_bus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--role", "matcher", "--bus", "nats://127.0.0.1:4222"])
    assert exit_info.value.code != 0
    assert "invalid choice: 'matcher'" in capsys.readouterr().err
    port = free_port()  # nobody listens there
    code = main(["run", "--role", "algos", "--bus", f"nats://127.0.0.1:{port}", "--data-dir", str(tmp_path),
                 "--port", str(free_port())])
    assert code != 0
    assert f"cannot start role algos: cannot connect to NATS at nats://127.0.0.1:{port}" in capsys.readouterr().err


def test_signals_role_refuses_a_config_without_signals(tmp_path: Path, nats: LocalNatsServer) -> None:
    config = tmp_path / "off.toml"
    config.write_text("[signals]\nenabled = false\n")
    code, out = cli("run", "--role", "signals", "--bus", nats.url, "--config", str(config), "--port",
                    str(free_port()), "--data-dir", str(tmp_path / "d"))
    assert code != 0 and "[signals] enabled = false" in out, out
    assert "Traceback" not in out

