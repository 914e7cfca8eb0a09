"""POST /api/v1/auth/token: a username and password (or an API key) for a bearer access token.

Logins are rate limited per client address, so passwords cannot be guessed at line rate; a wrong
password and an unknown user get the same 401.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from tradesim.api.bodies import decode
from tradesim.api.context import Context
from tradesim.api.errors import ApiError
from tradesim.api.models import TokenIn, TokenOut
from tradesim.api.openapi import request_body
from tradesim.api.ratelimit import retry_after


@post("/auth/token", status_code=200, operation_class=request_body(TokenIn))
async def token(request: Request[Any, Any, Any]) -> TokenOut:
    ctx: Context = request.app.state["ctx"]
    client = request.client.host if request.client else "unknown"
    wait = ctx.login_limiter.take(f"login:{client}")
    if wait > 0:
        raise ApiError(429, "rate_limited", f"too many token requests; retry in {wait:.2f} s",
                       headers={"Retry-After": retry_after(wait)})
    body = decode(await request.body(), TokenIn)
    key_id = ""
    if body.api_key is not None:
        if body.username is not None or body.password is not None:
            raise ApiError(400, "bad_request", "send either username and password, or api_key")
        found = await ctx.users.authenticate_key(body.api_key)
        if found is None:
            raise ApiError(401, "invalid_credentials", "unknown or revoked API key")
        user, key_id = found
    else:
        if not body.username or body.password is None:
            raise ApiError(400, "missing_field", "send username and password, or api_key")
        authenticated = await ctx.users.authenticate(body.username, body.password)
        if authenticated is None:
            raise ApiError(401, "invalid_credentials", "wrong username or password")
        user = authenticated
    return TokenOut(access_token=ctx.auth.issue(user, key_id), token_type="bearer", expires_in=ctx.auth.ttl)


ROUTES = [token]
