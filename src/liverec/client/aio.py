"""The asynchronous client (:class:`AsyncClient`) and its batching sender (:class:`AsyncEventSender`, a task).

The same surface as :mod:`liverec.client.sync`, method for method (a test compares the signatures), with
``await`` in front.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from liverec.client import calls
from liverec.client.base import ClientBase, FailedEvents, OnFailure, SenderStats, check_sender_limits, split_refused
from liverec.client.calls import Call, api_error, with_event_ids
from liverec.client.errors import ClientError, QueueFull, RateLimited, ServiceUnavailable
from liverec.client.models import (
    ErasureOut,
    EventDict,
    EventsAck,
    ExperimentIn,
    ExperimentListOut,
    ExperimentOut,
    ExperimentPromotedOut,
    ExperimentReportOut,
    HealthOut,
    ImpressionOut,
    ItemIn,
    ItemListOut,
    ItemOut,
    KeyCreated,
    KeyOut,
    ListOptions,
    ModelServingOut,
    ModelsOut,
    ReadyOut,
    RecommendationOut,
    RecommendOptions,
    StatsOut,
    UserListOut,
    UserOut,
)
from liverec.client.retry import RETRY_STATUSES, RetryPolicy

__all__ = ["AsyncClient", "AsyncEventSender"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncClient(ClientBase):
    """:class:`~liverec.client.Client` for asyncio: the same methods, each a coroutine; ``async with`` closes it."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, retry=retry, headers=headers)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def call(self, call: Call[T], on_retry: Callable[[], None] | None = None) -> T:
        """Send ``call`` (retrying it when it is idempotent and the answer says "not now") and read its answer."""
        policy = self._policy(call)
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await self._http.request(call.method, call.path, **self._arguments(call))
            except httpx.TransportError as error:
                wait = policy.next_delay(attempts, time.monotonic() - started)
                if wait is None:
                    raise ServiceUnavailable(
                        f"{call.method} {call.path}: no answer from {self.url} after {attempts} attempt(s): {error!r}"
                    ) from error
            else:
                if response.status_code in call.ok:
                    return call.parse(response)
                failure = api_error(call, response)
                retry_after = failure.retry_after if isinstance(failure, RateLimited) else None
                wait = None
                if response.status_code in RETRY_STATUSES:
                    wait = policy.next_delay(attempts, time.monotonic() - started, retry_after)
                if wait is None:
                    raise failure
            self.retried += 1
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(wait)

    # -- operations -------------------------------------------------------------------------------------------
    async def health(self) -> HealthOut:
        """``GET /health``: the process is alive."""
        return await self.call(calls.health())

    async def ready(self) -> ReadyOut:
        """``GET /ready``: a model is loaded and the log is writable (``ready`` false on a 503, not an error)."""
        return await self.call(calls.ready())

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition (scope read)."""
        return await self.call(calls.metrics())

    async def stats(self) -> StatsOut:
        """``GET /v1/stats``: rates over the last few seconds, sizes, freshness and lag (what the dashboard polls)."""
        return await self.call(calls.stats())

    # -- events -----------------------------------------------------------------------------------------------
    async def send_event(self, event: EventDict | Mapping[str, Any]) -> EventsAck:
        """``POST /v1/events`` with one event (an ``event_id`` is added when missing). Scope ingest."""
        return await self.send_events([event])

    async def send_events(self, events: Sequence[EventDict | Mapping[str, Any]], *, ndjson: bool = False) -> EventsAck:
        """``POST /v1/events`` with a batch, as a JSON array or NDJSON lines (``ndjson``). Every event gets an
        ``event_id`` when it has none, so a retry stores nothing twice (``duplicates`` counts resent ones).
        The batch is stored whole or not at all: a 422 (:class:`~liverec.client.ValidationFailed`) lists
        every bad event. Scope ingest."""
        return await self.call(calls.send_events(with_event_ids(events), ndjson))

    # -- recommendations --------------------------------------------------------------------------------------
    async def recommend(self, user_id: str | int, **options: Unpack[RecommendOptions]) -> RecommendationOut:
        """``GET /v1/users/{user_id}/recommendations``; options: ``k``, ``exclude_seen``, ``include_categories``,
        ``exclude_categories``, ``explore``, ``explain``, ``rerank``, ``rerank_lambda``. Scope read."""
        return await self.call(calls.recommend(user_id, options))

    async def recommend_session(self, items: Sequence[str], **options: Unpack[RecommendOptions]) -> RecommendationOut:
        """``POST /v1/recommendations``: an anonymous session's items (oldest first), the same options."""
        return await self.call(calls.recommend_session(list(items), options))

    async def similar(self, item_id: str | int, **options: Unpack[ListOptions]) -> RecommendationOut:
        """``GET /v1/items/{item_id}/similar``; options: ``k``, ``explore``, ``explain``, ``rerank``,
        ``rerank_lambda``. Scope read."""
        return await self.call(calls.similar(item_id, options))

    async def get_recommendation(self, recommendation_id: str) -> ImpressionOut:
        """``GET /v1/recommendations/{recommendation_id}``: a served list as logged, with its rewards."""
        return await self.call(calls.get_recommendation(recommendation_id))

    # -- catalogue and users ----------------------------------------------------------------------------------
    async def put_item(self, item_id: str | int, item: ItemIn | Mapping[str, Any]) -> ItemOut:
        """``PUT /v1/items/{item_id}``: create or replace an item (scope catalog; sent once)."""
        return await self.call(calls.put_item(item_id, item))

    async def search_items(self, q: str = "", limit: int | None = None) -> ItemListOut:
        """``GET /v1/items?q=``: items whose id or title contains ``q`` (empty: the most popular now). Scope read."""
        return await self.call(calls.search_items(q, limit))

    async def get_item(self, item_id: str | int) -> ItemOut:
        """``GET /v1/items/{item_id}``: an item and its statistics."""
        return await self.call(calls.get_item(item_id))

    async def delete_item(self, item_id: str | int) -> None:
        """``DELETE /v1/items/{item_id}`` (scope catalog; :class:`~liverec.client.NotFound` if there is none)."""
        return await self.call(calls.delete_item(item_id))

    async def find_users(self, q: str = "", limit: int | None = None) -> UserListOut:
        """``GET /v1/users?q=``: user ids that start with ``q`` (pseudonymised ids: only ``q`` itself). Scope read."""
        return await self.call(calls.find_users(q, limit))

    async def get_user(self, user_id: str | int) -> UserOut:
        """``GET /v1/users/{user_id}``: the user's recent items (:class:`~liverec.client.NotFound`: no events)."""
        return await self.call(calls.get_user(user_id))

    async def erase_user(self, user_id: str | int) -> ErasureOut:
        """``DELETE /v1/users/{user_id}``: erase the user everywhere (scope admin; idempotent on the server)."""
        return await self.call(calls.erase_user(user_id))

    # -- models -----------------------------------------------------------------------------------------------
    async def list_models(self) -> ModelsOut:
        """``GET /v1/models``: the version served and every registered version."""
        return await self.call(calls.list_models())

    async def promote_model(self, version: str) -> ModelServingOut:
        """``POST /v1/models/{version}/promote``: serve ``version`` now (scope admin; sent once)."""
        return await self.call(calls.promote_model(version))

    async def rollback_model(self) -> ModelServingOut:
        """``POST /v1/models/rollback``: serve the version served before (scope admin; sent once)."""
        return await self.call(calls.rollback_model())

    # -- experiments ------------------------------------------------------------------------------------------
    async def create_experiment(self, experiment: ExperimentIn | Mapping[str, Any]) -> ExperimentOut:
        """``POST /v1/experiments`` (scope admin; sent once)."""
        return await self.call(calls.create_experiment(experiment))

    async def list_experiments(self) -> ExperimentListOut:
        """``GET /v1/experiments``: every experiment with what each arm earned."""
        return await self.call(calls.list_experiments())

    async def get_experiment(self, experiment_id: str) -> ExperimentReportOut:
        """``GET /v1/experiments/{experiment_id}``: per arm reward rates, differences, p-values."""
        return await self.call(calls.get_experiment(experiment_id))

    async def stop_experiment(self, experiment_id: str) -> ExperimentOut:
        """``POST /v1/experiments/{experiment_id}/stop`` (scope admin; sent once)."""
        return await self.call(calls.stop_experiment(experiment_id))

    async def promote_experiment(self, experiment_id: str, arm: str | None = None) -> ExperimentPromotedOut:
        """``POST /v1/experiments/{experiment_id}/promote``: stop it and serve ``arm`` (default: the server's pick)."""
        return await self.call(calls.promote_experiment(experiment_id, arm))

    # -- API keys ---------------------------------------------------------------------------------------------
    async def list_keys(self) -> list[KeyOut]:
        """``GET /v1/keys``: names, ids and scopes (never the keys). Scope admin."""
        return (await self.call(calls.list_keys())).keys

    async def create_key(self, name: str, scopes: Iterable[str]) -> KeyCreated:
        """``POST /v1/keys``: the answer's ``key`` is shown this once (scope admin; sent once)."""
        return await self.call(calls.create_key(name, scopes))

    async def revoke_key(self, name: str) -> None:
        """``DELETE /v1/keys/{name}`` (scope admin)."""
        return await self.call(calls.revoke_key(name))


class AsyncEventSender:
    """:class:`~liverec.client.EventSender` for asyncio: a task instead of a thread, the same batching,
    backpressure (``await send(...)`` waits for room, or raises :class:`~liverec.client.QueueFull`), counters and
    :attr:`failed`. Start it with ``async with`` (or :meth:`start`) inside a running event loop."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.2,
        max_queue: int = 10_000,
        on_failure: OnFailure | None = None,
    ) -> None:
        check_sender_limits(max_batch, max_delay_s, max_queue)
        self.client = client
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_failure = on_failure
        self.failed: list[FailedEvents] = []
        self._stats = SenderStats()
        self._queue: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._in_flight = 0
        self._enqueued = 0
        self._done = 0
        self._flushes = 0
        self._closing = False
        self._condition = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> SenderStats:
        return SenderStats(**vars(self._stats))

    @property
    def pending(self) -> int:
        """Events not yet acknowledged or failed (queued and in flight)."""
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        """Start the sending task (in the running loop); :meth:`send` starts it too."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="liverec-event-sender")

    async def send(
        self, event: EventDict | Mapping[str, Any], *, block: bool = True, timeout: float | None = None
    ) -> str:
        """Queue ``event``; its ``event_id``. Waits while ``max_queue`` events are unacknowledged (see the class)."""
        (filled,) = with_event_ids([event])
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._condition:
            while True:
                if self._closing:
                    raise ClientError("AsyncEventSender.send: the sender is closed")
                if self.pending < self.max_queue:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise QueueFull(f"AsyncEventSender.send: {self.max_queue} events unacknowledged (max_queue)")
                try:
                    await asyncio.wait_for(self._condition.wait(), remaining)
                except TimeoutError:
                    pass  # checked again above
            self._queue.append((time.monotonic(), filled))
            self._enqueued += 1
            self._condition.notify_all()
        return str(filled["event_id"])

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event queued before this call is acknowledged or failed."""
        if self._task is None:
            return
        async with self._condition:
            target = self._enqueued
            self._flushes += 1
            self._condition.notify_all()
            try:
                await asyncio.wait_for(
                    self._condition.wait_for(lambda: self._done >= target or self._stopped()), timeout
                )
            finally:
                self._flushes -= 1
        if self._done < target:
            raise ClientError("AsyncEventSender.flush: the sending task has stopped")

    async def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then end the task (the client stays open: it is the caller's)."""
        async with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def __aenter__(self) -> AsyncEventSender:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    # -- the task ---------------------------------------------------------------------------------------------
    def _stopped(self) -> bool:
        return self._task is not None and self._task.done()

    async def _next_batch(self) -> list[dict[str, Any]] | None:
        async with self._condition:
            while True:
                if self._queue:
                    due = self._queue[0][0] + self.max_delay_s
                    now = time.monotonic()
                    if len(self._queue) >= self.max_batch or self._flushes or self._closing or now >= due:
                        break
                    try:
                        await asyncio.wait_for(self._condition.wait(), due - now)
                    except TimeoutError:
                        pass
                elif self._closing:
                    return None
                else:
                    await self._condition.wait()
            size = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft()[1] for _ in range(size)]
            self._in_flight = size
            return batch

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._deliver(batch)
            finally:
                async with self._condition:
                    self._in_flight = 0
                    self._done += len(batch)
                    self._condition.notify_all()

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        try:
            self._acknowledged(await self.client.call(calls.send_events(batch, False), self._count_retry))
        except ClientError as error:
            parts = split_refused(batch, error)
            if parts is None:
                self._fail(FailedEvents(batch, error))
                return
            refused, rest = parts
            self._fail(FailedEvents(refused, error))
            try:
                self._acknowledged(await self.client.call(calls.send_events(rest, False), self._count_retry))
            except ClientError as again:
                self._fail(FailedEvents(rest, again))
        except Exception as bug:  # not the server's answer: still report the events rather than lose them
            logger.exception("AsyncEventSender: sending a batch failed unexpectedly")
            self._fail(FailedEvents(batch, ClientError(f"AsyncEventSender: {bug!r}")))

    def _count_retry(self) -> None:
        self._stats.retried += 1

    def _acknowledged(self, ack: EventsAck) -> None:
        self._stats.sent += ack.received
        self._stats.stored += ack.stored
        self._stats.duplicates += ack.duplicates
        self._stats.batches += 1

    def _fail(self, failure: FailedEvents) -> None:
        self._stats.failed += len(failure.events)
        self.failed.append(failure)
        logger.warning("AsyncEventSender: %d event(s) not delivered: %s", len(failure.events), failure.error)
        if self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:
                logger.exception("AsyncEventSender: the on_failure callback raised")
