"""The local cluster supervisor and `tradesim cluster up/down/kill`: real nats-server, real PostgreSQL,
real `tradesim run --role` processes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import create_database, drop_database, server_url, with_database
from tradesim.bus import open_bus
from tradesim.cli import main
from tradesim.cluster.local import (
    DEFAULT_TOPOLOGY,
    ROLES,
    SINGLE_ACTIVE,
    STATE_FILE,
    ClusterError,
    LocalCluster,
    ensure_database,
    free_port,
    is_running,
    parse_topology,
    write_quiet_config,
)
from tradesim.cluster.registry import Health, State, list_instances

WAIT = 30.0


@pytest.fixture
def pg_db() -> Iterator[str]:
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)


def test_roles_match_the_run_command() -> None:
    from tradesim.services.roles import ROLES as RUN_ROLES
    from tradesim.services.roles import SINGLE_ACTIVE as RUN_SINGLE_ACTIVE

    assert tuple(ROLES) == tuple(RUN_ROLES)
    assert set(SINGLE_ACTIVE) == set(RUN_SINGLE_ACTIVE)


def test_parse_topology() -> None:
    assert parse_topology(None) == dict(DEFAULT_TOPOLOGY)
    assert sum(DEFAULT_TOPOLOGY.values()) == 13  # seed 01: 1 venue, 3 oms, 1 accounts, 2 risk, 2 md, 3 algos, 1 api
    t = parse_topology("oms=5, risk=0,agents=1")
    assert t["oms"] == 5 and t["risk"] == 0 and t["agents"] == 1 and t["venue"] == 1
    for text, message in [("oms", "is not ROLE=COUNT"), ("gateway=1", "unknown role 'gateway'"),
                          ("oms=three", "must be an integer"), ("oms=-1", "between 0 and 32"),
                          ("oms=99", "between 0 and 32")]:
        with pytest.raises(ClusterError, match=message):
            parse_topology(text)
    with pytest.raises(ClusterError, match="no instances"):
        parse_topology(",".join(f"{r}=0" for r in ROLES))


async def test_ensure_database_creates_a_missing_one() -> None:
    import asyncpg

    name = "tradesim_test_" + secrets.token_hex(6)
    url = with_database(server_url(), name)
    try:
        assert await ensure_database(url) is True
        conn = await asyncpg.connect(url)
        await conn.close()
        assert await ensure_database(url) is False
    finally:
        await asyncio.to_thread(drop_database, name)
    with pytest.raises(ClusterError, match="not a database name"):
        await ensure_database(with_database(server_url(), 'x"; DROP'))
    with pytest.raises(ClusterError, match="must be a postgresql:// URL"):
        await ensure_database("mysql://127.0.0.1/x")
    with pytest.raises(ClusterError, match="cannot reach PostgreSQL"):
        await ensure_database("postgresql://127.0.0.1:1/tradesim")


async def test_private_nats_restart_keeps_jetstream_on_disk(tmp_path: Path, pg_db: str) -> None:
    cluster = LocalCluster.create(tmp_path / "c", db=pg_db)
    nats = cluster.start_nats()
    try:
        url = cluster.nats_url
        assert url == f"nats://127.0.0.1:{nats.port}"
        assert json.loads((tmp_path / "c" / STATE_FILE).read_text())["nats_url"] == url
        bus = await open_bus(url)
        kv = await bus.kv("local-test")
        await kv.put("k", b"before restart")
        await bus.close()
        report = await cluster.stop_nats()
        assert report.outcome == "stopped" and not is_running(nats)
        again = cluster.start_nats()
        assert again.port == nats.port and again.pid != nats.pid
        bus = await open_bus(url)
        entry = await (await bus.kv("local-test")).get("k")
        assert entry is not None and entry.value == b"before restart"
        await bus.close()
    finally:
        reports = await cluster.down(grace=5)
    assert [r.name for r in reports] == ["nats-server"] and not (tmp_path / "c" / STATE_FILE).exists()


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = str(tmp_path / "none")
    cases = [
        (["cluster", "down", "--dir", empty], "no cluster in"),
        (["cluster", "kill", "oms", "--dir", empty], "no cluster in"),
        (["cluster", "status", "--dir", empty], "no local cluster in"),
        (["cluster", "up", "--dir", empty, "--topology", "gateway=2"], "unknown role 'gateway'"),
        (["cluster", "up", "--dir", empty, "--config", str(tmp_path / "missing.toml")], "no such file"),
        (["cluster", "up", "--dir", empty, "--nats", "http://x"], "must be a nats:// URL"),
        (["cluster", "up", "--dir", empty, "--api-port", "70000"], "between 1 and 65535"),
        (["cluster", "down", "--dir", empty, "--grace", "-1"], "must not be negative"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit):  # argparse: an unknown signal name
        main(["cluster", "kill", "oms", "--signal", "HUP", "--dir", empty])


def test_cli_up_unreachable_nats_leaves_nothing(tmp_path: Path, pg_db: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    code = main(["cluster", "up", "--dir", str(d), "--nats", f"nats://127.0.0.1:{free_port()}", "--db", pg_db])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach NATS" in err and "--start-nats" in err and "Traceback" not in err
    assert not (d / STATE_FILE).exists()


def test_up_reports_an_instance_that_dies_at_start_and_cleans_up(tmp_path: Path, pg_db: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration every role refuses: `up` names the dead instance, shows its log and stops the rest."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[system]\nsnapshot_every = \"often\"\n")
    d = tmp_path / "c"
    code = main(["cluster", "up", "--start-nats", "--dir", str(d), "--db", pg_db, "--config", str(bad),
                 "--topology", ",".join(f"{r}=0" for r in ROLES if r != "venue"), "--timeout", "60"])
    assert code == 2
    err = capsys.readouterr().err
    assert "venue-1" in err and "while starting" in err and "snapshot_every" in err, err
    assert "nats-server" in err and "stopped" in err  # the private server was stopped again
    assert not (d / STATE_FILE).exists()


async def _wait_for(predicate, timeout: float = WAIT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.mark.drill
async def test_up_status_kill_down_on_seed_topology(tmp_path: Path, pg_db: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The real topology of seed 01 through the CLI, each command in its own event loop as from a shell."""
    d = str(tmp_path / "cluster")
    config = write_quiet_config(tmp_path / "quiet.toml")
    api_port = free_port()
    code = await asyncio.to_thread(main, ["cluster", "up", "--start-nats", "--dir", d, "--db", pg_db,
                                          "--config", str(config), "--api-port", str(api_port)])
    out, err = capsys.readouterr()
    try:
        assert code == 0, err
        state = json.loads((Path(d) / STATE_FILE).read_text())
        nats_url = state["nats_url"]
        assert f"nats   {nats_url}" in out and f"api    http://127.0.0.1:{api_port}/api/v1" in out
        assert "13/13 live" not in err  # the venue comes up first, then the 12 others
        assert "1/1 live: venue-1" in err and "12/12 live" in err
        assert "leaders elected and serving: venue, oms, marketdata" in err
        names = sorted(p["name"] for p in state["processes"])
        assert names == sorted([f"{role}-{n + 1}" for role, count in DEFAULT_TOPOLOGY.items()
                                for n in range(count)])

        assert await asyncio.to_thread(main, ["cluster", "status", "--dir", d, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert sorted(r["info"]["instance_id"] for r in rows) == names
        assert all(r["health"] == "LIVE" for r in rows)
        oms = {r["info"]["instance_id"]: r["info"]["state"] for r in rows if r["info"]["role"] == "oms"}
        assert sorted(oms.values()) == ["ACTIVE", "STANDBY", "STANDBY"]
        old_leader = next(i for i, s in oms.items() if s == "ACTIVE")

        assert await asyncio.to_thread(main, ["cluster", "kill", "oms", "--active", "--dir", d]) == 0
        said = capsys.readouterr().out
        assert f"sent SIGKILL to {old_leader} " in said and "ACTIVE" in said
        cluster = LocalCluster.load(d)
        killed = next(p for p in cluster.state.processes if p.name == old_leader)
        bus = await open_bus(nats_url)
        try:
            async def new_leader() -> bool:
                rows = await list_instances(bus, service=None)
                return any(r.info.role == "oms" and r.info.instance_id != old_leader
                           and r.info.state is State.ACTIVE and r.health is Health.LIVE for r in rows)

            await _wait_for(new_leader)
        finally:
            await bus.close()
        assert not cluster.running(killed)
        with pytest.raises(ClusterError, match=f"{old_leader} .* is not running"):
            await cluster.kill("oms", instance=old_leader)

        pids = [p.pid for p in cluster.state.processes] + [cluster.state.nats.pid]  # type: ignore[union-attr]
    finally:
        code = await asyncio.to_thread(main, ["cluster", "down", "--dir", d, "--grace", "15"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{old_leader}" in out and "not running" in out.split(old_leader)[1].splitlines()[0]
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["nats-server"].split()[-3] == "stopped"
    assert all(" stopped after " in lines[n] for n in names if n != old_leader), out
    order = [name.rsplit("-", 1)[0] for name in lines]  # roles in the order they were stopped
    assert order[-2:] == ["venue", "nats"]  # the venue after every client of it, nats-server last
    assert max(order.index(r) for r in ("api", "algos")) < order.index("oms") < min(
        order.index(r) for r in ("accounts", "risk", "marketdata"))
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not (Path(d) / STATE_FILE).exists()
    assert os.path.isdir(Path(d) / "logs")


def test_kill_signals_only_the_spawned_process(tmp_path: Path) -> None:
    """A pid recorded in cluster.json that now belongs to another program is never signalled."""
    from tradesim.cluster.local import ClusterState, Proc

    other = os.getpid()  # this test process: alive, but not the recorded argv
    state = ClusterState(dir=str(tmp_path), nats_url="nats://127.0.0.1:1", db="postgresql://x/y", config=None,
                         api_url=None, nats=None, created=time.time(),
                         processes=[Proc(name="risk-1", role="risk", pid=other, port=1, log="", started=0.0,
                                         argv=["python", "-m", "tradesim", "run", "--role", "risk"])])
    cluster = LocalCluster(state)
    assert not cluster.running(state.processes[0])
    with pytest.raises(ClusterError, match="no running instance of risk"):
        asyncio.run(cluster.kill("risk", sig=signal.SIGTERM))
    with pytest.raises(ClusterError, match="this cluster has no oms instance"):
        asyncio.run(cluster.kill("oms"))
