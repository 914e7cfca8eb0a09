"""Webhook request authentication: HMAC-SHA256 over `timestamp.nonce.body`, a time window, nonce replay.

Kept apart from HTTP so the rules are tested directly; the route maps `WebhookAuthError.code` to 401.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import time
from collections.abc import Callable, Sequence


class WebhookAuthError(Exception):
    """A request that does not prove it comes from a key holder, now: `code` is stable snake_case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NonceCacheFullError(Exception):
    """More fresh nonces than `max_nonces`: refuse rather than forget one (which would allow a replay)."""


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The hex signature a sender puts in X-Signature."""
    message = timestamp.encode() + b"." + nonce.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class NonceStore:
    """Nonces seen, each kept until its request's timestamp leaves the window; bounded by `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _prune(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            expiry, nonce = heapq.heappop(heap)
            if self._expiry.get(nonce) == expiry:
                del self._expiry[nonce]

    def add(self, nonce: str, expiry: float, now: float) -> bool:
        """False if `nonce` is remembered (a replay); else remembers it until `expiry`."""
        self._prune(now)
        if nonce in self._expiry:
            return False
        if len(self._expiry) >= self.limit:
            raise NonceCacheFullError(f"{self.limit} nonces in the window")
        self._expiry[nonce] = expiry
        heapq.heappush(self._heap, (expiry, nonce))
        return True


class WebhookVerifier:
    """Checks X-Timestamp (epoch seconds), X-Nonce and X-Signature against the configured secrets."""

    MAX_NONCE = 128

    def __init__(self, secrets: Sequence[str], *, window: float = 300.0, max_nonces: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        if not secrets or not all(secrets):
            raise ValueError("at least one non-empty webhook secret is needed")
        self._keys = [s.encode() for s in secrets]
        self.window = window
        self.nonces = NonceStore(max_nonces)
        self._clock = clock

    def verify(self, timestamp: str | None, nonce: str | None, signature: str | None, body: bytes) -> str:
        """The id of the key that signed (its index), or WebhookAuthError. The nonce is spent only by a
        correctly signed, fresh request, so nobody without a key can fill the nonce store."""
        if not timestamp or not nonce or not signature:
            missing = [h for h, v in (("X-Timestamp", timestamp), ("X-Nonce", nonce), ("X-Signature", signature))
                       if not v]
            raise WebhookAuthError("missing_signature", f"missing header(s): {', '.join(missing)}")
        try:
            ts = float(timestamp)
        except ValueError:
            raise WebhookAuthError("bad_timestamp", f"X-Timestamp {timestamp[:40]!r} is not epoch seconds") from None
        if ts != ts or len(nonce) > self.MAX_NONCE:  # NaN, or a nonce too long to keep
            raise WebhookAuthError("bad_timestamp" if ts != ts else "bad_nonce", "malformed X-Timestamp or X-Nonce")
        now = self._clock()
        if abs(now - ts) > self.window:
            raise WebhookAuthError("stale_timestamp", f"X-Timestamp is {now - ts:+.0f} s from the server's clock "
                                                      f"(window ±{self.window:g} s)")
        given = signature.removeprefix("sha256=").lower().encode("utf-8", "replace")
        message = timestamp.encode() + b"." + nonce.encode() + b"." + body
        key_id = ""
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest().encode(), given):
                key_id = str(i)
        if not key_id:
            raise WebhookAuthError("bad_signature", "X-Signature is not HMAC-SHA256(secret, timestamp.nonce.body)")
        if not self.nonces.add(nonce, ts + self.window, now):
            raise WebhookAuthError("replayed_nonce", f"nonce {nonce[:40]!r} was already used")
        return key_id
