"""What routes receive through FastAPI's ``Depends``: the objects ``create_app`` keeps on ``app.state``.

Use the ``Annotated`` aliases as parameter types (``engine: EngineDep``). The getters are ``async`` so that
FastAPI calls them on the event loop, not through its thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from liverec.events.schema import IdText
from liverec.serving.batching import Batcher
from liverec.serving.engine import Engine, Recommendation, RecommendRequest
from liverec.serving.metrics import Metrics
from liverec.settings import Settings

__all__ = [
    "EngineDep",
    "ItemIdPath",
    "MetricsDep",
    "RecommendBatcher",
    "RecommendService",
    "RecommendServiceDep",
    "UserIdPath",
    "get_engine",
    "get_metrics",
    "get_recommend_service",
    "split_categories",
]

#: Concurrent recommendation requests, scored together (``serving.batching``).
RecommendBatcher = Batcher[RecommendRequest, Recommendation]


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@dataclass(frozen=True)
class RecommendService:
    """What the recommendation routes use, as one dependency (one resolution per request on the hottest
    path): the batcher that scores concurrent requests together, the settings that bound ``k``, and the
    metrics that count fallbacks."""

    batcher: RecommendBatcher
    settings: Settings
    metrics: Metrics


async def get_recommend_service(request: Request) -> RecommendService:
    service: RecommendService = request.app.state.recommend_service
    return service


#: An id in a route's path: the rule of the events schema (1-256 characters as sent, not blank, stripped), so an
#: id is the same id whichever route it comes through.
ItemIdPath = Annotated[IdText, Path(description="an item id")]
UserIdPath = Annotated[IdText, Path(description="a user id")]

EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecommendServiceDep = Annotated[RecommendService, Depends(get_recommend_service)]


def split_categories(values: list[str]) -> tuple[str, ...]:
    """Categories may come repeated (``?c=a&c=b``) or comma-separated (``?c=a,b``)."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
