"""Recommendations: for a user, for an anonymous session, and items similar to an item.

A factory rather than a module-level router: the documented default of ``k`` is the configured
``default_k``, and a query parameter's default is fixed when its route is declared. Everything else a
route needs comes through ``Depends`` (``serving.deps``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from liverec.serving.auth import AUTH_RESPONSES, READ
from liverec.serving.deps import (
    EngineDep,
    ItemIdPath,
    MetricsDep,
    RecommendServiceDep,
    UserIdPath,
    check_k,
    split_categories,
)
from liverec.serving.engine import RecommendRequest
from liverec.serving.schemas import RecommendationOut, SessionRequest

__all__ = ["build_router", "recommend_session"]


def build_router(default_k: int) -> APIRouter:
    """The recommendation routes, with ``default_k`` as the default (and documented) ``k``."""
    router = APIRouter(dependencies=[READ], responses=AUTH_RESPONSES)

    @router.get("/v1/items/{item_id}/similar", tags=["recommendations"])
    def similar(
        item_id: ItemIdPath, engine: EngineDep, metrics: MetricsDep, k: Annotated[int, Query(ge=1)] = default_k
    ) -> dict[str, Any]:
        answer = engine.similar(item_id, check_k(k, engine.settings))
        if answer is None:
            raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
        if answer.fallback:
            metrics.fallbacks.labels(answer.reason or "").inc()
        return answer.to_json()

    # the answer is written with JSONResponse, skipping FastAPI's response validation and encoding of a
    # plain dict; RecommendationOut documents it
    @router.get(
        "/v1/users/{user_id}/recommendations",
        tags=["recommendations"],
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )
    async def recommend(
        user_id: UserIdPath,
        service: RecommendServiceDep,
        k: Annotated[int, Query(ge=1)] = default_k,
        exclude_seen: bool = True,
        include_categories: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        exclude_categories: Annotated[list[str], Query()] = [],  # noqa: B006
    ) -> JSONResponse:
        request = RecommendRequest(
            user_id,
            k=check_k(k, service.settings),
            exclude_seen=exclude_seen,
            include_categories=split_categories(include_categories),
            exclude_categories=split_categories(exclude_categories),
        )
        answer = await service.batcher(request)
        if answer.fallback:
            service.metrics.fallbacks.labels(answer.reason or "").inc()
        return JSONResponse(answer.to_json())

    router.add_api_route(
        "/v1/recommendations",
        recommend_session,
        methods=["POST"],
        tags=["recommendations"],
        summary="Recommend for an anonymous session",
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )
    return router


async def recommend_session(request: SessionRequest, service: RecommendServiceDep) -> JSONResponse:
    answer = await service.batcher(
        RecommendRequest(
            None,
            items=request.items,
            k=check_k(request.k, service.settings),
            exclude_seen=request.exclude_seen,
            include_categories=split_categories(request.include_categories),
            exclude_categories=split_categories(request.exclude_categories),
        )
    )
    return JSONResponse(answer.to_json())
