"""One class per role: the service(s) of that role composed over a shared bus (NATS) and PostgreSQL.

`tradesim run --role ROLE` builds one of these with `create_role`, starts it, serves its health over
HTTP, keeps its entry in the service registry fresh from `state()` and `metrics()`, and stops it on
SIGTERM. A role whose service elects a leader (marketdata; the OMS through its own election) is ready
as a STANDBY too: readiness means "started and connected", the state says whether it acts.
The services are built by `tradesim.services.roles.build`, as in the embedded `System`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from tradesim.bus import Bus, BusError
from tradesim.cluster.election import SingleActive
from tradesim.cluster.registry import MetricValue, State
from tradesim.engine import MatchingEngine
from tradesim.services.accounts.replica import LedgerReplica
from tradesim.services.accounts.service import AccountsService, StreamFollower
from tradesim.services.agents.service import AgentsService
from tradesim.services.algos.worker import AlgoWorker
from tradesim.services.config import ConfigError, SystemConfig
from tradesim.services.marketdata.service import MarketDataService
from tradesim.services.marketdata.store import MarketDataStore, open_marketdata_store
from tradesim.services.oms.pgstore import PostgresOrderStore, open_oms_stores
from tradesim.services.oms.service import OmsService
from tradesim.services.risk.monitor import RiskMonitorService
from tradesim.services.roles import ROLES, RoleError, build
from tradesim.services.signals.service import DecisionAgent
from tradesim.services.venue.service import VenueService
from tradesim.services.venue.shards import Shard, ShardRouter
from tradesim.services.venue.standby import VenueStandby
from tradesim.store import CorruptRecordError, JournalError
from tradesim.store.jetstream import JetStreamJournal, JournalMirror

if TYPE_CHECKING:
    from tradesim.bus.nats import NatsBus

log = logging.getLogger("tradesim.roles")

Progress = Callable[[str], None]
Clock = Callable[[], int]
RATE_WINDOW = 10.0  # seconds over which per-second rates in the registry are measured
VENUE_FAILOVER_WAIT = 5.0
"""Seconds the OMS keeps offering a command to a venue shard with no leader (failing over) before it
answers the order venue_unavailable: a venue failover takes about its lease (`venue_ttl`)."""


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `/readyz`: ready (200) or not (503), and why."""

    ready: bool
    role: str
    instance_id: str
    state: State
    connected: bool
    detail: dict[str, MetricValue] = {}


class Rate:
    """Per-second rate of a running total over the last `window` seconds (registry heartbeats and scrapes
    both read it, so it keeps samples rather than diffing against the previous read)."""

    def __init__(self, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, total: int) -> float:
        now = self._clock()
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        t0, n0 = samples[0]
        return round((total - n0) / (now - t0), 3) if now > t0 else 0.0


def bus_connected(bus: Bus) -> bool:
    """Whether the bus is open and (for NATS) its connection is up right now."""
    if bus.closed:
        return False
    nc = getattr(bus, "nc", None)
    return nc is None or bool(getattr(nc, "is_connected", True))


class RoleProcess(ABC):
    """The common shape of a role: start/stop, state, readiness and metrics (see the module docstring).

    `failed` is set (with `failure` saying why) when the role can no longer do its job in this process
    (e.g. the venue fail-stopped): `tradesim run` then exits non-zero so a supervisor restarts it.
    """

    role: ClassVar[str]

    def __init__(self, config: SystemConfig, bus: Bus, instance_id: str, *, clock: Clock = time.time_ns,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.bus = bus
        self.instance_id = instance_id
        self.clock = clock
        self.progress: Progress = progress or (lambda message: log.info(message))
        self.election: SingleActive | None = None
        self.started = False
        self.failed = asyncio.Event()
        self.failure = ""
        self._rate = Rate()

    @classmethod
    def check(cls, config: SystemConfig) -> None:
        """Raises RoleError if `config` gives this role nothing to do or cannot run it (before any I/O)."""
        return None

    @property
    def service_name(self) -> str:
        """The service this instance registers as (the role; a venue shard: its RPC service, `venue-a`)."""
        return self.role

    @abstractmethod
    async def start(self) -> None:
        """Builds and starts the service; returns once it is live (a standby: once it contends)."""

    @abstractmethod
    async def stop(self) -> None:
        """Graceful: a leader releases its election at once, then the service drains and stops."""

    def state(self) -> State:
        """ACTIVE unless the role elects a leader and this instance is not it."""
        if self.election is None or self.election.is_active:
            return State.ACTIVE
        return State.STANDBY

    def metrics(self) -> dict[str, MetricValue]:
        """Live figures for the registry and /metrics (numbers only, so both can show them)."""
        return {}

    def serving(self) -> bool:
        """Whether the started service is doing its job (e.g. following the venue's stream)."""
        return True

    def readiness(self) -> Readiness:
        connected = bus_connected(self.bus)
        ready = self.started and connected and not self.failed.is_set() and self.serving()
        return Readiness(ready=ready, role=self.role,
                         instance_id=self.instance_id, state=self.state(), connected=connected,
                         detail=self.metrics())

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.failed.set()

    def _elect(self, name: str, *, ttl: float = 1.0) -> SingleActive:
        """Joins the election of `name`; state changes are reported as progress lines."""
        def elected(token: int) -> None:
            self.progress(f"{self.instance_id} is now ACTIVE for {name} (fencing token {token})")

        def demoted(reason: str) -> None:
            self.progress(f"{self.instance_id} is now STANDBY for {name} ({reason})")

        self.election = SingleActive(self.bus, name, self.instance_id, ttl=ttl, on_elected=elected,
                                     on_demoted=demoted)
        return self.election


# ---- the roles ---------------------------------------------------------------------------------

class VenueRole(RoleProcess):
    """One instance of a venue shard: single-active (election `venue.<shard>`), its journal the shard's
    JetStream stream, PostgreSQL keeping the mirror (audit chain).

    Every instance starts as a warm standby (`VenueStandby`: the newest snapshot, then every journal
    record as it is stored). The elected one promotes its standby — catch up to the stream's end, check
    continuity and the hash chain, take the journal over (the server-enforced single writer fences any
    former leader) — and starts a `VenueService` from that engine, which first publishes into
    `VENUE_EVENTS` whatever the old leader journaled but did not publish, then serves `rpc.{service}.*`
    (and, with several shards, the `rpc.venue.*` router). A leader that loses its lease stops answering
    at once (`active=`), stops its venue and follows again as a standby; so does one whose journal was
    fenced or failed. Every instance also runs the `JournalMirror` (an advisory lock lets one copy).
    """

    role = "venue"

    def __init__(self, config: SystemConfig, bus: Bus, instance_id: str, *, clock: Clock = time.time_ns,
                 progress: Progress | None = None) -> None:
        super().__init__(config, bus, instance_id, clock=clock, progress=progress)
        self.shard: Shard = config.venue_shard(config.settings.shard)
        self.shards = config.shard_map()
        self.journal: JetStreamJournal | None = None
        self.standby: VenueStandby | None = None
        self.venue: VenueService | None = None
        self.router: ShardRouter | None = None
        self.mirror: JournalMirror | None = None
        self._mirror_journal: JetStreamJournal | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.activations = 0
        self.activation_ms = 0.0
        self.last_failover = ""
        self._hash_at: tuple[tuple[int, int], str] = ((0, -1), "")
        self._seen_at: tuple[int, int] = (0, -1)  # (engine, event seq) at the previous heartbeat

    @classmethod
    def check(cls, config: SystemConfig) -> None:
        try:
            config.venue_shard(config.settings.shard)
        except ConfigError as exc:
            raise RoleError(f"role venue: {exc}") from None

    @property
    def service_name(self) -> str:
        return self.shard.service

    def _nats(self) -> NatsBus:
        from tradesim.bus.nats import NatsBus

        if not isinstance(self.bus, NatsBus):
            raise RoleError("role venue needs a NATS bus: its journal is a JetStream stream")
        return self.bus

    async def _open_journal(self) -> JetStreamJournal:
        return await JetStreamJournal.open(self._nats(), shard=self.shard.name,
                                           replicas=self.config.settings.journal_replicas)

    async def start(self) -> None:
        settings = self.config.settings
        self._mirror_journal = await self._open_journal()
        url = await prepare_mirror_db(settings.db, self.shard.schema)
        self.mirror = JournalMirror(self._mirror_journal, url)
        await self.mirror.start()
        await self._follow()
        await self._join()
        self.started = True
        self._watch = asyncio.create_task(self._watch_failure(), name="venue-failure-watch")
        assert self.standby is not None
        self.progress(f"venue shard {self.shard.name} ({self.shard.service}, {len(self.shard.symbols)} symbols): "
                      f"standing by at journal seq {self.standby.last_seq}, contending for {self.shard.election}")

    async def _join(self) -> None:
        """Joins (again) the shard's election; the callbacks only spawn the transitions."""
        def elected(token: int) -> None:
            self._spawn(self._activate(token))

        def demoted(reason: str) -> None:
            self.progress(f"{self.instance_id} is now STANDBY for {self.shard.election} ({reason})")
            self._spawn(self._demote(reason))

        self.election = SingleActive(self.bus, self.shard.election, self.instance_id,
                                     ttl=self.config.settings.venue_ttl, on_elected=elected, on_demoted=demoted)
        await self.election.start()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self) -> None:
        """A fresh journal handle and a warm standby following it from the newest snapshot."""
        journal = await self._open_journal()
        standby = VenueStandby(journal, id_base=self.shard.id_base)
        try:
            await standby.start()
        except BaseException:
            await journal.close()
            raise
        self.journal, self.standby = journal, standby

    async def _refollow(self) -> None:
        """Back to standing by (after a leadership ended or a follower failed), retrying through outages."""
        old, self.journal = self.journal, None
        standby, self.standby = self.standby, None
        if standby is not None:
            with contextlib.suppress(Exception):
                await standby.stop()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        pause = 0.1
        while not self._stopping:
            try:
                await self._follow()
                return
            except CorruptRecordError as exc:
                self.fail(f"venue shard {self.shard.name}: the journal stream does not verify: {exc}")
                return
            except (JournalError, BusError, OSError) as exc:
                log.warning("venue %s: cannot follow the journal yet (%s); retrying", self.shard.name, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _activate(self, token: int) -> None:
        """Elected: promote the standby, start the venue from its engine, serve."""
        async with self._lock:
            election = self.election
            standby, journal = self.standby, self.journal
            if election is None:
                return
            if election.fencing_token != token or standby is None or journal is None:
                # Cannot act on this leadership (already lost, or not following the journal right now):
                # holding the lease while not serving would keep every standby out, so give it up.
                election.resign(token)
                return
            started = time.perf_counter()
            try:
                engine, last_seq = await standby.promote()
            except CorruptRecordError as exc:
                self.fail(f"venue shard {self.shard.name}: cannot take over, the journal does not verify: {exc}")
                return
            except Exception as exc:
                log.warning("venue %s: promotion failed (%s: %s); standing by again", self.shard.name,
                            type(exc).__name__, exc)
                await self._step_down()
                return
            venue = VenueService(
                self.bus, journal, [self.config.instrument(s) for s in self.shard.symbols], clock=self.clock,
                snapshot_every=self.config.settings.snapshot_every, event_stream=True, service=self.shard.service,
                shard_symbols=self.shard.symbols if self.shards.sharded else None,
                active=lambda: election.is_active, id_base=self.shard.id_base)
            try:
                await venue.start(recovered=(engine, last_seq), recent_events=standby.events_after)
                if self.shards.sharded:
                    self.router = ShardRouter(self.bus, self.shards)
                    await self.router.start()
            except Exception as exc:
                log.exception("venue %s: could not start serving as leader", self.shard.name)
                with contextlib.suppress(Exception):
                    await venue.stop()
                self.last_failover = f"start failed: {type(exc).__name__}: {exc}"
                await self._step_down()
                return
            self.venue = venue
            self.standby = None
            self.activations += 1
            self.activation_ms = round((time.perf_counter() - started) * 1000, 3)
            self.progress(f"{self.instance_id} is now ACTIVE for {self.shard.election} (fencing token {token}): "
                          f"serving {self.shard.service} from journal seq {last_seq}, event seq {engine.seq}, "
                          f"{self.activation_ms:.1f} ms after the election")

    async def _stop_serving(self) -> None:
        router, self.router = self.router, None
        if router is not None:
            await router.stop()
        venue, self.venue = self.venue, None
        if venue is not None:
            with contextlib.suppress(Exception):
                await venue.stop()

    async def _demote(self, reason: str) -> None:
        """No longer the leader: stop serving and follow again (a new journal handle: the old one may be
        fenced or ahead of what is stored)."""
        async with self._lock:
            if self.venue is None and self.standby is not None:
                return
            await self._stop_serving()
            if not self._stopping:
                await self._refollow()

    async def _step_down(self) -> None:
        """Give the leadership up (this instance cannot serve) and rejoin the election as a standby."""
        election, self.election = self.election, None
        await self._stop_serving()
        if election is not None:
            election.on_demoted = None
            await election.stop()
        if not self._stopping:
            await self._refollow()
            if not self.failed.is_set():
                await self._join()

    async def _watch_failure(self) -> None:
        """A leader whose venue fail-stopped (journal fenced by a newer leader, or failed) steps down and
        stands by again; a standby whose follower broke follows afresh; a corrupt stream ends the process."""
        while not self._stopping:
            await asyncio.sleep(0.1)
            venue, standby = self.venue, self.standby
            if venue is not None and venue.failure is not None and not self._lock.locked():
                self.last_failover = f"venue failed: {type(venue.failure).__name__}: {venue.failure}"
                log.warning("venue %s: %s; stepping down", self.shard.name, self.last_failover)
                async with self._lock:
                    await self._step_down()
            elif standby is not None and standby.failure is not None and not self._lock.locked():
                if isinstance(standby.failure, CorruptRecordError):
                    self.fail(f"venue shard {self.shard.name}: {standby.failure}")
                    return
                log.warning("venue %s: standby stopped following (%s); following again", self.shard.name,
                            standby.failure)
                async with self._lock:
                    await self._refollow()

    async def stop(self) -> None:
        """A leader releases its election first (a standby takes over at once), then drains and snapshots."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        election, self.election = self.election, None
        if election is not None:
            election.on_demoted = None
            await election.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_serving()
        if self.standby is not None:
            await self.standby.stop()
        for journal in (self.journal, self._mirror_journal):
            if journal is not None:
                with contextlib.suppress(Exception):
                    await journal.close()
        if self.mirror is not None:
            await self.mirror.stop()
        self.journal = self._mirror_journal = self.standby = self.mirror = None

    def state(self) -> State:
        """ACTIVE only while this instance serves the shard (elected, promoted, caught up)."""
        venue = self.venue
        active = venue is not None and venue.serving and self.election is not None and self.election.is_active
        return State.ACTIVE if active else State.STANDBY

    def serving(self) -> bool:
        if self.venue is not None:
            return self.venue.serving
        return self.standby is not None and self.standby.following

    def metrics(self) -> dict[str, MetricValue]:
        journal, venue, standby, mirror = self.journal, self.venue, self.standby, self.mirror
        if journal is None and standby is None:
            return {"shard": self.shard.name}
        out: dict[str, MetricValue] = {"shard": self.shard.name, "service": self.shard.service}
        if venue is not None and journal is not None:
            appends = journal.stats.appends
            out.update(seq=journal.last_seq, event_seq=venue.engine.seq, commands=appends,
                       commands_per_s=self._rate(appends), serving=venue.serving, lag_records=0, lag_ms=0.0)
        elif standby is not None:
            lag = standby.lag
            out.update(seq=standby.last_seq, event_seq=standby.engine.seq, lag_records=lag.records,
                       lag_ms=round(lag.delay_ms, 3), serving=False)
        if mirror is not None:
            mlag = mirror.lag
            out.update(mirror_seq=mirror.mirrored_seq, mirror_lag=mlag.records, mirror_active=mirror.active,
                       mirror_ok=mirror.failure is None)
        out.update(activations=self.activations, activation_ms=self.activation_ms)
        engine = venue.engine if venue is not None else standby.engine if standby is not None else None
        if engine is not None and self._state_hash(engine):
            out["state_hash"], out["state_hash_seq"] = self._hash_at[1], self._hash_at[0][1]
        return out

    def _state_hash(self, engine: MatchingEngine) -> str:
        """The engine's `state_hash()` (first 16 hex digits) as of `state_hash_seq`: recomputed only once the
        book is at rest (the same event seq as at the previous heartbeat). Hashing a large book every second
        under load cost the leader ~7% and a standby ~28% of their CPU; at rest, equal hashes at equal seqs on
        two instances still mean equal books."""
        key = (id(engine), engine.seq)
        if self._hash_at[0] != key:
            if self._seen_at == key:
                self._hash_at = (key, engine.state_hash()[:16])
            self._seen_at = key
        return self._hash_at[1]


async def prepare_mirror_db(db: str, schema: str | None) -> str:
    """The URL the shard's journal mirror writes to: the database itself for a single venue, else the same
    database with `search_path` set to the shard's own schema (created here), so each shard's chain is its
    own `journal` table — `tradesim audit verify --db "URL?search_path=venue_<shard>"` checks it."""
    if schema is None:
        return db
    import asyncpg

    conn = await asyncpg.connect(db, timeout=10.0)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    except asyncpg.UniqueViolationError:
        pass  # created by another instance at the same moment
    finally:
        await conn.close()
    return f"{db}{'&' if '?' in db else '?'}search_path={schema}"


class OmsRole(RoleProcess):
    """The OMS: single-active among its instances (`SingleActive(bus, "oms", instance_id)`), stores on
    PostgreSQL so that the next leader starts from what the last one committed."""

    role = "oms"

    oms: OmsService | None = None
    store: PostgresOrderStore | None = None

    async def start(self) -> None:
        election = self._elect("oms")
        self.store, parents = await open_oms_stores(self.config.settings.db, holder=self.instance_id)
        self.oms = build.oms_service(self.bus, self.config, clock=self.clock, store=self.store,
                                     parent_store=parents, election=election, shards=self.config.shard_map(),
                                     venue_failover_wait=VENUE_FAILOVER_WAIT, watch_venue_leaders=True)
        await self.oms.start()  # returns at once: the leader serves once it rebuilt its state
        self.started = True

    async def stop(self) -> None:
        if self.oms is not None:
            await self.oms.stop()  # a leader stops taking requests, checkpoints, then releases the election
        if self.store is not None:
            await self.store.close()
        self.oms = self.store = None

    def state(self) -> State:
        """ACTIVE only once the leader serves (it rebuilds its state from the store and the stream first)."""
        return State.ACTIVE if self.oms is not None and self.oms.serving else State.STANDBY

    def metrics(self) -> dict[str, MetricValue]:
        if self.oms is None:
            return {}
        manager = self.oms.manager
        orders = len(manager.records())
        out: dict[str, MetricValue] = {
            "orders": orders, "orders_per_s": self._rate(orders), "applied_seq": manager.applied_seq,
            "activations": self.oms.activations, "activation_s": round(self.oms.activation_seconds, 3),
            "venue_redriven": self.oms.redriven}
        if len(manager.shard_names) > 1:  # each venue shard's applied seq (they number events on their own)
            out.update({f"applied_seq_{name}": seq for name, seq in manager.sequencer.applied_seqs.items()})
        return out


class _ProjectionRole(RoleProcess):
    """BROADCAST roles that project the venue's trades (accounts, risk): ready once they follow the stream."""

    def _follower(self) -> StreamFollower | None:
        raise NotImplementedError

    def serving(self) -> bool:
        follower = self._follower()
        return follower is not None and follower.following

    def _follow_metrics(self, lag_ns: int) -> dict[str, MetricValue]:
        follower = self._follower()
        if follower is None:
            return {}
        return {"stream_seq": follower.handled_seq, "caught_up": follower.caught_up.is_set(),
                "lag_ms": round(lag_ns / 1e6, 3)}

    def _projection_metrics(self, replica: LedgerReplica) -> dict[str, MetricValue]:
        """Equal `state_hash` on two instances means equal books: how a late instance shows it caught up."""
        ledger = replica.ledger
        positions = sum(1 for a in ledger.accounts for p in ledger.account(a).positions if p.qty)
        out: dict[str, MetricValue] = {
            "last_seq": replica.last_seq, "trades_applied": replica.applied, "positions": positions,
            "trades_per_s": self._rate(replica.applied), "state_hash": replica.state_hash()[:16]}
        shards = self.config.shard_map()
        if shards.sharded:  # the newest seq seen of each venue shard (they number events on their own)
            out.update({f"last_seq_{name}": seq for name, seq in replica.shard_seqs(shards.shard_of).items()})
        return out


class AccountsRole(_ProjectionRole):
    """The position tracker; reads the venue's event stream from its start, so a late instance catches up."""

    role = "accounts"

    service: AccountsService | None = None

    async def start(self) -> None:
        self.service = build.accounts_service(self.bus, self.config, clock=self.clock, follow=True)
        await self.service.start()
        self.started = True

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> dict[str, MetricValue]:
        if self.service is None:
            return {}
        return {**self._projection_metrics(self.service.replica), **self._follow_metrics(self.service.lag_ns),
                "accounts": len(self.service.ledger.accounts), "errors": self.service.errors}

    def _follower(self) -> StreamFollower | None:
        return None if self.service is None else self.service.follower


class RiskRole(_ProjectionRole):
    """The post-trade risk monitor; like accounts it catches up from the stream. Liquidation orders carry
    a client_order_id derived from the venue seq that triggered them, so when two monitors both send one
    the OMS executes it once and answers the other with the same order."""

    role = "risk"

    service: RiskMonitorService | None = None

    async def start(self) -> None:
        self.service = build.risk_monitor(self.bus, self.config, follow=True)
        await self.service.start()
        self.started = True

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> dict[str, MetricValue]:
        if self.service is None:
            return {}
        return {**self._projection_metrics(self.service.replica), **self._follow_metrics(self.service.lag_ns),
                "alerts": self.service.alerts_published, "errors": self.service.errors}

    def _follower(self) -> StreamFollower | None:
        return None if self.service is None else self.service.follower


class MarketDataRole(RoleProcess):
    """Ticks and bars, single-active: every instance follows the venue and builds the same bars, only the
    leader publishes ticks and records; a standby that takes over goes on from its own identical state."""

    role = "marketdata"

    store: MarketDataStore | None = None
    service: MarketDataService | None = None

    async def start(self) -> None:
        election = self._elect("marketdata")
        self.store = await open_marketdata_store(self.config.settings.db)
        self.service = build.marketdata_service(self.bus, self.config, clock=self.clock, store=self.store,
                                                active=lambda: election.is_active)
        await self.service.start()
        await election.start()
        self.started = True

    async def stop(self) -> None:
        if self.election is not None:
            await self.election.stop()  # a standby takes over at once
        if self.service is not None:
            await self.service.stop()
        if self.store is not None:
            await self.store.close()
        self.service = self.store = None

    def metrics(self) -> dict[str, MetricValue]:
        if self.service is None:
            return {}
        ticks = self.service.ticks_published
        return {"ticks": ticks, "ticks_per_s": self._rate(ticks), "bars": self.service.bars_published}


class AgentsRole(RoleProcess):
    """The market makers and noise traders of the config, trading through the OMS like any client."""

    role = "agents"

    service: AgentsService | None = None

    async def start(self) -> None:
        self.service = build.agents_service(self.bus, self.config, clock=self.clock)
        await self.service.start()
        self.started = True

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> dict[str, MetricValue]:
        if self.service is None:
            return {}
        return {"market_makers": len(self.service.makers), "noise_traders": len(self.service.noise)}


class AlgosRole(RoleProcess):
    """One algo worker; workers COMPETE for parents on the durable `algos` consumer."""

    role = "algos"

    worker: AlgoWorker | None = None

    async def start(self) -> None:
        self.worker = AlgoWorker(self.bus, self.instance_id, clock=self.clock, settings=self.config.algos)
        await self.worker.start()
        self.started = True

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()

    def metrics(self) -> dict[str, MetricValue]:
        if self.worker is None:
            return {}
        return {"running": len(self.worker.running), "completed": len(self.worker.completed)}


class SignalsRole(RoleProcess):
    """The decision agent turning webhook signals into orders (COMPETE: one agent per signal)."""

    role = "signals"

    agent: DecisionAgent | None = None

    @classmethod
    def check(cls, config: SystemConfig) -> None:
        if not config.signals.enabled:
            raise RoleError(f"role signals: [signals] enabled = false in {config.source}: nothing to run")

    async def start(self) -> None:
        self.agent = build.decision_agent(self.bus, self.config, clock=self.clock)
        await self.agent.start()
        self.started = True

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()

    def metrics(self) -> dict[str, MetricValue]:
        if self.agent is None:
            return {}
        return {"decisions": len(self.agent.outcomes), "duplicates": self.agent.duplicates}


SERVICE_ROLES: dict[str, type[RoleProcess]] = {
    cls.role: cls for cls in (VenueRole, OmsRole, AccountsRole, RiskRole, MarketDataRole, AgentsRole, AlgosRole,
                              SignalsRole)
}
"""Every role but `api` (which lives in `tradesim.api.role`: services must not import the API)."""
assert set(SERVICE_ROLES) | {"api"} == set(ROLES)


def create_role(role: str, config: SystemConfig, bus: Bus, instance_id: str, *, clock: Clock = time.time_ns,
                progress: Progress | None = None) -> RoleProcess:
    """The role's process object (not started); RoleError for `api` or an unknown role."""
    cls = SERVICE_ROLES.get(role)
    if cls is None:
        raise RoleError(f"unknown service role {role!r} (roles: {', '.join(SERVICE_ROLES)})")
    cls.check(config)
    return cls(config, bus, instance_id, clock=clock, progress=progress)
