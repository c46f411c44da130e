"""The request-body limit of every route: a body over ``max_body_bytes`` is answered 413 before a route sees it.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is refused at once (within it, the server
delivers no more than declared, and the request passes untouched); a chunked body, which declares no length,
is read up to the limit and handed to the route unchanged. So no route, and no JSON parser behind it, ever
holds more than the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Scope

from liverec.events.schema import NDJSON_TYPES

__all__ = ["BodyLimitMiddleware", "ContentTypeMiddleware"]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimitMiddleware:
    """413 ``{"detail": ...}`` for a request body of more than ``max_bytes`` bytes, on every route."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:  # the server delivers no more than the declared length
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send, f"body of {int(declared)} bytes exceeds {self.max_bytes}")
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body at all
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: let the route see it
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"body exceeds {self.max_bytes} bytes")
                return
            more = bool(message.get("more_body", False))
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        replay = [{"type": "http.request", "body": body, "more_body": False}] + [
            m for m in messages if m["type"] != "http.request"
        ]

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


#: Media types a body may have: JSON everywhere, NDJSON where a route reads it.
JSON_TYPES = frozenset({"application/json"})
NDJSON_ROUTES = frozenset({"/v1/events"})


class ContentTypeMiddleware:
    """415 for a request body that is not ``application/json`` (or NDJSON, on ``/v1/events``).

    A browser sends a cross-site form or ``text/plain`` post without asking first (no CORS preflight), so a
    route that accepted such a body could be written to from any web page (CSRF); JSON needs a preflight,
    which CORS refuses unless the origin is allowed. A request with neither a body nor a ``Content-Type``
    passes (``POST /v1/models/rollback``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-type")
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
        if declared is None and not has_body:
            await self.app(scope, receive, send)
            return
        media = (declared or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
        allowed = JSON_TYPES | (set(NDJSON_TYPES) if scope["path"] in NDJSON_ROUTES else set())
        if media in allowed:
            await self.app(scope, receive, send)
            return
        expected = " or ".join(sorted(allowed))
        got = f"Content-Type {media!r}" if declared is not None else "no Content-Type"
        payload = json.dumps({"detail": f"{got}: the body must be sent as {expected}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 415,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
