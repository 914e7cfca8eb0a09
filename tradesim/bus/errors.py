"""Every error the bus raises, in one place, so callers can catch them without importing a backend."""

from __future__ import annotations


class BusError(Exception):
    """Base class of all bus errors."""


class BusConnectionError(BusError):
    """The bus could not reach its server (names the URL), or the connection is closed."""


class InvalidURLError(BusConnectionError, ValueError):
    """A bus URL with an unknown scheme or malformed address."""


class SubjectError(BusError, ValueError):
    """A malformed subject or pattern (empty token, wildcard where none is allowed, whitespace...)."""


class CodecError(BusError, ValueError):
    """A message could not be encoded or decoded; the text names the subject and what was wrong."""


class NoRespondersError(BusError):
    """An RPC request found no server for its subject."""


class RequestTimeoutError(BusError, TimeoutError):
    """An RPC server exists but did not answer within the timeout."""


class RemoteError(BusError):
    """The RPC handler raised; `error_type` is the remote exception's class name."""

    def __init__(self, subject: str, error_type: str, message: str) -> None:
        super().__init__(f"{subject}: {error_type}: {message}")
        self.subject = subject
        self.error_type = error_type
        self.message = message


class KVError(BusError):
    """Base class of key-value errors."""


class InvalidKeyError(KVError, ValueError):
    """A key or bucket name outside `[-/_=.a-zA-Z0-9]` (or starting/ending with a dot)."""


class KeyExistsError(KVError):
    """`create` found the key already present."""


class WrongRevisionError(KVError):
    """`update`/`delete` with an expected revision that is not the key's current one."""


class StreamError(BusError):
    """A durable stream problem: no stream covers a durable subscription's subject, bad config..."""


class PublishTimeoutError(StreamError, TimeoutError):
    """A publish into a stream got no acknowledgement in time (server unreachable or restarting).

    The message may or may not be stored: publish it again with the same `msg_id` and the stream
    keeps one copy."""


class PartialPublishError(BusError):
    """`publish_many` stopped at a failure: the first `published` messages are sent (stored, on stream
    subjects), the rest may or may not be. The failure is the `__cause__`; publish the rest again (with
    their msg ids, a stream keeps one copy of each)."""

    def __init__(self, published: int, cause: BaseException) -> None:
        super().__init__(f"published {published} message(s), then {type(cause).__name__}: {cause}")
        self.published = published
        self.cause = cause
