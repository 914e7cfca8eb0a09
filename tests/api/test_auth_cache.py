"""The Authenticator's cache of verified tokens answers exactly as verifying every time would."""

from __future__ import annotations

import pytest

from tradesim.api.auth import Authenticator, Principal, issue_token
from tradesim.api.errors import ApiError
from tradesim.api.ratelimit import RateLimiter
from tradesim.store.users import Role, User

SECRET = "test-secret-0123456789-abcdefghijklmnop"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, cache_size: int = 4096) -> Authenticator:
    return Authenticator(SECRET, 60, RateLimiter(1e6, 1_000_000), clock=clock, cache_size=cache_size)


def user(name: str) -> User:
    return User(username=name, role=Role.TRADER, account=f"acc-{name}")


def error_of(auth: Authenticator, header: str) -> str:
    with pytest.raises(ApiError) as info:
        auth.authenticate(header)
    assert info.value.status == 401
    return info.value.error


def test_a_cached_token_is_refused_once_it_expires() -> None:
    clock = Clock()
    auth = make(clock)
    token = auth.issue(user("ann"))
    assert auth.authenticate(f"Bearer {token}") == Principal(username="ann", role=Role.TRADER, account="acc-ann")
    assert auth.authenticate(f"Bearer {token}").username == "ann"  # from the cache
    clock.now += 60
    assert error_of(auth, f"Bearer {token}") == "token_expired"
    clock.now -= 30  # a clock moved back: the token verifies again, as it would have without a cache
    assert auth.authenticate(f"Bearer {token}").username == "ann"


def test_a_tampered_or_foreign_token_is_refused_even_next_to_a_cached_one() -> None:
    clock = Clock()
    auth = make(clock)
    token = auth.issue(user("ann"))
    auth.authenticate(f"Bearer {token}")
    head, body, sig = token.split(".")
    forged = ".".join([head, body, sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")])
    assert error_of(auth, f"Bearer {forged}") == "invalid_token"
    foreign = issue_token("another-secret-0123456789-abcdefghijk", user("ann"), 60, now=clock.now)
    assert error_of(auth, f"Bearer {foreign}") == "invalid_token"
    assert error_of(auth, f"Bearer {foreign}") == "invalid_token"  # failures are not remembered
    # another Authenticator (another secret) shares nothing with this one's cache
    other = Authenticator("another-secret-0123456789-abcdefghijk", 60, RateLimiter(1e6, 10), clock=clock)
    assert error_of(other, f"Bearer {token}") == "invalid_token"


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    clock = Clock()
    auth = make(clock, cache_size=2)
    tokens = [auth.issue(user(name)) for name in ("ann", "bob", "cy")]
    for token in tokens:
        auth.authenticate(f"Bearer {token}")
    assert list(auth._verified) == tokens[1:]
    auth.authenticate(f"Bearer {tokens[1]}")  # bob is now the most recent
    auth.authenticate(f"Bearer {tokens[0]}")  # ann verifies again (a miss) and evicts cy
    assert list(auth._verified) == [tokens[1], tokens[0]]
    assert [auth.authenticate(f"Bearer {t}").username for t in tokens] == ["ann", "bob", "cy"]
