"""Every request the API takes, as a :class:`Call`: method, path, query, body, whether it may be retried, and how
its answer is read. No I/O here: :class:`~liverec.client.Client` and :class:`~liverec.client.AsyncClient` send
the same calls, which keeps their surfaces equal and the request building in one place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from liverec.client.errors import ApiError, RateLimited, error_class
from liverec.client.models import (
    ErasureOut,
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
    KeyListOut,
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
from liverec.client.retry import parse_retry_after

__all__ = ["Call", "api_error", "with_event_ids"]

T = TypeVar("T")

_LIST_OPTIONS = ListOptions.__required_keys__ | ListOptions.__optional_keys__
_RECOMMEND_OPTIONS = RecommendOptions.__required_keys__ | RecommendOptions.__optional_keys__


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: what to send, which statuses are answers (``ok``), what an answer is (``answer``: a pydantic
    model, ``str`` for text, ``None`` for no body), and whether sending it twice has the effect of sending it
    once (``idempotent``: only then is it retried)."""

    method: str
    path: str
    answer: type[T] | None
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    idempotent: bool = False
    ok: tuple[int, ...] = (200,)

    def parse(self, response: httpx.Response) -> T:
        """The answer of a response whose status is one of ``ok``."""
        if self.answer is None:
            return None  # type: ignore[return-value]
        if self.answer is str:
            return response.text  # type: ignore[return-value]
        model: Any = self.answer
        return model.model_validate_json(response.content)  # type: ignore[no-any-return]


def _segment(value: str | int) -> str:
    """An id as one path segment (``/``, ``?``, ``#`` and spaces escaped)."""
    return quote(str(value), safe="")


def _body(value: BaseModel | Mapping[str, Any]) -> Any:
    """A request body: a model as the fields that were set (the server fills in its own defaults), a mapping as is."""
    return value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else dict(value)


def _options(options: Mapping[str, Any], allowed: frozenset[str], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(allowed)}")
    return {name: value for name, value in options.items() if value is not None}


def api_error(call: Call[Any], response: httpx.Response) -> ApiError:
    """The typed error of an answer that is not one of ``call.ok``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail", body) if isinstance(body, dict) else (body if body is not None else response.text)
    cls = error_class(response.status_code)
    if cls is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(call.method, call.path, response.status_code, detail, body, retry_after=retry_after)
    return cls(call.method, call.path, response.status_code, detail, body)


def with_event_ids(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``events``, each with an ``event_id``: its own, else a fresh random one (32 hex digits).

    The id is what makes a retry safe: the server stores an ``event_id`` once and counts a resent one in
    ``duplicates``. It is given before the first attempt, so every attempt carries the same ids.
    """
    filled: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise TypeError(f"events[{index}]: expected a mapping (user_id, item_id, type, ...), got {event!r}")
        copy = dict(event)
        if copy.get("event_id") is None:
            copy["event_id"] = uuid.uuid4().hex
        filled.append(copy)
    return filled


# -- operations ---------------------------------------------------------------------------------------------------
def health() -> Call[HealthOut]:
    return Call("GET", "/health", HealthOut, idempotent=True)


def ready() -> Call[ReadyOut]:
    # 503 is an answer here (not ready), not a reason to retry
    return Call("GET", "/ready", ReadyOut, idempotent=True, ok=(200, 503))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", str, idempotent=True)


def stats() -> Call[StatsOut]:
    return Call("GET", "/v1/stats", StatsOut, idempotent=True)


# -- events -------------------------------------------------------------------------------------------------------
def send_events(events: list[dict[str, Any]], ndjson: bool) -> Call[EventsAck]:
    """``events`` must already carry their ids (:func:`with_event_ids`): that is what makes the call idempotent."""
    if not events:
        raise ValueError("events: expected at least one event, got none")
    if any(event.get("event_id") is None for event in events):
        raise ValueError("events: every event needs an event_id before it is sent (see with_event_ids)")
    if ndjson:
        content = b"".join(json.dumps(event, allow_nan=False).encode() + b"\n" for event in events)
        return Call(
            "POST",
            "/v1/events",
            EventsAck,
            content=content,
            content_type="application/x-ndjson",
            idempotent=True,
        )
    return Call("POST", "/v1/events", EventsAck, json=events, idempotent=True)


# -- recommendations ----------------------------------------------------------------------------------------------
def recommend(user_id: str | int, options: Mapping[str, Any]) -> Call[RecommendationOut]:
    params = _options(options, _RECOMMEND_OPTIONS, "recommend")
    return Call(
        "GET",
        f"/v1/users/{_segment(user_id)}/recommendations",
        RecommendationOut,
        params=params,
        idempotent=True,
    )


def recommend_session(items: list[str], options: Mapping[str, Any]) -> Call[RecommendationOut]:
    # a read: retrying it at worst logs one more list, as a lost answer to the first attempt already did
    body = {"items": list(items), **_options(options, _RECOMMEND_OPTIONS, "recommend_session")}
    return Call("POST", "/v1/recommendations", RecommendationOut, json=body, idempotent=True)


def similar(item_id: str | int, options: Mapping[str, Any]) -> Call[RecommendationOut]:
    params = _options(options, _LIST_OPTIONS, "similar")
    return Call("GET", f"/v1/items/{_segment(item_id)}/similar", RecommendationOut, params=params, idempotent=True)


def get_recommendation(recommendation_id: str) -> Call[ImpressionOut]:
    return Call("GET", f"/v1/recommendations/{_segment(recommendation_id)}", ImpressionOut, idempotent=True)


# -- catalogue and users ------------------------------------------------------------------------------------------
def put_item(item_id: str | int, item: ItemIn | Mapping[str, Any]) -> Call[ItemOut]:
    return Call("PUT", f"/v1/items/{_segment(item_id)}", ItemOut, json=_body(item))


def search_items(q: str, limit: int | None) -> Call[ItemListOut]:
    params = {"q": q} if limit is None else {"q": q, "limit": limit}
    return Call("GET", "/v1/items", ItemListOut, params=params, idempotent=True)


def get_item(item_id: str | int) -> Call[ItemOut]:
    return Call("GET", f"/v1/items/{_segment(item_id)}", ItemOut, idempotent=True)


def delete_item(item_id: str | int) -> Call[None]:
    return Call("DELETE", f"/v1/items/{_segment(item_id)}", None, ok=(204,))


def find_users(q: str, limit: int | None) -> Call[UserListOut]:
    params = {"q": q} if limit is None else {"q": q, "limit": limit}
    return Call("GET", "/v1/users", UserListOut, params=params, idempotent=True)


def get_user(user_id: str | int) -> Call[UserOut]:
    return Call("GET", f"/v1/users/{_segment(user_id)}", UserOut, idempotent=True)


def erase_user(user_id: str | int) -> Call[ErasureOut]:
    return Call("DELETE", f"/v1/users/{_segment(user_id)}", ErasureOut)


# -- models -------------------------------------------------------------------------------------------------------
def list_models() -> Call[ModelsOut]:
    return Call("GET", "/v1/models", ModelsOut, idempotent=True)


def promote_model(version: str) -> Call[ModelServingOut]:
    return Call("POST", f"/v1/models/{_segment(version)}/promote", ModelServingOut)


def rollback_model() -> Call[ModelServingOut]:
    return Call("POST", "/v1/models/rollback", ModelServingOut)


# -- experiments --------------------------------------------------------------------------------------------------
def create_experiment(experiment: ExperimentIn | Mapping[str, Any]) -> Call[ExperimentOut]:
    return Call("POST", "/v1/experiments", ExperimentOut, json=_body(experiment), ok=(201,))


def list_experiments() -> Call[ExperimentListOut]:
    return Call("GET", "/v1/experiments", ExperimentListOut, idempotent=True)


def get_experiment(experiment_id: str) -> Call[ExperimentReportOut]:
    return Call("GET", f"/v1/experiments/{_segment(experiment_id)}", ExperimentReportOut, idempotent=True)


def stop_experiment(experiment_id: str) -> Call[ExperimentOut]:
    return Call("POST", f"/v1/experiments/{_segment(experiment_id)}/stop", ExperimentOut)


def promote_experiment(experiment_id: str, arm: str | None) -> Call[ExperimentPromotedOut]:
    return Call(
        "POST",
        f"/v1/experiments/{_segment(experiment_id)}/promote",
        ExperimentPromotedOut,
        json={} if arm is None else {"arm": arm},
    )


# -- API keys -----------------------------------------------------------------------------------------------------
def list_keys() -> Call[KeyListOut]:
    return Call("GET", "/v1/keys", KeyListOut, idempotent=True)


def create_key(name: str, scopes: Iterable[str]) -> Call[KeyCreated]:
    return Call("POST", "/v1/keys", KeyCreated, json={"name": name, "scopes": list(scopes)}, ok=(201,))


def revoke_key(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/keys/{_segment(name)}", None, ok=(204,))
