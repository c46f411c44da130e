"""The HTTP API: builds the FastAPI app over :class:`~liverec.serving.engine.Engine`.

No route here: they live in ``serving.routes`` (one router per resource) and reach the engine and the
other shared objects kept on ``app.state`` through ``serving.deps``. Every route validates its input
(pydantic; errors are 4xx naming the field, the value and what was expected), calls the engine, and
shapes the answer. ``/metrics`` is Prometheus text; ``/docs`` is the OpenAPI UI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from liverec import __version__
from liverec.serving.batching import Batcher
from liverec.serving.deps import RecommendService
from liverec.serving.engine import Engine
from liverec.serving.metrics import Metrics, MetricsMiddleware
from liverec.serving.routes import events, items, models, operations, recommendations, users

__all__ = ["create_app"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.compute_pool.shutdown(wait=True)
    if app.state.own_engine:
        await run_in_threadpool(app.state.engine.close)


def create_app(engine: Engine, *, own_engine: bool = False) -> FastAPI:
    """The API over ``engine``; with ``own_engine`` the app closes it on shutdown."""
    settings = engine.settings
    metrics = Metrics(engine)
    app = FastAPI(
        title="LiveRec",
        version=__version__,
        description="Real-time personalised recommendations: events in, fresh top-K out.",
        lifespan=_lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # type: ignore[arg-type]
    # Scoring runs on a small pool of its own: many threads running small torch ops at once mostly fight
    # over the GIL (docs/architecture.md, "Scoring has a thread of its own").
    pool = ThreadPoolExecutor(max_workers=settings.compute_threads, thread_name_prefix="liverec-compute")
    app.state.engine = engine
    app.state.own_engine = own_engine
    app.state.metrics = metrics
    app.state.compute_pool = pool
    # concurrent recommendation requests share one model pass (serving.batching)
    batcher = Batcher(
        pool,
        engine.recommend_many,
        max_batch=settings.recommend_batch,
        concurrency=settings.compute_threads,
        on_batch=metrics.batch_size.observe,
    )
    app.state.recommend_service = RecommendService(batcher, settings, metrics)
    for router in (
        events.router,
        items.router,
        recommendations.build_router(settings.default_k),
        users.router,
        models.router,
        operations.router,
    ):
        app.include_router(router)
    return app
