"""Service registry on the bus KV: each instance publishes who it is and how it is doing; readers list them.

One key per instance, `{service}.{instance_id}`, in the bucket `tradesim-services`, rewritten every
heartbeat with `put`. Readers judge liveness from `heartbeat_ts` (wall clock, since readers run on
other hosts): older than `stale_after` is STALE, older than `dead_after` DEAD. A graceful stop
deletes the key; a crashed instance stays listed as DEAD until the bucket TTL drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

import tradesim
from tradesim.bus.base import KeyValue, check_key
from tradesim.cluster.election import KVSource

log = logging.getLogger("tradesim.cluster.registry")

SERVICES_BUCKET: Final = "tradesim-services"
REGISTRY_TTL: Final = 300.0
"""Bucket TTL: a crashed instance's entry disappears this long after its last heartbeat."""
DEFAULT_HEARTBEAT: Final = 1.0
DEFAULT_STALE_AFTER: Final = 3.0
DEFAULT_DEAD_AFTER: Final = 15.0

MetricValue = int | float | str | bool
Metrics = dict[str, MetricValue]


class State(enum.Enum):
    """ACTIVE serves; STANDBY waits (single-active services) — BROADCAST/COMPETE instances are ACTIVE."""

    ACTIVE = "ACTIVE"
    STANDBY = "STANDBY"


class Health(enum.Enum):
    LIVE = "LIVE"
    STALE = "STALE"
    DEAD = "DEAD"


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one instance publishes about itself (the KV value, JSON)."""

    service: str
    instance_id: str
    role: str
    state: State
    version: str
    started: float  # wall clock, s
    heartbeat_ts: float  # wall clock, s
    metrics: Metrics = msgspec.field(default_factory=dict)
    # Where the instance runs and answers HTTP (/healthz, /readyz, /metrics): what an operator or a
    # supervisor needs to reach or kill it. Defaults keep entries written before these fields readable.
    host: str = ""
    pid: int = 0
    port: int | None = None


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """An instance as a reader sees it: its info plus the heartbeat age and the verdict on it."""

    info: InstanceInfo
    age: float
    health: Health


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(InstanceInfo).decode


def instance_key(service: str, instance_id: str) -> str:
    return check_key(f"{service}.{instance_id}")


async def open_registry(bus: KVSource) -> KeyValue:
    """The registry bucket (every opener passes the same TTL: a bucket's TTL is fixed at creation)."""
    return await bus.kv(SERVICES_BUCKET, ttl=REGISTRY_TTL)


class Registration:
    """Keeps one instance's entry fresh: `start()` writes it and heartbeats, `stop()` removes it.

    `state` and `metrics` are called at every heartbeat, so the entry follows the service (e.g.
    `state=lambda: State.ACTIVE if election.is_active else State.STANDBY`); call `refresh()` after a
    change that readers should see before the next heartbeat (a won election).
    """

    def __init__(
        self,
        bus: KVSource,
        service: str,
        instance_id: str,
        *,
        role: str | None = None,
        version: str = tradesim.__version__,
        heartbeat: float = DEFAULT_HEARTBEAT,
        state: Callable[[], State] = lambda: State.ACTIVE,
        metrics: Callable[[], Mapping[str, MetricValue]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
        port: int | None = None,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError(f"heartbeat must be positive, got {heartbeat}")
        self.key = instance_key(service, instance_id)
        self.bus = bus
        self.service = service
        self.instance_id = instance_id
        self.role = role or service
        self.version = version
        self.heartbeat = heartbeat
        self._state = state
        self._metrics = metrics
        self._wall = wall_clock
        self.host = socket.gethostname() if host is None else host
        self.pid = os.getpid() if pid is None else pid
        self.port = port
        self.started = wall_clock()
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    def info(self) -> InstanceInfo:
        metrics = dict(self._metrics()) if self._metrics is not None else {}
        return InstanceInfo(service=self.service, instance_id=self.instance_id, role=self.role,
                            state=self._state(), version=self.version, started=self.started,
                            heartbeat_ts=self._wall(), metrics=metrics, host=self.host, pid=self.pid,
                            port=self.port)

    async def start(self) -> None:
        """Write the entry now (so the instance is listed when this returns), then heartbeat."""
        if self._task is not None:
            return
        self._kv = await open_registry(self.bus)
        await self.refresh()
        self._task = asyncio.create_task(self._beat(), name=f"registry:{self.key}")

    async def refresh(self) -> None:
        """Write the entry at once."""
        if self._kv is not None:
            await self._kv.put(self.key, _encode(self.info()))

    async def stop(self) -> None:
        """Stop heartbeating and remove the entry (a crash leaves it to go STALE, then DEAD)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(self.key)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.refresh()
            except Exception as exc:  # the bus may be back at the next beat
                log.warning("registry %s: heartbeat failed: %s", self.key, exc)


def judge(info: InstanceInfo, now: float, stale_after: float, dead_after: float) -> InstanceStatus:
    age = max(0.0, now - info.heartbeat_ts)
    health = Health.DEAD if age > dead_after else Health.STALE if age > stale_after else Health.LIVE
    return InstanceStatus(info=info, age=age, health=health)


async def list_instances(
    bus: KVSource,
    *,
    service: str | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    dead_after: float = DEFAULT_DEAD_AFTER,
    now: float | None = None,
) -> list[InstanceStatus]:
    """Every registered instance (of `service`, if given), sorted by service and instance id."""
    kv = await open_registry(bus)
    now = time.time() if now is None else now
    out: list[InstanceStatus] = []
    for key in await kv.keys():
        if service is not None and not key.startswith(service + "."):
            continue
        entry = await kv.get(key)
        if entry is None:
            continue  # removed since keys()
        try:
            info = _decode(entry.value)
        except msgspec.DecodeError as exc:
            log.warning("registry: skipping undecodable entry %r: %s", key, exc)
            continue
        out.append(judge(info, now, stale_after, dead_after))
    out.sort(key=lambda s: (s.info.service, s.info.instance_id))
    return out
