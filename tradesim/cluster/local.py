"""Local cluster supervisor: runs a distributed topology as detached `tradesim run --role` processes on one host.

`LocalCluster.up()` optionally starts a private `nats-server -js` (store under the cluster directory),
makes sure the PostgreSQL database exists, spawns every instance of every role with its own instance
id, port, data directory and log file, and returns once each one is registered and LIVE in the
service registry. What it started is written to `DIR/cluster.json`, so that a later process (`tradesim
cluster down`, `tradesim cluster kill`, a test, a benchmark) can find and signal the same processes.

The processes run in their own sessions: they outlive the command that started them and a Ctrl-C in
its terminal does not reach them. Before a pid is signalled, its command line is compared with the one
that was spawned, so a pid reused by an unrelated process is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from tradesim.bus.base import Bus, Watch
from tradesim.cluster.election import LEADERS_BUCKET, decode_leader

STATE_FILE: Final = "cluster.json"
DEFAULT_DIR: Final = "./cluster"
DEFAULT_DB: Final = "postgresql://127.0.0.1:5432/tradesim"
DEFAULT_NATS: Final = "nats://127.0.0.1:4222"
DEFAULT_API_PORT: Final = 8000
HOST: Final = "127.0.0.1"

ROLES: Final = ("venue", "oms", "accounts", "risk", "marketdata", "agents", "algos", "signals", "api")
"""Every role `tradesim run --role` knows, in start order (the venue first: the others talk to it)."""

DEFAULT_TOPOLOGY: Final[Mapping[str, int]] = {
    "venue": 1, "oms": 3, "accounts": 1, "risk": 2, "marketdata": 2, "algos": 3, "api": 1}
"""Seed 01's deployment: 3 OMS (one active), 2 market data, 2 risk monitors, 3 algo workers."""

SINGLE_ACTIVE: Final = ("venue", "oms", "marketdata")
"""Roles that elect a leader: `up` waits until each has one ACTIVE instance (kept in step with
`tradesim.services.roles.SINGLE_ACTIVE`, which tests compare)."""

STOP_TIERS: Final = (("api", "agents", "signals", "algos"), ("oms",), ("accounts", "risk", "marketdata"),
                     ("venue",))
"""`down` stops order sources first, then the OMS (it drains into the venue), then the consumers, then the
venue; nats-server last, so every service can still release its lease and flush on the way out."""

SIGNALS: Final = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP,
                  "CONT": signal.SIGCONT, "INT": signal.SIGINT}

QUIET_CONFIG: Final = """\
# The demo venue without market makers and noise traders, and market-data ticks an hour apart: the
# books hold only what a drill or a benchmark puts in them.
[agents]
seed = 0

[marketdata]
interval = 3600.0

[algos]            # a killed worker's parents move to another worker within seconds, not half a minute
ack_wait = 3.0
lease = 2.0
poll = 0.1
"""

Progress = Callable[[str], None]


def write_quiet_config(path: str | Path) -> Path:
    """Write QUIET_CONFIG to `path` (for `--config`) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(QUIET_CONFIG)
    return p


class ClusterError(Exception):
    """A local-cluster operation that cannot go on; the message says what and what to do."""


class Proc(msgspec.Struct, kw_only=True):
    """One process of the cluster as recorded in cluster.json."""

    name: str  # instance id ("oms-2"), or "nats-server"
    role: str  # a role of ROLES, or "nats"
    pid: int
    port: int
    log: str
    argv: list[str]
    started: float  # wall clock, s


class ClusterState(msgspec.Struct, kw_only=True):
    """Everything `down`, `kill` and `status` need to find the cluster again."""

    dir: str
    nats_url: str
    db: str
    config: str | None
    api_url: str | None
    nats: Proc | None  # None when the cluster uses a NATS server it did not start
    processes: list[Proc]
    created: float

    def instances(self, role: str | None = None) -> list[Proc]:
        return [p for p in self.processes if role is None or p.role == role]


class StopReport(msgspec.Struct, kw_only=True):
    """What `down` did to one process."""

    name: str
    pid: int
    outcome: str  # "stopped", "killed", "not running"
    seconds: float


_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(ClusterState).decode


def parse_topology(text: str | None, *, base: Mapping[str, int] = DEFAULT_TOPOLOGY) -> dict[str, int]:
    """`"oms=5,risk=3,agents=1"` over `base`; `role=0` drops a role. Raises ClusterError on bad input."""
    topology = dict(base)
    if text is None or not text.strip():
        return topology
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        role, sep, count = item.partition("=")
        role = role.strip()
        if not sep:
            raise ClusterError(f"topology: {item!r} is not ROLE=COUNT (e.g. oms=3,risk=2)")
        if role not in ROLES:
            raise ClusterError(f"topology: unknown role {role!r} (roles: {', '.join(ROLES)})")
        try:
            n = int(count.strip())
        except ValueError:
            raise ClusterError(f"topology: the count of {role} must be an integer, got {count.strip()!r}") from None
        if not 0 <= n <= 32:
            raise ClusterError(f"topology: the count of {role} must be between 0 and 32, got {n}")
        topology[role] = n
    if not any(topology.values()):
        raise ClusterError("topology: no instances to start")
    return topology


def free_port(taken: Iterable[int] = ()) -> int:
    """A TCP port nobody listens on now, not in `taken` (ports handed out for this cluster)."""
    avoid = set(taken)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in avoid:
            return port
    raise ClusterError("no free TCP port found")


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# -- processes -------------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str] | None:
    """The argv of `pid` per /proc (None: no such process, or a zombie, whose cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def _proc_state(pid: int) -> str | None:
    """The one-letter state of `pid` (R, S, T for stopped, Z for zombie...), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def is_running(proc: Proc) -> bool:
    """True if `proc.pid` is alive and still the process that was spawned (same argv, not a zombie)."""
    if not Path("/proc").is_dir():  # no procfs: trust the pid
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _cmdline(proc.pid) == proc.argv and _proc_state(proc.pid) not in (None, "Z")


def is_stopped(proc: Proc) -> bool:
    """True if `proc` is alive but stopped (SIGSTOP)."""
    return is_running(proc) and _proc_state(proc.pid) in ("T", "t")


def log_tail(path: str | Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


# -- PostgreSQL ------------------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


@contextlib.asynccontextmanager
async def scratch_database(server: str, prefix: str) -> AsyncIterator[str]:
    """A fresh database `{prefix}_{random}` on the PostgreSQL `server` for one run (a benchmark's), dropped
    afterwards even when the run fails; yields its URL."""
    import secrets

    import asyncpg

    name = f"{prefix}_{secrets.token_hex(4)}"
    url = urlunsplit(urlsplit(server)._replace(path="/" + name))
    await ensure_database(url)
    try:
        yield url
    finally:
        conn = await asyncpg.connect(urlunsplit(urlsplit(server)._replace(path="/postgres")), timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if the server does not have it; True if it was created.

    Connects to the server's `postgres` database to create it. Raises ClusterError with the cause
    when the server cannot be reached or the name is unusable.
    """
    import asyncpg

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ClusterError(f"--db must be a postgresql:// URL, got {url!r}")
    name = parts.path.lstrip("/")
    if not _DB_NAME.match(name):
        raise ClusterError(f"--db {url!r}: {name!r} is not a database name this command will create "
                           "(letters, digits, _ $ -, starting with a letter or _)")
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        pass
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ClusterError(f"cannot reach PostgreSQL at {url}: {type(exc).__name__}: {exc}") from exc
    else:
        await conn.close()
        return False
    admin = urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(admin, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ClusterError(f"database {name!r} does not exist and cannot be created through {admin}: "
                           f"{type(exc).__name__}: {exc}") from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False  # created by somebody else meanwhile
    except asyncpg.PostgresError as exc:
        raise ClusterError(f"cannot create database {name!r}: {exc}") from exc
    finally:
        await conn.close()
    return True


# -- the supervisor --------------------------------------------------------------------------------


def _say_nothing(message: str) -> None:
    pass


class LocalCluster:
    """Starts, inspects, signals and stops one local cluster living in `directory`.

    Use `LocalCluster.create(...)` then `await up()` to start a new one, or `LocalCluster.load(dir)` to
    operate on a running one. An instance spawned by this object is also reaped by it (its exit code is
    known); one spawned by another process is watched through /proc.
    """

    def __init__(self, state: ClusterState, *, python: str = sys.executable,
                 progress: Progress = _say_nothing, env: Mapping[str, str] | None = None,
                 stop_grace: float = 10.0) -> None:
        self.state = state
        self.python = python
        self.progress = progress
        self.env = dict(os.environ if env is None else env)
        self.stop_grace = stop_grace
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path = DEFAULT_DIR, *, nats_url: str | None = None, db: str = DEFAULT_DB,
               config: str | Path | None = None, api_port: int | None = DEFAULT_API_PORT,
               python: str = sys.executable, progress: Progress = _say_nothing,
               env: Mapping[str, str] | None = None, stop_grace: float = 10.0) -> LocalCluster:
        """A cluster to be started by `up()`; `nats_url=None` means: start a private nats-server."""
        d = Path(directory).resolve()
        if config is not None:
            cfg = Path(config).resolve()
            if not cfg.is_file():
                raise ClusterError(f"--config {config}: no such file")
            config = str(cfg)
        if nats_url is not None and not nats_url.startswith("nats://"):
            raise ClusterError(f"--nats must be a nats:// URL, got {nats_url!r}")
        if api_port is not None and not 0 < api_port < 65536:
            raise ClusterError(f"--api-port must be between 1 and 65535, got {api_port}")
        state = ClusterState(dir=str(d), nats_url=nats_url or "", db=db, config=config,
                             api_url=None, nats=None, processes=[], created=time.time())
        cluster = cls(state, python=python, progress=progress, env=env, stop_grace=stop_grace)
        cluster._api_port = api_port
        return cluster

    @classmethod
    def load(cls, directory: str | Path = DEFAULT_DIR, *, python: str = sys.executable,
             progress: Progress = _say_nothing, env: Mapping[str, str] | None = None,
             stop_grace: float = 10.0) -> LocalCluster:
        """The cluster recorded in `directory/cluster.json` (ClusterError if there is none)."""
        path = Path(directory) / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {directory} (no {STATE_FILE}; start one with "
                               f"`tradesim cluster up --dir {directory}`)") from None
        try:
            state = _decode_state(raw)
        except msgspec.DecodeError as exc:
            raise ClusterError(f"{path} is not a cluster state file: {exc}") from exc
        return cls(state, python=python, progress=progress, env=env, stop_grace=stop_grace)

    _api_port: int | None = None

    @property
    def dir(self) -> Path:
        return Path(self.state.dir)

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def nats_url(self) -> str:
        return self.state.nats_url

    def save(self) -> None:
        """Write cluster.json atomically (a reader never sees half a file)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_bytes(msgspec.json.format(_encode(self.state), indent=2) + b"\n")
        tmp.replace(self.state_path)

    def _taken_ports(self) -> set[int]:
        ports = {p.port for p in self.state.processes}
        if self.state.nats is not None:
            ports.add(self.state.nats.port)
        return ports

    # -- liveness ------------------------------------------------------------------------------

    def exit_code(self, proc: Proc) -> int | None:
        """The exit code of a child this object spawned, once it has exited (None otherwise or unknown)."""
        child = self._children.get(proc.pid)
        return None if child is None else child.poll()

    def running(self, proc: Proc) -> bool:
        child = self._children.get(proc.pid)
        if child is not None and child.poll() is not None:
            return False
        return is_running(proc)

    # -- start ---------------------------------------------------------------------------------

    async def up(self, topology: Mapping[str, int] = DEFAULT_TOPOLOGY, *, timeout: float = 120.0,
                 shards: int = 1) -> ClusterState:
        """Start nats-server (if asked), the database, then every instance; return once all are LIVE.

        `shards` > 1 splits the instruments over that many venue shards (`s1`…`sN`, written as `[[shards]]`
        into `DIR/shards.toml`, the config every instance then gets) and runs `topology["venue"]` instances
        of each shard (`venue-s1-1`, …: one leader, the rest warm standbys). On any failure everything
        started so far is stopped again and ClusterError says why (with the log tail of an instance that died).
        """
        for role, count in topology.items():
            if role not in ROLES:
                raise ClusterError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
            if count < 0:
                raise ClusterError(f"the count of {role} must not be negative, got {count}")
        self._refuse_running_cluster()
        self.dir.mkdir(parents=True, exist_ok=True)
        shard_names = self._write_shards(shards) if shards != 1 else []
        (self.dir / "logs").mkdir(exist_ok=True)
        api_port = self._api_port
        if topology.get("api", 0) and api_port is not None and port_in_use(api_port):
            raise ClusterError(f"the API port {api_port} is in use (another tradesim?); pass --api-port")
        if topology.get("api", 0) > 1 and api_port is not None:
            raise ClusterError("several api instances cannot share --api-port; start one, or omit --api-port")
        created = await ensure_database(self.state.db)
        if created:
            self.progress(f"created database {urlsplit(self.state.db).path.lstrip('/')}")
        try:
            if not self.state.nats_url:
                self.start_nats()
            else:
                await self._check_bus()
            self.save()
            first = [r for r in ROLES if r == "venue" and topology.get(r, 0)]
            rest = [r for r in ROLES if r != "venue" and topology.get(r, 0)]
            deadline = time.monotonic() + timeout
            for stage in (first, rest):
                if stage == ["venue"] and shard_names:
                    procs = [self.spawn("venue", instance_id=f"venue-{name}-{i + 1}", extra_args=["--shard", name])
                             for name in shard_names for i in range(topology["venue"])]
                else:
                    procs = [self.spawn(role, port=api_port if role == "api" else None)
                             for role in stage for _ in range(topology[role])]
                await self.wait_live(procs, timeout=max(1.0, deadline - time.monotonic()))
            leaders = [r for r in SINGLE_ACTIVE if topology.get(r, 0)]
            if shard_names and "venue" in leaders:  # one leader per shard, each registered as venue-<shard>
                leaders = [f"venue-{name}" for name in shard_names] + [r for r in leaders if r != "venue"]
            await self.wait_active(leaders, timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.progress("start-up failed: stopping what was started")
            await self.down()
            raise
        return self.state

    def _write_shards(self, n: int) -> list[str]:
        """Writes `DIR/shards.toml`: the cluster's config plus `[[shards]]` dealing its instruments over `n`
        shards; every instance gets it from now on. Returns the shard names."""
        from tradesim.services.config import ConfigError, load_config
        from tradesim.services.venue.shards import ShardMap, ShardMapError

        source = self.state.config
        try:
            config = load_config(source)
            shard_map = ShardMap.split([i.symbol for i in config.instruments], n)
        except (ConfigError, ShardMapError) as exc:
            raise ClusterError(f"--shards {n}: {exc}") from None
        if config.shards:
            raise ClusterError(f"--shards {n}: {source} has its own [[shards]]; use those (no --shards) or drop them")
        text = Path(source).read_text() if source is not None else ""
        tables = "".join(f'\n[[shards]]\nname = "{s.name}"\nsymbols = {json.dumps(list(s.symbols))}\n'
                         for s in shard_map.shards)
        path = self.dir / "shards.toml"
        path.write_text(f"{text}\n# written by `tradesim cluster up --shards {n}`\n{tables}")
        self.state.config = str(path)
        for shard in shard_map.shards:
            self.progress(f"venue shard {shard.name} ({shard.service}): {', '.join(shard.symbols)}")
        return [s.name for s in shard_map.shards]

    def _refuse_running_cluster(self) -> None:
        if not self.state_path.exists():
            return
        try:
            old = LocalCluster.load(self.dir)
        except ClusterError:
            return  # an unreadable file: overwritten
        alive = [p.name for p in [*old.state.processes, *([old.state.nats] if old.state.nats else [])]
                 if old.running(p)]
        if alive:
            raise ClusterError(f"a cluster is already running in {self.dir} ({', '.join(alive)}); "
                               f"stop it with `tradesim cluster down --dir {self.dir}`")

    async def _check_bus(self) -> None:
        from tradesim.bus import BusConnectionError, open_bus

        try:
            bus = await open_bus(self.state.nats_url, timeout=2.0)
        except BusConnectionError as exc:
            raise ClusterError(f"cannot reach NATS at {self.state.nats_url}: {exc} "
                               "(pass --start-nats to start a private nats-server)") from exc
        await bus.close()

    def start_nats(self, *, port: int | None = None, timeout: float = 15.0) -> Proc:
        """Start nats-server with JetStream, its store in DIR/nats (on disk, so a restart keeps streams).

        `port` defaults to the previous server's port (a restart) or a free one.
        """
        from tradesim.bus.natsserver import NatsServerNotFoundError, find_nats_server

        try:
            binary = find_nats_server()
        except NatsServerNotFoundError as exc:
            raise ClusterError(str(exc)) from exc
        if port is None:
            port = self.state.nats.port if self.state.nats is not None else free_port(self._taken_ports())
        store = self.dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log = self.dir / "logs" / "nats-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [binary, "-js", "-a", HOST, "-p", str(port), "-sd", str(store)]
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self._children[child.pid] = child
        proc = Proc(name="nats-server", role="nats", pid=child.pid, port=port, log=str(log), argv=argv,
                    started=time.time())
        self.state.nats = proc
        self.state.nats_url = f"nats://{HOST}:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                raise ClusterError(f"nats-server exited with code {child.returncode} at start:\n"
                                   f"{_read_from(log, offset)}")
            if _nats_ready(port, log, offset):
                break
            if time.monotonic() > deadline:
                self._signal(proc, signal.SIGKILL)
                raise ClusterError(f"nats-server did not get ready within {timeout:.0f}s:\n{_read_from(log, offset)}")
            time.sleep(0.02)
        self.save()
        self.progress(f"nats-server (JetStream, store {store}) listening on {self.state.nats_url}")
        return proc

    async def stop_nats(self, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> StopReport:
        """Stop the nats-server this cluster started (for a restart drill); ClusterError if it has none."""
        if self.state.nats is None:
            raise ClusterError("this cluster uses a NATS server it did not start")
        report = await self._stop([self.state.nats], sig=sig, grace=timeout)
        return report[0]

    def next_instance_id(self, role: str) -> str:
        used = {p.name for p in self.state.processes}
        n = 1
        while f"{role}-{n}" in used:
            n += 1
        return f"{role}-{n}"

    def spawn(self, role: str, *, instance_id: str | None = None, port: int | None = None,
              extra_args: Sequence[str] = ()) -> Proc:
        """Start one `tradesim run --role ROLE` process (detached, own session) and record it.

        Returns at once; `wait_live([proc])` waits until it has registered.
        """
        if role not in ROLES:
            raise ClusterError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        if not self.state.nats_url:
            raise ClusterError("the cluster has no NATS server yet")
        iid = instance_id or self.next_instance_id(role)
        if any(p.name == iid for p in self.state.processes if self.running(p)):
            raise ClusterError(f"instance {iid} is already running")
        port = port or free_port(self._taken_ports())
        data_dir = self.dir / "data" / iid
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "logs" / f"{iid}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "tradesim", "run", "--role", role, "--instance-id", iid,
                "--bus", self.state.nats_url, "--db", self.state.db, "--host", HOST, "--port", str(port),
                "--data-dir", str(data_dir)]
        if self.state.config is not None:
            argv += ["--config", self.state.config]
        argv += list(extra_args)
        env = dict(self.env)
        env["TRADESIM_LOG_FILE"] = str(self.dir / "logs" / f"{iid}.jsonl")
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "ab") as out:
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env, cwd=str(self.dir))
        self._children[child.pid] = child
        proc = Proc(name=iid, role=role, pid=child.pid, port=port, log=str(log), argv=argv, started=time.time())
        self.state.processes = [p for p in self.state.processes if p.name != iid] + [proc]
        if role == "api" and self.state.api_url is None:
            self.state.api_url = f"http://{HOST}:{port}/api/v1"
        self.save()
        self.progress(f"started {iid} (pid {proc.pid}, port {port}, log {log})")
        return proc

    async def wait_live(self, procs: Sequence[Proc], *, timeout: float = 60.0) -> None:
        """Return once every process in `procs` is registered and LIVE (its own entry: same pid); ClusterError if
        one exits or time runs out."""
        from tradesim.bus import open_bus
        from tradesim.bus.errors import BusError
        from tradesim.cluster.registry import Health, list_instances

        if not procs:
            return
        bus = await open_bus(self.state.nats_url, timeout=5.0)
        try:
            deadline = time.monotonic() + timeout
            last_report = 0.0
            waiting = [p.name for p in procs]
            while True:
                for p in procs:
                    if not self.running(p):
                        code = self.exit_code(p)
                        how = f"exited with code {code}" if code is not None else "is gone"
                        raise ClusterError(f"{p.name} (pid {p.pid}) {how} while starting; the end of "
                                           f"{p.log}:\n{log_tail(p.log)}")
                try:
                    rows = await list_instances(bus)
                except BusError:
                    rows = []  # the registry bucket may not exist yet
                # By instance id AND pid: a process restarted under the id of one just killed would
                # otherwise count as live on the dead one's entry, still fresh for its heartbeat TTL.
                live = {(r.info.instance_id, r.info.pid) for r in rows if r.health is Health.LIVE}
                waiting = [p.name for p in procs if (p.name, p.pid) not in live]
                if not waiting:
                    self.progress(f"{len(procs)}/{len(procs)} live: {', '.join(p.name for p in procs)}")
                    return
                now = time.monotonic()
                if now > deadline:
                    raise ClusterError(f"not registered within {timeout:.0f}s: {', '.join(waiting)} "
                                       f"(logs in {self.dir / 'logs'})")
                if now - last_report >= 2.0:
                    last_report = now
                    self.progress(f"{len(procs) - len(waiting)}/{len(procs)} live; waiting for "
                                  f"{', '.join(waiting)}")
                await asyncio.sleep(0.1)
        finally:
            await bus.close()

    async def wait_active(self, roles: Sequence[str], *, timeout: float = 60.0) -> None:
        """Return once each of `roles` has an instance the registry lists as ACTIVE and LIVE: a single-active
        role serves only once its leader is elected and has rebuilt its state."""
        from tradesim.bus import open_bus
        from tradesim.bus.errors import BusError
        from tradesim.cluster.registry import Health, State, list_instances

        if not roles:
            return
        bus = await open_bus(self.state.nats_url, timeout=5.0)
        try:
            deadline = time.monotonic() + timeout
            last_report = time.monotonic()
            while True:
                try:
                    rows = await list_instances(bus)
                except BusError:
                    rows = []
                ours = {p.name for p in self.state.processes}
                active = {name for r in rows if r.info.instance_id in ours and r.info.state is State.ACTIVE
                          and r.health is Health.LIVE for name in (r.info.role, r.info.service)}
                waiting = [r for r in roles if r not in active]
                if not waiting:
                    self.progress(f"leaders elected and serving: {', '.join(roles)}")
                    return
                now = time.monotonic()
                if now > deadline:
                    raise ClusterError(
                        f"no ACTIVE instance of {', '.join(waiting)} within {timeout:.0f}s (logs in "
                        f"{self.dir / 'logs'}; a database kept from a cluster whose NATS store is gone holds a "
                        "newer fencing token than the new election's: use a fresh --db, or keep DIR/nats)")
                if now - last_report >= 2.0:
                    last_report = now
                    self.progress(f"waiting for an ACTIVE {', '.join(waiting)}")
                await asyncio.sleep(0.1)
        finally:
            await bus.close()

    # -- signals -------------------------------------------------------------------------------

    def _signal(self, proc: Proc, sig: signal.Signals) -> bool:
        """Send `sig` to `proc` if it is still the process that was spawned; False if it is gone."""
        if not self.running(proc):
            return False
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def active_instance(self, role: str, *, service: str | None = None) -> Proc:
        """The instance of `role` that the registry lists as ACTIVE (and LIVE); with `service`, of that
        service (a venue shard: `venue-s1`)."""
        from tradesim.bus import BusConnectionError, open_bus
        from tradesim.cluster.registry import Health, State, list_instances

        ours = {p.name: p for p in self.state.instances(role)}
        if not ours:
            raise ClusterError(self._no_role_message(role))
        try:
            bus = await open_bus(self.state.nats_url, timeout=2.0)
        except BusConnectionError as exc:
            raise ClusterError(f"cannot reach NATS at {self.state.nats_url}: {exc}") from exc
        try:
            rows = await list_instances(bus)
        finally:
            await bus.close()
        for row in rows:
            proc = ours.get(row.info.instance_id)
            if proc is not None and row.info.state is State.ACTIVE and row.health is Health.LIVE \
                    and row.info.pid in (0, proc.pid) and self.running(proc) \
                    and (service is None or row.info.service == service):
                return proc
        raise ClusterError(f"no LIVE ACTIVE instance of {service or role} in the registry "
                           f"(instances: {', '.join(sorted(ours))})")

    def _no_role_message(self, role: str) -> str:
        roles = sorted({p.role for p in self.state.processes})
        if role not in ROLES:
            return f"unknown role {role!r} (roles: {', '.join(ROLES)})"
        return f"this cluster has no {role} instance (it runs: {', '.join(roles) or 'nothing'})"

    async def kill(self, role: str, *, active: bool = False, sig: signal.Signals = signal.SIGKILL,
                   instance: str | None = None, service: str | None = None) -> Proc:
        """Signal one instance of `role`: the named one, the registry's ACTIVE one, or the first that can
        take the signal (a stopped one for CONT, a running one otherwise). Returns the instance."""
        if role == "nats":
            if self.state.nats is None:
                raise ClusterError("this cluster uses a NATS server it did not start")
            target = self.state.nats
        elif instance is not None:
            found = [p for p in self.state.instances(role) if p.name == instance]
            if not found:
                raise ClusterError(f"no instance {instance!r} of {role} in this cluster "
                                   f"(instances: {', '.join(p.name for p in self.state.instances(role))})")
            target = found[0]
        elif active:
            target = await self.active_instance(role, service=service)
        else:
            procs = self.state.instances(role)
            if not procs:
                raise ClusterError(self._no_role_message(role))
            alive = [p for p in procs if self.running(p)]
            if sig == signal.SIGCONT:
                candidates = [p for p in alive if is_stopped(p)] or alive
            else:
                candidates = [p for p in alive if not is_stopped(p)] or alive
            if not candidates:
                raise ClusterError(f"no running instance of {role} (all of {', '.join(p.name for p in procs)} "
                                   "have exited)")
            target = candidates[0]
        if not self._signal(target, sig):
            raise ClusterError(f"{target.name} (pid {target.pid}) is not running")
        return target

    # -- stop ----------------------------------------------------------------------------------

    async def _stop(self, procs: Sequence[Proc], *, sig: signal.Signals = signal.SIGTERM,
                    grace: float) -> list[StopReport]:
        """Signal all of `procs`, wait up to `grace` s, SIGKILL the stragglers, wait for them too."""
        start = time.monotonic()
        sent = {p.name: self._signal(p, sig) for p in procs}
        for p in procs:  # a stopped process only acts on TERM once continued
            if sent[p.name] and sig != signal.SIGKILL:
                self._signal(p, signal.SIGCONT)
        reports: dict[str, StopReport] = {}
        for p in procs:
            if not sent[p.name]:
                reports[p.name] = StopReport(name=p.name, pid=p.pid, outcome="not running", seconds=0.0)
        pending = [p for p in procs if sent[p.name]]
        deadline = start + grace
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for p in [p for p in pending if not self.running(p)]:
                reports[p.name] = StopReport(name=p.name, pid=p.pid, outcome="stopped",
                                             seconds=round(time.monotonic() - start, 3))
                pending.remove(p)
        for p in pending:
            self._signal(p, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while pending and time.monotonic() < kill_deadline:
            await asyncio.sleep(0.05)
            for p in [p for p in pending if not self.running(p)]:
                reports[p.name] = StopReport(name=p.name, pid=p.pid, outcome="killed",
                                             seconds=round(time.monotonic() - start, 3))
                pending.remove(p)
        for p in pending:
            reports[p.name] = StopReport(name=p.name, pid=p.pid, outcome="did not die",
                                         seconds=round(time.monotonic() - start, 3))
        return [reports[p.name] for p in procs]

    async def stop_instance(self, proc: Proc, *, grace: float | None = None) -> StopReport:
        """SIGTERM one instance and wait (SIGKILL after `grace`)."""
        return (await self._stop([proc], grace=self.stop_grace if grace is None else grace))[0]

    async def down(self, *, grace: float | None = None) -> list[StopReport]:
        """Stop every instance, tier by tier (see STOP_TIERS), then nats-server; remove cluster.json."""
        grace = self.stop_grace if grace is None else grace
        reports: list[StopReport] = []
        for tier in STOP_TIERS:
            procs = [p for p in self.state.processes if p.role in tier]
            if procs:
                reports += await self._stop(procs, grace=grace)
        others = [p for p in self.state.processes if not any(p.role in t for t in STOP_TIERS)]
        if others:
            reports += await self._stop(others, grace=grace)
        if self.state.nats is not None:
            reports += await self._stop([self.state.nats], grace=grace)
        for report in reports:
            self.progress(f"{report.name} (pid {report.pid}): {report.outcome}"
                          + (f" in {report.seconds:.1f}s" if report.outcome != "not running" else ""))
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return reports


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-2000:]
    except OSError:
        return ""


def _nats_ready(port: int, log: Path, offset: int) -> bool:
    """The server greets with INFO and has logged (since `offset`) that it is ready, JetStream included."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            if not s.recv(4096).startswith(b"INFO"):
                return False
    except OSError:
        return False
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return b"Server is ready" in f.read()
    except OSError:
        return False


# -- watching an election from outside (drills, benchmarks) ------------------------------------------


class LeaderChange(msgspec.Struct, frozen=True, kw_only=True):
    """One write to an election's leader key, as a watcher received it."""

    at: float  # time.monotonic() on arrival at the watcher
    instance_id: str | None  # None: the key was deleted (a graceful release)
    revision: int
    token: int  # the leadership's fencing token (the revision of its create); 0 for a delete


class LeaderLog:
    """Records every change of the leader key of election `name` (renewals included) with its arrival time.

    Why from the key and not from clients: the hand-over time of the election itself is the gap between
    the old leader's release (a delete) and the new leader's create, both seen by the same watcher, so
    the figure is free of client retry back-off. Use `async with LeaderLog(bus, "oms") as log:`.
    """

    def __init__(self, bus: Bus, name: str, *, bucket: str = LEADERS_BUCKET) -> None:
        self.bus = bus
        self.name = name
        self.bucket = bucket
        self.changes: list[LeaderChange] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._watch: Watch | None = None

    async def start(self) -> LeaderLog:
        kv = await self.bus.kv(self.bucket)
        watch = await kv.watch(self.name, include_initial=True)
        self._watch = watch
        self._task = asyncio.create_task(self._run(watch), name=f"leader-log:{self.name}")
        return self

    async def _run(self, watch: Watch) -> None:
        async for entry in watch:
            now = time.monotonic()
            record = None if entry.deleted else decode_leader(entry.value)
            holder = None if entry.deleted else (record.instance_id if record is not None else "?")
            token = 0 if record is None else (record.token or entry.revision)  # a create carries token 0
            async with self._changed:
                self.changes.append(LeaderChange(at=now, instance_id=holder, revision=entry.revision, token=token))
                self._changed.notify_all()

    async def stop(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def __aenter__(self) -> LeaderLog:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def leader(self) -> str | None:
        """The holder per the newest change seen (None: released, or no leader yet)."""
        return self.changes[-1].instance_id if self.changes else None

    async def wait(self, predicate: Callable[[LeaderChange], bool], *, after: float = 0.0,
                   timeout: float = 30.0) -> LeaderChange:
        """The first change received at or after monotonic time `after` that satisfies `predicate`."""
        async def found() -> LeaderChange:
            async with self._changed:
                while True:
                    for change in self.changes:
                        if change.at >= after and predicate(change):
                            return change
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            seen = ", ".join(f"{c.instance_id}@{c.revision}" for c in self.changes[-5:])
            raise ClusterError(f"election {self.name}: no matching leader change within {timeout:.0f}s "
                               f"(last seen: {seen or 'nothing'})") from None

    async def wait_leader(self, *, other_than: str | None = None, after: float = 0.0,
                          timeout: float = 30.0) -> LeaderChange:
        """The first write by a leader other than `other_than` (a new leadership), at or after `after`."""
        return await self.wait(lambda c: c.instance_id is not None and c.instance_id != other_than,
                               after=after, timeout=timeout)

    def handover(self, old: str) -> float | None:
        """Seconds from `old`'s release (the delete) to the next leader's first write; None if not seen."""
        released: LeaderChange | None = None
        previous: str | None = None
        for change in self.changes:
            if change.instance_id is None and previous == old:
                released = change
            elif released is not None and change.instance_id is not None:
                return change.at - released.at
            if change.instance_id is not None:
                previous = change.instance_id
        return None
