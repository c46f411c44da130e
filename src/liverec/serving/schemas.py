"""Request and response bodies of the HTTP API (pydantic; what the OpenAPI document shows)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["ItemIn", "KeyCreated", "KeyIn", "KeyOut", "RecommendationOut", "ScoredItem", "SessionRequest"]


def _finite_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The value itself when it is JSON without NaN or Infinity (they would be stored as null)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("must not contain NaN or Infinity") from None
    return value


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=1000)
    categories: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    available: bool = True
    attributes: Annotated[dict[str, Any] | None, AfterValidator(_finite_json)] = None


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
    items: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]] = Field(
        ..., min_length=1, max_length=1000, description="the session's item ids, oldest first"
    )
    k: int = Field(10, ge=1)
    exclude_seen: bool = True
    include_categories: list[str] = Field(default_factory=list)
    exclude_categories: list[str] = Field(default_factory=list)


Scope = Literal["ingest", "read", "catalog", "admin"]


class KeyIn(BaseModel):
    """A key to create: its name and scopes."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="a name to revoke it by")
    scopes: list[Scope] = Field(..., min_length=1, max_length=4)


class KeyOut(BaseModel):
    name: str
    key_id: str
    scopes: list[Scope]
    created_at: float


class KeyCreated(KeyOut):
    key: str = Field(
        description="the key: send it as `Authorization: Bearer KEY`; it is not stored and not shown again"
    )
