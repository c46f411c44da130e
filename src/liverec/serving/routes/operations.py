"""Operations: liveness (``/health``), readiness (``/ready``), Prometheus metrics (``/metrics``) and the numbers
the dashboard polls (``/v1/stats``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from liverec.serving.auth import AUTH_RESPONSES, READ
from liverec.serving.deps import EngineDep, MetricsDep
from liverec.serving.schemas import StatsOut
from liverec.serving.stats import StatsWindow

router = APIRouter()


@router.get("/health", tags=["operations"], summary="The process is alive")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    tags=["operations"],
    summary="Whether the engine can serve (a model loaded, the log writable)",
    responses={503: {"description": "not ready: the failing check is false"}},
)
def ready(engine: EngineDep) -> JSONResponse:
    checks = engine.ready()
    ok = all(checks.values())
    return JSONResponse({"ready": ok, **checks, "model_version": engine.model_version}, 200 if ok else 503)


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (text exposition format)",
    dependencies=[READ],
    response_class=PlainTextResponse,
    responses={**AUTH_RESPONSES, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def prometheus(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/stats",
    tags=["operations"],
    summary="Rates over the last few seconds (events, recommendations and their p99), sizes, freshness, lag",
    dependencies=[READ],
    response_model=StatsOut,
    responses=AUTH_RESPONSES,
)
def stats(request: Request) -> dict[str, object]:
    window: StatsWindow = request.app.state.stats
    return window.read()
