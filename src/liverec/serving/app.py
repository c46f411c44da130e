"""The HTTP API: builds the FastAPI app over :class:`~liverec.serving.engine.Engine`.

No route here: they live in ``serving.routes`` (one router per resource) and reach the engine and the
other shared objects kept on ``app.state`` through ``serving.deps``. Every route validates its input
(pydantic; errors are 4xx naming the field, the value and what was expected), calls the engine, and
shapes the answer. ``/metrics`` is Prometheus text; ``/docs`` is the OpenAPI UI; ``/ui`` is the dashboard (static
files from ``serving/ui``, mounted unless the ``ui`` setting is false; it reads the API like any client).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import compile_path
from starlette.staticfiles import StaticFiles

from liverec import __version__
from liverec.access import open_audit_log, open_key_store
from liverec.serving.auth import Guard, RateLimiter
from liverec.serving.batching import Batcher
from liverec.serving.deps import RecommendService
from liverec.serving.engine import Engine
from liverec.serving.limits import BodyLimitMiddleware, ContentTypeMiddleware
from liverec.serving.metrics import Metrics, MetricsMiddleware
from liverec.serving.routes import events, experiments, items, keys, models, operations, recommendations, users
from liverec.serving.schemas import ErrorOut
from liverec.serving.stats import StatsWindow

__all__ = ["UI_DIR", "create_app"]

#: The dashboard's files (HTML, CSS, JavaScript; package data), served at ``/ui`` when the ``ui`` setting is on.
UI_DIR = Path(__file__).resolve().parent / "ui"


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or Infinity replaced by its name (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 answer, with input that JSON cannot carry (NaN, Infinity) named instead of crashing."""
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(errors))})


async def _method_not_allowed(request: Request, error: Exception) -> Response:
    """Starlette's 405 names the methods of the first route that matched the path; ``Allow`` must name every
    method the path supports (RFC 9110), whichever route serves each: they are read from the OpenAPI document."""
    if not isinstance(error, StarletteHTTPException) or error.status_code != 405:
        return await http_exception_handler(request, error)  # type: ignore[arg-type]
    allowed: set[str] = set()
    for path, path_item in request.app.openapi()["paths"].items():
        if compile_path(path)[0].match(request.url.path):
            allowed |= {method.upper() for method in path_item}
    if not allowed:  # no API path: the 405 of the dashboard's static files (/ui), which serve GET and HEAD
        allowed = {"GET", "HEAD"}
    return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(sorted(allowed))})


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.compute_pool.shutdown(wait=True)
    if app.state.own_engine:
        await run_in_threadpool(app.state.engine.close)


def _document_middleware_answers(app: FastAPI, max_body_bytes: int) -> None:
    """Add to the OpenAPI document what the middleware answers before any route runs: 413 on every route (the
    body limit), 415 on every route that takes a body (the media type)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        too_large = {
            "description": f"the body is over {max_body_bytes} bytes",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        wrong_type = {
            "description": "a body that is not application/json (NDJSON too on POST /v1/events)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        unreadable = {
            "description": "a JSON body that cannot be read at all (not UTF-8)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        for path_item in document["paths"].values():
            for method, operation in path_item.items():
                operation["responses"].setdefault("413", too_large)
                if method in ("post", "put", "delete"):
                    operation["responses"].setdefault("415", wrong_type)
                if "requestBody" in operation:
                    operation["responses"].setdefault("400", unreadable)
        document.setdefault("components", {}).setdefault("schemas", {})["ErrorOut"] = ErrorOut.model_json_schema()
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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
    # outermost last: metrics count every answer; CORS answers preflights and labels refusals too; then the
    # body limit (413) and the media type (415) before any route reads a byte
    app.add_middleware(ContentTypeMiddleware)  # type: ignore[arg-type]
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,  # type: ignore[arg-type]
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _method_not_allowed)
    # Scoring runs on a small pool of its own: many threads running small torch ops at once mostly fight
    # over the GIL (docs/architecture.md, "Scoring has a thread of its own").
    pool = ThreadPoolExecutor(max_workers=settings.compute_threads, thread_name_prefix="liverec-compute")
    app.state.engine = engine
    app.state.own_engine = own_engine
    app.state.metrics = metrics
    app.state.compute_pool = pool
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s else None
    app.state.guard = Guard(open_key_store(settings), open_audit_log(settings), settings.auth, limiter)
    # concurrent recommendation requests share one model pass (serving.batching)
    batcher = Batcher(
        pool,
        engine.recommend_many,
        max_batch=settings.recommend_batch,
        concurrency=settings.compute_threads,
        on_batch=metrics.batch_size.observe,
    )
    app.state.recommend_service = RecommendService(batcher, settings, metrics)
    app.state.stats = StatsWindow(engine, metrics)  # read by GET /v1/stats only: no cost while nobody polls
    for router in (
        events.build_router(engine.event_config),
        items.router,
        recommendations.build_router(settings.default_k, settings.max_k),
        users.router,
        models.router,
        experiments.router,
        keys.router,
        operations.router,
    ):
        app.include_router(router)
    if settings.ui:
        # static files, not API: no key (the page asks for one and sends it with its API calls), not in the
        # OpenAPI document (a mount never is)
        app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    _document_middleware_answers(app, settings.max_body_bytes)
    return app
