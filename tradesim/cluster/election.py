"""Single-active leader election on the bus KV: one leader per name, a fencing token, self-fencing.

Algorithm (see docs/cluster.md for the safety argument):

- `create(key)` wins; the winning revision is the fencing token (revisions grow per bucket, so every
  later leader holds a larger token).
- The leader renews with `update(expected_revision)` every `heartbeat`; a WrongRevisionError means
  somebody else holds the key: step down at once.
- The leader stops acting (self-fences) when its last successful renewal *was sent* more than
  `ttl - margin` ago by the monotonic clock; `is_active` checks this on every read, so a leader whose
  loop was frozen (GC pause, SIGSTOP) is inactive the moment it resumes.
- Standbys retry `create` every 100-250 ms (jittered, seeded) and watch the key so a release wakes
  them at once. Bucket TTL and expiry notifications are not relied on (nats-server 2.9 has only a
  bucket-wide TTL and tells watchers nothing): a standby replaces a key whose revision it has seen
  unchanged for longer than the leader's TTL, by `update(expected_revision)`.
- Graceful `release()`/`stop()` deletes the key with `delete(expected_revision)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

import msgspec

from tradesim.bus.base import KeyValue, Watch, check_key
from tradesim.bus.errors import KeyExistsError, WrongRevisionError

log = logging.getLogger("tradesim.cluster.election")

LEADERS_BUCKET: Final = "tradesim-leaders"
"""The KV bucket holding one leader key per single-active name (no bucket TTL: see module docstring)."""

INCARNATION_KEY: Final = "_incarnation"
"""A key of the leaders bucket holding a random id written once per bucket: it changes when the NATS store
is wiped, which also restarts the revisions (= fencing tokens) at 1. Not usable as an election name."""

DEFAULT_TTL: Final = 1.0
RETRY_MIN: Final = 0.10
RETRY_MAX: Final = 0.25

ElectedCallback = Callable[[int], Awaitable[None] | None]
DemotedCallback = Callable[[str], Awaitable[None] | None]
Clock = Callable[[], float]
_T = TypeVar("_T")


class KVSource(Protocol):
    """What the election needs of a bus: `Bus.kv` (a protocol so tests can wrap the bus)."""

    async def kv(self, bucket: str, *, ttl: float | None = None) -> KeyValue: ...


class LeaderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The leader key's value: who leads, with which TTL (standbys honour the larger), and when it renewed.

    `renewed_at` is wall-clock time for humans (`cluster status`); the election itself compares only
    revisions and local monotonic time, so clock skew between hosts cannot break it.
    """

    instance_id: str
    ttl: float
    renewed_at: float
    token: int = 0  # the fencing token; 0 in the first write (the token is the revision of that write)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaderRecord).decode


def decode_leader(value: bytes) -> LeaderRecord | None:
    """The record in a leader key's value, or None if it is not one of ours (treated as a plain holder)."""
    try:
        return _decode(value)
    except msgspec.DecodeError:
        return None


class StaleTokenError(Exception):
    """A command carried a fencing token older than the newest one seen: it comes from a former leader."""


class FencingGuard:
    """Rejects tokens older than the newest seen, so a paused former leader cannot act after a takeover.

    Keep one guard per protected resource (e.g. per venue and election name) on the *receiving* side.
    """

    def __init__(self) -> None:
        self.newest = 0

    def admit(self, token: int) -> bool:
        """True (and remember the token) if `token` is at least the newest seen; False for a stale one."""
        if token < self.newest:
            return False
        self.newest = token
        return True

    def check(self, token: int) -> None:
        """Like `admit`, but raises StaleTokenError for a stale token."""
        if not self.admit(token):
            raise StaleTokenError(f"fencing token {token} is older than {self.newest}: not the current leader")


class SingleActive:
    """One participant in the election of `name`; exactly one participant at a time is active.

    `on_elected(token)` runs when this instance becomes the leader, `on_demoted(reason)` when it stops
    being one (reason: "released", "lost", "fenced", "resigned"); both may be sync or async and should be quick
    (they run in the election loop). Serve only while `is_active`, and pass `fencing_token` with every
    command to a resource guarded by a `FencingGuard`.
    """

    def __init__(
        self,
        bus: KVSource,
        name: str,
        instance_id: str,
        *,
        ttl: float = DEFAULT_TTL,
        heartbeat: float | None = None,
        margin: float | None = None,
        on_elected: ElectedCallback | None = None,
        on_demoted: DemotedCallback | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        seed: int | str | None = None,
        bucket: str = LEADERS_BUCKET,
        retry: tuple[float, float] = (RETRY_MIN, RETRY_MAX),
    ) -> None:
        check_key(name)
        if name == INCARNATION_KEY:
            raise ValueError(f"{INCARNATION_KEY!r} is reserved, not an election name")
        if not instance_id:
            raise ValueError("instance_id must not be empty")
        heartbeat = ttl / 5 if heartbeat is None else heartbeat
        margin = ttl / 4 if margin is None else margin
        if not (0 < margin < ttl):
            raise ValueError(f"margin must be in (0, ttl): margin={margin}, ttl={ttl}")
        if not (0 < heartbeat < ttl - margin):
            raise ValueError(f"heartbeat must be in (0, ttl - margin): heartbeat={heartbeat}, "
                             f"ttl - margin={ttl - margin}")
        if not (0 < retry[0] <= retry[1]):
            raise ValueError(f"retry interval must be 0 < min <= max, got {retry}")
        self.bus = bus
        self.name = name
        self.instance_id = instance_id
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.margin = margin
        self.bucket = bucket
        self.on_elected = on_elected
        self.on_demoted = on_demoted
        self._clock = clock
        self._wall = wall_clock
        self._retry = retry
        self._rng = random.Random(seed if seed is not None else f"{name}/{instance_id}")
        self._kv: KeyValue | None = None
        self._watch: Watch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._active_evt = asyncio.Event()
        self._active = False
        self._token: int | None = None
        self._revision = 0  # the leader key's revision as last written by us
        self._renewed_at = 0.0  # monotonic send time of the last successful write
        self._seen_rev = 0  # standby: the holder's revision and when we first saw it
        self._seen_at = 0.0
        self._resign_token: int | None = None  # resign(token) asked the loop to give up that leadership
        self._leader_wake = asyncio.Event()  # wakes a leader's wait for its next renewal: stop or resign
        self.elections = 0  # how many times this instance won (for tests and metrics)

    # ---- public API ------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        """True only while leader *and* the last renewal is younger than ttl - margin (self-fence)."""
        return self._active and self._clock() < self._renewed_at + (self.ttl - self.margin)

    @property
    def fencing_token(self) -> int | None:
        """The revision that won this leadership, while active; None otherwise."""
        return self._token if self.is_active else None

    async def start(self) -> None:
        """Open the bucket, start watching the key and contending; returns at once (use wait_active)."""
        if self._tasks:
            return
        self._kv = await self.bus.kv(self.bucket)
        self._watch = await self._kv.watch(self.name, include_initial=False)
        self._tasks = [
            asyncio.create_task(self._run(), name=f"election:{self.name}:{self.instance_id}"),
            asyncio.create_task(self._watch_loop(self._watch), name=f"election-watch:{self.name}"),
        ]

    async def incarnation(self) -> str:
        """The leaders bucket's incarnation id (created on first use), read afresh from the bus.

        Tokens are comparable only within one incarnation: a resource that also stores fencing tokens
        outside NATS (the OMS's PostgreSQL store) records the incarnation with the token, so a wiped NATS
        store — whose tokens restart at 1 — does not leave it fenced forever by a token of the old one.
        """
        kv = self._kv or await self.bus.kv(self.bucket)
        try:
            await kv.create(INCARNATION_KEY, uuid.uuid4().hex.encode())
        except KeyExistsError:
            pass
        entry = await kv.get(INCARNATION_KEY)
        if entry is None:
            raise RuntimeError(f"the {INCARNATION_KEY} key of bucket {self.bucket!r} vanished")
        return entry.value.decode()

    async def wait_active(self, timeout: float | None = None) -> bool:
        """Wait until this instance is the leader; False if `timeout` seconds pass first."""
        try:
            await asyncio.wait_for(self._active_evt.wait(), timeout)
        except TimeoutError:
            return False
        return self.is_active

    async def stop(self) -> None:
        """Leave the election; a leader releases the key (delete at its revision) so a standby takes over at once."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        self._leader_wake.set()
        run = self._tasks[0] if self._tasks else None
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), timeout=max(self.ttl, 1.0))
            except TimeoutError:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if self._active:
            await self._step_down("released", delete=True)
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.stop()

    async def release(self) -> None:
        """Graceful hand-over: step down, delete the key with `delete(expected_revision)`, leave the election."""
        await self.stop()

    def resign(self, token: int) -> None:
        """Give up the leadership won with `token` (no-op if that is not the current one) and keep contending.

        For an owner that cannot act on this leadership (its activation gave up): holding the lease while
        doing nothing would keep every standby out for as long as this process renews. The election loop
        steps down ("resigned", on_demoted runs there), deletes the key, and contends again after a retry
        interval, so a standby that can act gets the first chance. Safe to call from any task.
        """
        if self._active and self._token == token and not self._stopping.is_set():
            self._resign_token = token
            self._leader_wake.set()

    # ---- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._active:
                    await self._lead_once()
                else:
                    await self._contend_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bus hiccup: keep going, the fence keeps us safe
                log.warning("election %s/%s: %s", self.name, self.instance_id, exc)
                await self._pause(self._rng.uniform(*self._retry))

    async def _lead_once(self) -> None:
        assert self._kv is not None
        deadline = self._renewed_at + (self.ttl - self.margin)
        next_renew = self._renewed_at + self.heartbeat
        delay = min(next_renew, deadline) - self._clock()
        if delay > 0 and self._resign_token is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._leader_wake.wait(), delay)
            self._leader_wake.clear()
            if self._stopping.is_set():
                return
        if self._resign_token is not None:
            resigned, self._resign_token = self._resign_token, None
            if resigned == self._token:
                await self._step_down("resigned", delete=True)
                with contextlib.suppress(TimeoutError):  # let a standby that can act win the key first
                    await asyncio.wait_for(self._stopping.wait(), self._retry[1])
                return
            if self._clock() < next_renew:
                return
        sent = self._clock()
        if sent >= deadline:
            await self._step_down("fenced", delete=True)
            return
        record = self._record(self._token or 0)
        try:
            rev = await asyncio.wait_for(
                self._kv.update(self.name, record, expected_revision=self._revision), timeout=deadline - sent
            )
        except WrongRevisionError:
            await self._step_down("lost", delete=False)
            return
        except TimeoutError:
            return  # the next round finds the deadline passed and fences
        except Exception as exc:
            log.warning("election %s/%s: renewal failed: %s", self.name, self.instance_id, exc)
            await self._pause(min(self.heartbeat, 0.05))
            return
        self._revision = rev
        self._renewed_at = sent

    async def _contend_once(self) -> None:
        assert self._kv is not None
        sent = self._clock()
        try:
            rev = await self._kv.create(self.name, self._record(0))
        except KeyExistsError:
            pass
        else:
            await self._elected(rev, sent)
            return
        entry = await self._kv.get(self.name)
        now = self._clock()
        if entry is None:
            await self._pause(0.005)  # deleted between create and get: try create again
            return
        holder = decode_leader(entry.value)
        stale_after = max(self.ttl, holder.ttl if holder else self.ttl)
        if entry.revision != self._seen_rev:
            self._seen_rev, self._seen_at = entry.revision, now
        elif now - self._seen_at >= stale_after:
            sent = self._clock()
            try:
                rev = await self._kv.update(self.name, self._record(0), expected_revision=entry.revision)
            except WrongRevisionError:
                pass
            else:
                log.info("election %s: %s took over a stale key from %s", self.name, self.instance_id,
                         holder.instance_id if holder else "?")
                await self._elected(rev, sent)
                return
        # Look again at the moment the key would turn stale rather than up to a retry interval later: a
        # crashed leader is replaced about `ttl` after its last renewal, not ttl + jitter.
        due = self._seen_at + stale_after - self._clock()
        await self._pause(max(0.001, min(self._rng.uniform(*self._retry), due + 0.001)))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on a watch event or stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _watch_loop(self, watch: Watch) -> None:
        async for _entry in watch:
            self._wake.set()

    # ---- transitions -----------------------------------------------------------------------
    def _record(self, token: int) -> bytes:
        return _encode(LeaderRecord(instance_id=self.instance_id, ttl=self.ttl, renewed_at=self._wall(), token=token))

    async def _elected(self, rev: int, sent: float) -> None:
        self._active = True
        self._token = rev
        self._revision = rev
        self._renewed_at = sent
        self.elections += 1
        self._active_evt.set()
        log.info("election %s: %s is active (token %d)", self.name, self.instance_id, rev)
        await self._notify(self.on_elected, rev)

    async def _step_down(self, reason: str, *, delete: bool) -> None:
        """Stop acting first, tell the service, then (best effort) free the key for the standbys."""
        self._active = False
        self._active_evt.clear()
        self._resign_token = None
        revision, self._token = self._revision, None
        self._seen_rev = 0
        log.info("election %s: %s stepped down (%s)", self.name, self.instance_id, reason)
        await self._notify(self.on_demoted, reason)
        if delete and self._kv is not None:
            try:
                await asyncio.wait_for(self._kv.delete(self.name, expected_revision=revision), timeout=self.ttl)
            except WrongRevisionError:
                pass  # somebody already holds it
            except Exception as exc:
                log.warning("election %s/%s: release failed (standbys take over after ttl): %s",
                            self.name, self.instance_id, exc)

    async def _notify(self, callback: Callable[[_T], Awaitable[None] | None] | None, arg: _T) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("election %s/%s: callback %r failed", self.name, self.instance_id, callback)
