"""What the client raises: one :class:`ApiError` per refused request (with the server's ``detail``), one
:class:`ServiceUnavailable` when the server could not be reached, and :class:`QueueFull` from a sender.

Each message is one line a person can act on: the method, the path, the status code and what the server said
(for a 422, every field it named).
"""

from __future__ import annotations

from typing import Any

from liverec.errors import LiveRecError

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationFailed",
]


class ClientError(LiveRecError):
    """Base of everything :mod:`liverec.client` raises."""


class ApiError(ClientError):
    """The server answered with an error status.

    ``status_code`` is the HTTP status, ``detail`` the body's ``detail`` (a sentence for most errors, a list of
    field errors for a 422), ``body`` the whole decoded body (``None`` when it was not JSON).
    """

    def __init__(self, method: str, path: str, status_code: int, detail: Any, body: Any = None) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        self.detail = detail
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status_code}: {_describe(detail)}")


class BadRequest(ApiError):
    """400, or a 4xx with no subclass of its own (405, 415, ...)."""


class Unauthorized(ApiError):
    """401: no API key, or an unknown or revoked one (once the server has any key)."""


class Forbidden(ApiError):
    """403: the key lacks the scope the route needs (``ingest``, ``read``, ``catalog`` or ``admin``)."""


class NotFound(ApiError):
    """404: no such user, item, list, model version, experiment or key."""


class Conflict(ApiError):
    """409: the resource exists already, or its state does not allow the change."""


class PayloadTooLarge(ApiError):
    """413: more events than ``max_batch``, or a body over ``max_body_bytes``."""


class ValidationFailed(ApiError):
    """422: the request was refused field by field; :attr:`errors` lists each problem.

    For ``POST /v1/events`` each error is ``{index, field, value, reason}`` (the event's position in the batch);
    elsewhere FastAPI's ``{loc, msg, type, input}``. No event of a refused batch was stored.
    """

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [error for error in self.detail if isinstance(error, dict)] if isinstance(self.detail, list) else []

    @property
    def event_indices(self) -> set[int]:
        """The positions of the events that were refused (``POST /v1/events`` only; empty elsewhere)."""
        return {int(error["index"]) for error in self.errors if isinstance(error.get("index"), int)}


class RateLimited(ApiError):
    """429: the key's rate limit is spent; :attr:`retry_after` is the server's ``Retry-After`` in seconds."""

    def __init__(
        self, method: str, path: str, status_code: int, detail: Any, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(method, path, status_code, detail, body)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the server failed (after the retries, for a 502, 503 or 504 on an idempotent call)."""


class ServiceUnavailable(ClientError):
    """No answer: the connection failed or timed out on every attempt allowed. ``__cause__`` is the last
    transport error (an ``httpx.TransportError``)."""


class QueueFull(ClientError):
    """A sender holds ``max_queue`` unacknowledged events and ``send`` was told not to wait (or waited in vain)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
}


def error_class(status_code: int) -> type[ApiError]:
    """The :class:`ApiError` subclass of a status code."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    return ServerError if status_code >= 500 else BadRequest


def _describe(detail: Any, limit: int = 5) -> str:
    """``detail`` as one line: a sentence as it is; field errors as ``where: what`` joined with ``; ``."""
    if not isinstance(detail, list):
        return str(detail)
    parts: list[str] = []
    for error in detail[:limit]:
        if not isinstance(error, dict):
            parts.append(str(error))
        elif "index" in error:  # POST /v1/events
            parts.append(
                f"[{error['index']}] {error.get('field')}: {error.get('reason')} (value: {error.get('value')!r})"
            )
        else:  # FastAPI: loc is e.g. ["query", "k"]
            where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "body"
            parts.append(f"{where}: {error.get('msg')} (value: {error.get('input')!r})")
    if len(detail) > limit:
        parts.append(f"... and {len(detail) - limit} more")
    return "; ".join(parts)
