"""`[algos]`: the execution-algo workers' timing, checked when the configuration is loaded."""

from __future__ import annotations

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Worker timing. `lease` must exceed `poll` and a child's round trip; `ack_wait` (how long a dead
    worker's parents wait before another worker gets them) is fixed when the shared durable is first created
    (the first worker's value wins)."""

    ack_wait: float = 30.0
    lease: float = 10.0
    poll: float = 0.25
    request_timeout: float = 2.0
    max_parents: int = 64
    max_rejects: int = 5  # consecutive refused children before the parent is FAILED

    def __post_init__(self) -> None:
        for name in ("ack_wait", "lease", "poll", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lease <= self.poll:
            raise ValueError(f"lease ({self.lease}) must be longer than poll ({self.poll})")
        if self.max_parents < 1 or self.max_rejects < 1:
            raise ValueError("max_parents and max_rejects must be at least 1")
