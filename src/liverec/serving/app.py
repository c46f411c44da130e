"""The HTTP API: thin FastAPI routes over :class:`~liverec.serving.engine.Engine`.

No model maths here. Every route validates its input (pydantic; errors are 4xx naming the field, the
value and what was expected), calls the engine, and shapes the answer. ``/metrics`` is Prometheus
text; ``/docs`` is the OpenAPI UI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from liverec import __version__
from liverec.events.schema import BatchTooLargeError, EventValidationError, parse_events
from liverec.serving.batching import Batcher
from liverec.serving.engine import Engine, RecommendRequest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

T = TypeVar("T")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own (two apps in one process don't clash)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "liverec_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "liverec_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter("liverec_events_ingested", "events durably stored", registry=self.registry)
        self.duplicates = Counter(
            "liverec_events_duplicate", "events skipped as repeated event_id", registry=self.registry
        )
        self.rejected = Counter("liverec_events_rejected", "events in rejected batches", registry=self.registry)
        self.fallbacks = Counter(
            "liverec_recommendation_fallbacks", "answers served by popularity", ["reason"], registry=self.registry
        )
        self.batch_size = Histogram(
            "liverec_recommendation_batch_size",
            "recommendation requests scored in one model pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        model = Gauge("liverec_model_info", "the serving model version (value 1)", ["version"], registry=self.registry)
        self._model_gauge = model
        self._model_version: str | None = None
        Gauge("liverec_users", "users in the state", registry=self.registry).set_function(lambda: engine.state.n_users)
        Gauge("liverec_items", "items in the state", registry=self.registry).set_function(lambda: engine.state.n_items)
        Gauge("liverec_log_offset", "last log offset applied to state", registry=self.registry).set_function(
            lambda: engine.state.offset
        )
        self.engine = engine

    def render(self) -> bytes:
        version = self.engine.model_version
        if version != self._model_version:
            if self._model_version is not None:
                self._model_gauge.remove(self._model_version)
            if version is not None:
                self._model_gauge.labels(version=version).set(1)
            self._model_version = version
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: request count and latency per route template (not per raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=1000)
    categories: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    available: bool = True
    attributes: dict[str, Any] | None = None


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendationOut(BaseModel):
    """What every recommendation route answers (documentation only: the hot route writes JSON directly)."""

    items: list[ScoredItem]
    model_version: str | None = Field(description="the registry version that ranked, None before any training")
    recommendation_id: str = Field(description="send it back as an event's recommendation_id")
    fallback: str | None = Field(description='"popularity" when the model could not personalise the answer')
    reason: str | None = Field(description="why the fallback was used")
    filled_by_popularity: int = Field(0, description="slots the model left empty and popularity filled")
    history_length: int = Field(0, description="events of the user's recent sequence the answer used")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        ..., min_length=1, max_length=1000, description="the session's item ids, oldest first"
    )
    k: int = Field(10, ge=1)
    exclude_seen: bool = True
    include_categories: list[str] = Field(default_factory=list)
    exclude_categories: list[str] = Field(default_factory=list)


def _split(values: list[str]) -> list[str]:
    """Categories may come repeated (``?c=a&c=b``) or comma-separated (``?c=a,b``)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def create_app(engine: Engine, *, own_engine: bool = False) -> FastAPI:
    """The API over ``engine``; with ``own_engine`` the app closes it on shutdown."""
    settings = engine.settings
    metrics = Metrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=True)
        if own_engine:
            await run_in_threadpool(engine.close)

    app = FastAPI(
        title="LiveRec",
        version=__version__,
        description="Real-time personalised recommendations: events in, fresh top-K out.",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # type: ignore[arg-type]
    app.state.engine = engine
    app.state.metrics = metrics

    # Scoring runs on a small pool of its own: many threads running small torch ops at once mostly
    # fight over the GIL (measured: 270 requests/s with FastAPI's 40-thread pool vs more with 1-2).
    pool = ThreadPoolExecutor(max_workers=settings.compute_threads, thread_name_prefix="liverec-compute")

    async def compute(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(function, *args, **kwargs))

    # concurrent recommendation requests share one model pass (serving.batching)
    recommend_batch = Batcher(
        pool,
        engine.recommend_many,
        max_batch=settings.recommend_batch,
        concurrency=settings.compute_threads,
        on_batch=metrics.batch_size.observe,
    )

    def check_k(k: int) -> int:
        if k > settings.max_k:
            raise HTTPException(
                422, detail=[{"loc": ["query", "k"], "input": k, "msg": f"k must be <= {settings.max_k}"}]
            )
        return k

    # -- events ----------------------------------------------------------------------------------
    @app.post("/v1/events", tags=["events"], summary="Ingest one event, a JSON array or NDJSON")
    async def post_events(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            return JSONResponse({"detail": f"body of {declared} bytes exceeds {settings.max_body_bytes}"}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return JSONResponse({"detail": f"body exceeds {settings.max_body_bytes} bytes"}, 413)
        try:
            events = await run_in_threadpool(
                parse_events, bytes(body), request.headers.get("content-type"), engine.event_config
            )
        except BatchTooLargeError as error:
            return JSONResponse({"detail": str(error)}, 413)
        except EventValidationError as error:
            metrics.rejected.inc(max(1, len({e["index"] for e in error.errors})))
            return JSONResponse(
                {"detail": error.errors, "message": f"{len(error.errors)} error(s); no event of this batch was stored"},
                422,
            )
        result = await asyncio.wrap_future(engine.ingest_async(events))
        metrics.events.inc(result.stored)
        metrics.duplicates.inc(result.duplicates)
        return JSONResponse(
            {
                "received": len(events),
                "stored": result.stored,
                "duplicates": result.duplicates,
                "last_offset": result.last_offset,
            }
        )

    # -- catalogue -------------------------------------------------------------------------------
    @app.put("/v1/items/{item_id}", tags=["items"])
    def put_item(item_id: str, item: ItemIn) -> dict[str, Any]:
        return engine.put_item(item_id, **item.model_dump())

    @app.delete("/v1/items/{item_id}", tags=["items"], status_code=204)
    def delete_item(item_id: str) -> Response:
        if not engine.delete_item(item_id):
            raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
        return Response(status_code=204)

    @app.get("/v1/items/{item_id}", tags=["items"])
    def get_item(item_id: str) -> dict[str, Any]:
        item = engine.get_item(item_id)
        if item is None:
            raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
        return item

    @app.get("/v1/items/{item_id}/similar", tags=["recommendations"])
    def similar(item_id: str, k: Annotated[int, Query(ge=1)] = settings.default_k) -> dict[str, Any]:
        answer = engine.similar(item_id, check_k(k))
        if answer is None:
            raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
        if answer.fallback:
            metrics.fallbacks.labels(answer.reason or "").inc()
        return answer.to_json()

    # -- recommendations -------------------------------------------------------------------------
    # the answer is written with JSONResponse, skipping FastAPI's response validation and encoding of a
    # plain dict; RecommendationOut documents it
    @app.get(
        "/v1/users/{user_id}/recommendations",
        tags=["recommendations"],
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )
    async def recommend(
        user_id: str,
        k: Annotated[int, Query(ge=1)] = settings.default_k,
        exclude_seen: bool = True,
        include_categories: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        exclude_categories: Annotated[list[str], Query()] = [],  # noqa: B006
    ) -> JSONResponse:
        request = RecommendRequest(
            user_id,
            k=check_k(k),
            exclude_seen=exclude_seen,
            include_categories=tuple(_split(include_categories)),
            exclude_categories=tuple(_split(exclude_categories)),
        )
        answer = await recommend_batch(request)
        if answer.fallback:
            metrics.fallbacks.labels(answer.reason or "").inc()
        return JSONResponse(answer.to_json())

    @app.post(
        "/v1/recommendations",
        tags=["recommendations"],
        summary="Recommend for an anonymous session",
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )
    async def recommend_session(request: SessionRequest) -> JSONResponse:
        answer = await recommend_batch(
            RecommendRequest(
                None,
                items=request.items,
                k=check_k(request.k),
                exclude_seen=request.exclude_seen,
                include_categories=tuple(_split(request.include_categories)),
                exclude_categories=tuple(_split(request.exclude_categories)),
            )
        )
        return JSONResponse(answer.to_json())

    @app.get("/v1/users/{user_id}", tags=["users"])
    def get_user(user_id: str) -> dict[str, Any]:
        recent = engine.user_history(user_id)
        if recent is None:
            raise HTTPException(404, detail=f"user_id {user_id!r}: no events for this user")
        return {"user_id": user_id, "recent_items": recent}

    # -- models ----------------------------------------------------------------------------------
    @app.get("/v1/models", tags=["models"])
    def models() -> dict[str, Any]:
        return {"serving": engine.model_version, "versions": engine.registry.manifests()}

    @app.post("/v1/models/{version}/promote", tags=["models"])
    def promote(version: str) -> dict[str, Any]:
        try:
            engine.registry.promote(version, reason="POST /v1/models/{version}/promote")
        except KeyError:
            raise HTTPException(404, detail=f"version {version!r}: no such model version") from None
        engine.maybe_swap_model()
        return {"serving": engine.model_version}

    @app.post("/v1/models/rollback", tags=["models"])
    def rollback() -> dict[str, Any]:
        try:
            version = engine.registry.rollback(reason="POST /v1/models/rollback")
        except LookupError as error:
            raise HTTPException(409, detail=str(error)) from None
        engine.maybe_swap_model()
        return {"serving": engine.model_version, "rolled_back_to": version}

    # -- operations ------------------------------------------------------------------------------
    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    def ready() -> JSONResponse:
        checks = engine.ready()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, **checks, "model_version": engine.model_version}, 200 if ok else 503)

    @app.get("/metrics", tags=["operations"])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
