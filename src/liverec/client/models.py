"""The shapes the client sends and receives.

The API's own models (:mod:`liverec.serving.schemas`) are imported, not copied: the server validates and
documents with the same classes, so a field added there reaches the client at once. That module imports no
HTTP stack (FastAPI is imported by the routes only); it does import the domain modules its validators use
(re-rankers, experiments), hence numpy, scipy and torch, which every LiveRec installation has.

Defined here are only the answers the server declares no named schema for (``/health``, ``/ready``, the model
registry routes and the key list: small dicts written by the routes); the test that checks the client against
the live OpenAPI document holds their fields to what the server sends. :class:`EventDict`, :class:`ListOptions`
and :class:`RecommendOptions` are ``TypedDict``\\ s for the type checker only: the server validates events
against its configured event types, which a client cannot know in advance.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from liverec.serving.schemas import (
    ErasureOut,
    EventsAck,
    ExperimentIn,
    ExperimentListOut,
    ExperimentOut,
    ExperimentPromotedOut,
    ExperimentReportOut,
    ImpressionOut,
    ItemIn,
    ItemListOut,
    ItemOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    PromoteIn,
    RecommendationOut,
    SessionRequest,
    StatsOut,
    UserListOut,
    UserOut,
)

__all__ = [
    "ErasureOut",
    "EventDict",
    "EventsAck",
    "ExperimentIn",
    "ExperimentListOut",
    "ExperimentOut",
    "ExperimentPromotedOut",
    "ExperimentReportOut",
    "HealthOut",
    "ImpressionOut",
    "ItemIn",
    "ItemListOut",
    "ItemOut",
    "KeyCreated",
    "KeyIn",
    "KeyListOut",
    "KeyOut",
    "ListOptions",
    "ModelServingOut",
    "ModelsOut",
    "PromoteIn",
    "ReadyOut",
    "RecommendOptions",
    "RecommendationOut",
    "SessionRequest",
    "StatsOut",
    "UserListOut",
    "UserOut",
]


class EventDict(TypedDict):
    """One event as ``POST /v1/events`` takes it (the server's ``EventIn``). ``event_id`` is the idempotency key:
    the client fills in a fresh one when it is missing, so that a resent event is stored once."""

    user_id: str | int
    item_id: str | int
    type: str
    timestamp: NotRequired[float | str]
    value: NotRequired[float]
    event_id: NotRequired[str]
    context: NotRequired[dict[str, Any]]
    recommendation_id: NotRequired[str]


class ListOptions(TypedDict, total=False):
    """The options every recommendation route takes, similar items included (each one left out takes the
    server's default: ``k`` the ``default_k`` setting, the others the deployment's settings)."""

    k: int
    explore: Literal["greedy", "epsilon", "softmax", "cold"]
    explain: bool
    rerank: Literal["none", "mmr", "calibration", "popularity", "long-tail"]
    rerank_lambda: float


class RecommendOptions(ListOptions, total=False):
    """The options of a user's or a session's recommendations: :class:`ListOptions` and the filters."""

    exclude_seen: bool
    include_categories: list[str]
    exclude_categories: list[str]


class HealthOut(BaseModel):
    """``GET /health``: the process is alive."""

    status: str


class ReadyOut(BaseModel):
    """``GET /ready``: whether the engine can serve (HTTP 503 when not; the client returns it either way)."""

    model_config = ConfigDict(extra="allow")
    ready: bool
    model_loaded: bool
    log_writable: bool
    model_version: str | None


class ModelsOut(BaseModel):
    """``GET /v1/models``: the version served and every registered version's manifest (metrics, status,
    lineage; the registry's own format, kept as the JSON it is)."""

    serving: str | None
    versions: list[dict[str, Any]]


class ModelServingOut(BaseModel):
    """``POST /v1/models/{version}/promote`` and ``POST /v1/models/rollback``: the version served now."""

    serving: str | None
    rolled_back_to: str | None = Field(None, description="rollback only: the version rolled back to")


class KeyListOut(BaseModel):
    """``GET /v1/keys``: every key's name, id and scopes (never the key)."""

    keys: list[KeyOut]
