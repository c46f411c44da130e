"""Recommendations: for a user, for an anonymous session, and items similar to an item.

A factory rather than a module-level router: the documented default and upper bound of ``k`` are the
configured ``default_k`` and ``max_k``, and a parameter's bounds are fixed when its route is declared (so
they are in the OpenAPI document, and a ``k`` above ``max_k`` is FastAPI's standard 422). Everything else a
route needs comes through ``Depends`` (``serving.deps``).

No ``from __future__ import annotations`` here: the session route's body model is built in the factory, and
FastAPI must find the class itself in the route's annotations, not a name to look up in this module.
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, StringConstraints, create_model

from liverec.events.schema import MAX_EVENT_ID_LENGTH, json_int
from liverec.serving.auth import AUTH_RESPONSES, READ
from liverec.serving.deps import EngineDep, ItemIdPath, MetricsDep, RecommendServiceDep, UserIdPath, split_categories
from liverec.serving.engine import RecommendRequest, resolve_rerank
from liverec.serving.schemas import (
    RERANK_DESCRIPTION,
    RERANK_LAMBDA_DESCRIPTION,
    ErrorOut,
    ExploreName,
    ImpressionOut,
    RecommendationOut,
    RerankLambda,
    RerankName,
    SessionRequest,
)
from liverec.settings import Settings

__all__ = ["build_router"]

#: The exploration policy of one request (default: the ``explore`` setting).
ExploreParam = Annotated[
    ExploreName | None, Query(description="the exploration policy of this list (default: the explore setting)")
]
#: Whether to explain each item (default false: nothing is computed for it).
ExplainParam = Annotated[
    bool,
    Query(description="explain each item: explanation with kind, because (the history items that drove it) and text"),
]
#: The re-ranking of one request (default: the rerank settings).
RerankParam = Annotated[RerankName | None, Query(description=RERANK_DESCRIPTION)]
RerankLambdaParam = Annotated[RerankLambda | None, Query(description=RERANK_LAMBDA_DESCRIPTION)]
RecommendationIdPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH),
    Path(description="the recommendation_id of a served list"),
]


def _check_rerank(settings: Settings, rerank: str | None, rerank_lambda: float | None, location: str) -> None:
    """A 422 in FastAPI's shape, naming the field, for what the schema lets through but the re-ranker refuses (a λ
    above its range, a λ with no re-ranker): checked before the request joins a batch."""
    if rerank is None and rerank_lambda is None:
        return
    try:
        resolve_rerank(settings, rerank, rerank_lambda)
    except ValueError as error:
        field, _, message = str(error).partition(": ")
        value = rerank_lambda if field == "rerank_lambda" else rerank
        detail = {"type": "value_error", "loc": (location, field), "msg": str(error), "input": value}
        raise RequestValidationError([{**detail, "ctx": {"error": message}}]) from None


def build_router(default_k: int, max_k: int) -> APIRouter:
    """The recommendation routes, with ``default_k`` as the default ``k`` and ``max_k`` its upper bound."""
    router = APIRouter(tags=["recommendations"], dependencies=[READ], responses=AUTH_RESPONSES)
    KParam = Annotated[int, Query(ge=1, le=max_k, description="how many items")]
    Session = create_model(
        "SessionRequest",
        __base__=SessionRequest,
        k=(json_int(ge=1, le=max_k), Field(default_k, description="how many items")),
    )

    @router.get(
        "/v1/items/{item_id}/similar",
        summary="Items similar to an item",
        responses={200: {"model": RecommendationOut}, 404: {"model": ErrorOut, "description": "no such item"}},
    )
    def similar(
        item_id: ItemIdPath,
        engine: EngineDep,
        metrics: MetricsDep,
        k: KParam = default_k,
        explore: ExploreParam = None,
        explain: ExplainParam = False,
        rerank: RerankParam = None,
        rerank_lambda: RerankLambdaParam = None,
    ) -> dict[str, Any]:
        _check_rerank(engine.settings, rerank, rerank_lambda, "query")
        answer = engine.similar(item_id, k, explore, explain=explain, rerank=rerank, rerank_lambda=rerank_lambda)
        if answer is None:
            raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
        if answer.fallback:
            metrics.fallbacks.labels(answer.reason or "").inc()
        return answer.to_json()

    # the answers are written with JSONResponse, skipping FastAPI's response validation and encoding of a
    # plain dict; RecommendationOut documents them
    @router.get(
        "/v1/users/{user_id}/recommendations",
        summary="Recommend for a user (a user with no events gets the popular items)",
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )
    async def recommend(
        user_id: UserIdPath,
        service: RecommendServiceDep,
        k: KParam = default_k,
        exclude_seen: bool = True,
        include_categories: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        exclude_categories: Annotated[list[str], Query()] = [],  # noqa: B006
        explore: ExploreParam = None,
        explain: ExplainParam = False,
        rerank: RerankParam = None,
        rerank_lambda: RerankLambdaParam = None,
    ) -> JSONResponse:
        _check_rerank(service.settings, rerank, rerank_lambda, "query")
        request = RecommendRequest(
            user_id,
            k=k,
            exclude_seen=exclude_seen,
            include_categories=split_categories(include_categories),
            exclude_categories=split_categories(exclude_categories),
            explore=explore,
            explain=explain,
            rerank=rerank,
            rerank_lambda=rerank_lambda,
        )
        answer = await service.batcher(request)
        if answer.fallback:
            service.metrics.fallbacks.labels(answer.reason or "").inc()
        return JSONResponse(answer.to_json())

    async def recommend_session(request: SessionRequest, service: RecommendServiceDep) -> JSONResponse:
        _check_rerank(service.settings, request.rerank, request.rerank_lambda, "body")
        answer = await service.batcher(
            RecommendRequest(
                None,
                items=request.items,
                k=request.k,
                exclude_seen=request.exclude_seen,
                include_categories=split_categories(request.include_categories),
                exclude_categories=split_categories(request.exclude_categories),
                explore=request.explore,
                explain=request.explain,
                rerank=request.rerank,
                rerank_lambda=request.rerank_lambda,
            )
        )
        return JSONResponse(answer.to_json())

    recommend_session.__annotations__["request"] = Session  # FastAPI validates with the bounded k
    router.add_api_route(
        "/v1/recommendations",
        recommend_session,
        methods=["POST"],
        summary="Recommend for an anonymous session",
        response_class=JSONResponse,
        responses={200: {"model": RecommendationOut}},
    )

    @router.get(
        "/v1/recommendations/{recommendation_id}",
        summary="A served list as logged (items, propensities, policy) and the rewards joined to it",
        response_model=ImpressionOut,
        responses={404: {"model": ErrorOut, "description": "no list was served with this id (or it was erased)"}},
    )
    async def get_impression(recommendation_id: RecommendationIdPath, engine: EngineDep) -> dict[str, Any]:
        found = await run_in_threadpool(engine.impression, recommendation_id)
        if found is None:
            raise HTTPException(404, detail=f"recommendation_id {recommendation_id!r}: no such list")
        return found

    return router
