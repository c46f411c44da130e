"""A typed Python client of the LiveRec HTTP API: :class:`Client` (sync), :class:`AsyncClient` (asyncio), and
batching senders with backpressure (:class:`EventSender`, :class:`AsyncEventSender`).

::

    from liverec.client import Client, EventSender

    with Client("http://127.0.0.1:8000", api_key="lrk_...") as client:
        client.send_events([{"user_id": "u1", "item_id": "i9", "type": "click"}])
        answer = client.recommend("u1", k=5, explain=True)  # a RecommendationOut
        print([entry.item_id for entry in answer.items], answer.model_version)
        with EventSender(client, max_batch=500, max_delay_s=0.2) as sender:  # a background thread
            for event in stream:
                sender.send(event)  # waits when 10 000 events are unacknowledged
        print(sender.stats, sender.failed)  # sent, stored, duplicates, failed, retried; what was refused

Answers are the API's own pydantic models (:mod:`liverec.serving.schemas`, re-exported by
:mod:`liverec.client.models`); errors are :class:`ApiError` subclasses carrying the status code and the server's
``detail`` (:class:`ValidationFailed` lists every field it refused). Idempotent calls — reads, and event posts,
each event having an ``event_id`` the server stores once — are retried on connection errors, 429 (after
``Retry-After``) and 502-504, with exponential backoff and jitter (:class:`~liverec.client.retry.RetryPolicy`);
admin calls are sent once. docs/architecture.md ("Python client") says more.

httpx is a core dependency, not an extra: the demo (``liverec demo``, part of the core package) talks to its
server through this client, and httpx is small and pure Python.
"""

from liverec.client.aio import AsyncClient, AsyncEventSender
from liverec.client.base import FailedEvents, SenderStats
from liverec.client.calls import with_event_ids
from liverec.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from liverec.client.retry import RetryPolicy
from liverec.client.sync import Client, EventSender

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncEventSender",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "EventSender",
    "FailedEvents",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "RetryPolicy",
    "SenderStats",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationFailed",
    "with_event_ids",
]
