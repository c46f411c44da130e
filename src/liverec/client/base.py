"""What the synchronous and the asynchronous client share: their settings, the headers, the request's arguments,
and the counters of the batching senders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import liverec
from liverec.client.calls import Call
from liverec.client.errors import ClientError, ValidationFailed
from liverec.client.retry import NO_RETRY, RetryPolicy

__all__ = ["ClientBase", "FailedEvents", "OnFailure", "SenderStats", "check_sender_limits", "split_refused"]


class ClientBase:
    """The server's URL, the API key, the timeout and the retry policy; the counter of retried attempts."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected http://HOST:PORT or https://..., got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        #: Attempts made again after a connection error, a 429, 502, 503 or 504 (every call of this client).
        self.retried = 0
        self._headers = {"user-agent": f"liverec-client/{liverec.__version__}", "accept": "application/json"}
        if api_key:
            # the header serving.auth reads (X-API-Key works too)
            self._headers["authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})

    def _policy(self, call: Call[Any]) -> RetryPolicy:
        return self.retry if call.idempotent else NO_RETRY

    @staticmethod
    def _arguments(call: Call[Any]) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` for ``call``."""
        arguments: dict[str, Any] = {"params": call.params}
        if call.content is not None:
            arguments["content"] = call.content
            arguments["headers"] = {"content-type": call.content_type or "application/octet-stream"}
        elif call.json is not None:
            arguments["json"] = call.json
        return arguments

    def __repr__(self) -> str:
        keyed = "with a key" if "authorization" in self._headers else "without a key"
        return f"{type(self).__name__}({self.url!r}, {keyed})"


@dataclass
class SenderStats:
    """What a batching sender has done so far (event counts, except ``batches`` and ``retried``)."""

    sent: int = 0  # acknowledged by the server: stored or duplicate
    stored: int = 0
    duplicates: int = 0  # already in the log (a retry whose first attempt had been stored, or a resend)
    failed: int = 0  # refused for good or undeliverable: see the sender's ``failed``
    retried: int = 0  # attempts made again (connection errors, 429, 502-504)
    batches: int = 0  # POST /v1/events answered 200


@dataclass(frozen=True)
class FailedEvents:
    """Events a sender could not deliver, and why: an :class:`~liverec.client.ApiError` that refused them (a 422
    names each bad event; 401/403/413 the batch) or :class:`~liverec.client.ServiceUnavailable` after the retries."""

    events: list[dict[str, Any]]
    error: ClientError


#: Called (in the sender's thread or task) with each :class:`FailedEvents`.
OnFailure = Callable[[FailedEvents], None]


def split_refused(
    events: list[dict[str, Any]], error: ClientError
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """A 422 that names some events of a batch: (the refused events, the others, which deserve another try);
    None when the error concerns the batch as a whole. (A batch is stored whole or not at all.)"""
    if not isinstance(error, ValidationFailed):
        return None
    refused = error.event_indices & set(range(len(events)))
    if not refused or len(refused) == len(events):
        return None
    return [e for i, e in enumerate(events) if i in refused], [e for i, e in enumerate(events) if i not in refused]


def check_sender_limits(max_batch: int, max_delay_s: float, max_queue: int) -> None:
    if not 1 <= max_batch:
        raise ValueError(f"max_batch: expected an integer >= 1 (at most the server's max_batch), got {max_batch!r}")
    if not max_delay_s >= 0:
        raise ValueError(f"max_delay_s: expected seconds >= 0, got {max_delay_s!r}")
    if not max_queue >= max_batch:
        raise ValueError(f"max_queue: expected at least max_batch ({max_batch}), got {max_queue!r}")
