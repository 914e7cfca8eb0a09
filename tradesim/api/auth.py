"""Who is calling: HS256 access tokens (issue, verify), the secret behind them, roles and what they may do.

A token carries the user's name, role and account, so a request needs no database lookup (but for a
token exchanged for an API key: whether the key was revoked, looked up every `[api] key_recheck` seconds);
changing a user's role takes effect when their current token expires (`[api] token_ttl`). Roles:

- admin: everything, on every account;
- trader: reads and trades its own account only (another account's orders are 404, as if absent);
- viewer: reads its own account only, never writes (403);
- compliance: reads every account, approves or rejects HELD orders, never trades.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import jwt
import msgspec
from litestar import Request
from litestar.di import NamedDependency

from tradesim.api.errors import ApiError
from tradesim.api.ratelimit import RateLimiter, retry_after
from tradesim.services.config import SystemConfig
from tradesim.store.users import Role, User, UserStore

log = logging.getLogger(__name__)

SECRET_FILE: Final = "jwt.secret"
ALGORITHM: Final = "HS256"
ISSUER: Final = "tradesim"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller of one request."""

    username: str
    role: Role
    account: str
    key_id: str = ""  # the API key the token was exchanged for, if any

    @property
    def reads_all(self) -> bool:
        return self.role in (Role.ADMIN, Role.COMPLIANCE)

    @property
    def bucket(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"user:{self.username}"

    def scope(self) -> str | None:
        """The account this caller's reads are limited to; None = every account."""
        return None if self.reads_all else self.account

    def require_trade(self) -> None:
        if self.role not in (Role.ADMIN, Role.TRADER):
            raise ApiError(403, "forbidden", f"role {self.role.value} may not place, change or cancel orders")

    def require_decide(self) -> None:
        if self.role not in (Role.ADMIN, Role.COMPLIANCE):
            raise ApiError(403, "forbidden", f"role {self.role.value} may not approve or reject held orders")

    def account_for(self, requested: str | None) -> str:
        """The account a read or write acts on: the caller's own unless an admin (or, for reads, compliance)
        names another."""
        if requested is None or requested == self.account:
            return self.account
        if self.reads_all:
            return requested
        raise ApiError(403, "forbidden", f"role {self.role.value} acts on its own account {self.account} only")


def jwt_secret(config: SystemConfig) -> str:
    """`[api] jwt_secret`, else the one in `<data_dir>/jwt.secret`, created (mode 0600) on first use."""
    if config.api.jwt_secret:
        return config.api.jwt_secret
    path = Path(config.settings.data_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


async def token_secret(config: SystemConfig, users: UserStore) -> str:
    """The key tokens are signed with: `[api] jwt_secret`; else the users store's shared secret when every
    process reaches it (PostgreSQL: API replicas and `tradesim token create --db` agree); else `jwt_secret`."""
    if config.api.jwt_secret:
        return config.api.jwt_secret
    shared = await users.shared_secret("jwt")
    return shared if shared is not None else jwt_secret(config)


def issue_token(secret: str, user: User, ttl: int, *, now: float | None = None, key_id: str = "") -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user.username, "role": user.role.value, "account": user.account,
                              "iat": issued, "exp": issued + ttl, "iss": ISSUER}
    if key_id:
        claims["kid"] = key_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, *, now: float | None = None) -> Principal:
    """The token's principal; 401 `token_expired` or `invalid_token` otherwise."""
    principal, exp = _verify_signed(secret, token)
    if exp <= (time.time() if now is None else now):
        raise _expired()
    return principal


def _verify_signed(secret: str, token: str) -> tuple[Principal, float]:
    """The principal and expiry of a token signed with `secret` (401 `invalid_token` otherwise); expiry
    is the caller's to check against its own clock (tests move it), not PyJWT's."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["sub", "role", "account", "exp", "iat"], "verify_exp": False})
        exp = claims["exp"]
        if not isinstance(exp, int | float):
            raise _expired()
        principal = Principal(username=str(claims["sub"]), role=Role(claims["role"]),
                              account=str(claims["account"]), key_id=str(claims.get("kid", "")))
        return principal, float(exp)
    except (jwt.InvalidTokenError, ValueError, KeyError):
        raise _unauthorized("invalid_token", "the access token is not valid") from None


def _expired() -> ApiError:
    return _unauthorized("token_expired", "the access token has expired; get a new one from "
                                          "POST /api/v1/auth/token")


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": f'Bearer error="{code}"'})


VERIFIED_CACHE: Final = 4096
"""Tokens whose signature `Authenticator` remembers having checked (least recently used dropped first)."""


class Authenticator:
    """Resolves `Authorization: Bearer …` to a Principal and spends one token of its rate-limit bucket.

    Checking a token's HMAC and claims with PyJWT was the largest cost of an order request, so the
    principal and expiry of each token that verified are remembered, keyed by the exact token string:
    the same string signed by the same (fixed) secret always verifies to the same claims, so a hit
    is as good as re-verifying. Expiry is still checked on every request against the app's clock, so an
    expired token is refused as before; tokens that fail verification are never remembered, so the
    cache changes no answer.

    A token exchanged for an API key (`kid`) is good only while the key exists: `key_exists` is asked
    at most once per `key_recheck` seconds per key (revocation reaches every API replica within that)."""

    def __init__(self, secret: str, ttl: int, limiter: RateLimiter, *,
                 clock: Callable[[], float] = time.time, cache_size: int = VERIFIED_CACHE,
                 key_exists: Callable[[str], Awaitable[bool]] | None = None, key_recheck: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.secret = secret
        self.ttl = ttl
        self.limiter = limiter
        self.clock = clock
        self._cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, exp); insertion = LRU order
        self._key_exists = key_exists
        self.key_recheck = key_recheck
        self._monotonic = monotonic
        self._keys: dict[str, tuple[bool, float]] = {}  # key id -> (exists, when looked up)

    async def check_key(self, principal: Principal) -> None:
        """401 `key_revoked` if the caller's token came from an API key that no longer exists. When the
        user store cannot be reached, the last answer stands (a key never looked up counts as valid: its
        token's signature proves it was when exchanged)."""
        kid = principal.key_id
        if not kid or self._key_exists is None:
            return
        now = self._monotonic()
        known = self._keys.get(kid)
        if known is None or now - known[1] >= self.key_recheck:
            try:
                exists = await self._key_exists(kid)
            except Exception as exc:  # any store failure: keep the last answer
                log.warning("could not look up API key %s: %s: %s", kid, type(exc).__name__, exc)
                exists = known[0] if known is not None else True
            if len(self._keys) >= self._cache_size and kid not in self._keys:
                del self._keys[next(iter(self._keys))]
            known = self._keys[kid] = (exists, now)
        if not known[0]:
            raise _unauthorized("key_revoked", f"the API key {kid} this token was exchanged for has been revoked")

    def verify(self, token: str) -> Principal:
        """`verify_token` with this authenticator's secret and clock, remembering tokens that verified."""
        verified = self._verified
        hit = verified.pop(token, None)
        if hit is None:
            hit = _verify_signed(self.secret, token)
            if len(verified) >= self._cache_size:
                del verified[next(iter(verified))]
        principal, exp = hit
        if exp <= self.clock():
            raise _expired()  # dropped from the cache: it can never be valid again
        verified[token] = hit
        return principal

    def issue(self, user: User, key_id: str = "") -> str:
        """A token for `user`; `key_id` names the API key it was exchanged for (just checked: it exists)."""
        if key_id and self._key_exists is not None:
            self._keys[key_id] = (True, self._monotonic())
        return issue_token(self.secret, user, self.ttl, now=self.clock(), key_id=key_id)

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise _unauthorized("missing_token", "send Authorization: Bearer <token> "
                                                 "(get one from POST /api/v1/auth/token)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("invalid_token", "the Authorization header must be 'Bearer <token>'")
        principal = self.verify(token.strip())
        wait = self.limiter.take(principal.bucket)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"rate limit of {self.limiter.rate:g} requests/s "
                                                f"(burst {self.limiter.burst}) exceeded; retry in {wait:.2f} s",
                           headers={"Retry-After": retry_after(wait)})
        return principal


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Litestar dependency: the caller of this request (401/429 raised here)."""
    auth: Authenticator = request.app.state["auth"]
    principal = auth.authenticate(request.headers.get("authorization"))
    await auth.check_key(principal)
    return principal


Caller = NamedDependency[Principal]
"""A handler parameter `principal: Caller` gets the authenticated caller (with `provide_principal`)."""
