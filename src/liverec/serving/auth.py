"""Who may call which route: API keys and their scopes, per-key rate limits, and the audit of admin actions.

Every route but ``/health``, ``/ready`` and the API's own documentation declares the scope it needs with one
of :data:`INGEST`, :data:`READ`, :data:`CATALOG` or :data:`ADMIN` in its ``dependencies``. A request carries
its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Until a key exists (``liverec keys create``),
or with the ``auth`` setting false, no key is needed; once one exists, a request without a known key is 401
and one whose key lacks the scope is 403. With ``rate_limit_per_s`` set, each key (each client address when
no key is needed) has a token bucket; a request that finds it empty is 429 with ``Retry-After``. Admin routes
leave a record in the audit trail (:class:`~liverec.access.AuditLog`).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from liverec.access import ApiKey, AuditLog, KeyStore, user_target
from liverec.serving.schemas import ErrorOut

__all__ = ["ADMIN", "AUTH_RESPONSES", "CATALOG", "INGEST", "READ", "Guard", "RateLimiter", "require"]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer KEY` (a key from `liverec keys create`)")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: KEY`, the same key")

#: What a protected route may answer besides its own codes (the OpenAPI document lists them).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no API key, or an unknown or revoked one (once any key exists)"},
    403: {"model": ErrorOut, "description": "the key lacks the scope this route needs"},
    429: {"model": ErrorOut, "description": "the key's rate limit is spent; retry after `Retry-After` seconds"},
}


class RateLimiter:
    """A token bucket per caller: ``rate`` requests per second on average, ``burst`` at once.

    Used from the event loop only (no lock): :meth:`take` is called by the async auth dependency.
    """

    #: Callers remembered at most; beyond it, buckets that have refilled are forgotten (they hold nothing).
    MAX_CALLERS = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)

    def take(self, caller: str, now: float | None = None) -> float:
        """Spend one token of ``caller``: 0.0 when allowed, else the seconds until a token is there."""
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= self.MAX_CALLERS and caller not in self._buckets:
            self._forget_full(now)
        self._buckets[caller] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            caller: (tokens, then)
            for caller, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < self.burst
        }


@dataclass
class Guard:
    """What the auth dependencies consult, kept on ``app.state.guard`` by ``create_app``.

    ``keys``: the deployment's keys (also managed through ``/v1/keys``); ``enforce``: the ``auth`` setting
    (false: no route needs a key, whatever exists); ``limiter``: None when rate limits are off.
    """

    keys: KeyStore
    audit: AuditLog
    enforce: bool = True
    limiter: RateLimiter | None = None

    def authorize(self, scope: str, token: str | None, client: str) -> ApiKey | None:
        """The caller's key (None where no key is needed), or the HTTP error that refuses it."""
        key: ApiKey | None = None
        if self.enforce and self.keys.enabled():
            if not token:
                raise HTTPException(
                    401,
                    detail="an API key is required: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            key = self.keys.verify(token)
            if key is None:
                raise HTTPException(401, detail="unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            if not key.allows(scope):
                raise HTTPException(
                    403,
                    detail=f"key {key.name!r} has scope(s) {', '.join(sorted(key.scopes))}; "
                    f"this route needs {scope!r} (or admin)",
                )
        if self.limiter is not None:
            wait = self.limiter.take(key.key_id if key is not None else f"address:{client}")
            if wait > 0:
                raise HTTPException(
                    429,
                    detail=f"rate limit of {self.limiter.rate:g} requests/s exceeded; retry in {wait:.2f} s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return key


def _token(bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str | None:
    return bearer.credentials if bearer is not None else header


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
HeaderKey = Annotated[str | None, Security(_header)]


def require(scope: str) -> Any:
    """The dependency that admits a request to a route needing ``scope`` (use the constants below)."""

    async def admit(request: Request, bearer: BearerCredentials, header: HeaderKey) -> ApiKey | None:
        guard: Guard = request.app.state.guard
        client = request.client.host if request.client is not None else "unknown"
        return guard.authorize(scope, _token(bearer, header), client)

    return Depends(admit)


def _target(request: Request) -> str | None:
    """What an admin action acts on, from the path (a user id only as a hash)."""
    params = dict(request.path_params)
    if "user_id" in params:
        return user_target(str(params["user_id"]))
    return ", ".join(f"{name}={value}" for name, value in params.items()) or None


async def _admit_admin(request: Request, bearer: BearerCredentials, header: HeaderKey) -> AsyncIterator[ApiKey | None]:
    """Admin routes: admitted like any other, and every outcome past the key check is audited."""
    guard: Guard = request.app.state.guard
    client = request.client.host if request.client is not None else "unknown"
    route = request.scope.get("route")
    action = f"{request.method} {getattr(route, 'path', request.url.path)}"
    target = _target(request)
    try:
        key = guard.authorize("admin", _token(bearer, header), client)
    except HTTPException as error:
        if error.status_code == 403:  # a known key reaching too far is worth a record; noise (401, 429) is not
            await run_in_threadpool(
                guard.audit.record,
                actor=_key_name(request, guard, bearer, header),
                action=action,
                target=target,
                status=403,
            )
        raise
    actor = key.name if key is not None else f"no key ({client})"
    try:
        yield key
    except HTTPException as error:
        await run_in_threadpool(guard.audit.record, actor=actor, action=action, target=target, status=error.status_code)
        raise
    except Exception:
        await run_in_threadpool(guard.audit.record, actor=actor, action=action, target=target, status=500)
        raise
    await run_in_threadpool(guard.audit.record, actor=actor, action=action, target=target, status="ok")


def _key_name(request: Request, guard: Guard, bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str:
    token = _token(bearer, header)
    key = guard.keys.verify(token) if token else None
    return key.name if key is not None else "unknown"


INGEST = require("ingest")
READ = require("read")
CATALOG = require("catalog")
# scope "function": the record is written when the route returns, *before* the answer is sent — an admin who
# got a 200 has a record (with the default "request" scope it was written after the answer, and a CI run under
# load lost a promotion's record to the server's stop)
ADMIN = Depends(_admit_admin, scope="function")
