"""The event schema: what ``POST /v1/events`` accepts, validated by pydantic in one call per batch.

A batch is one JSON object, a JSON array of objects, or NDJSON (one object per non-empty line). The
body is parsed by pydantic-core's JSON parser, its size is checked, and the whole batch is validated
by one ``TypeAdapter(list[EventIn]).validate_python`` call, so the per-event work stays in Rust except
for the few checks pydantic cannot express (the ISO timestamp, the context's encoded size). The
limits that depend on the configuration (event types, id length, context size) are baked into an
``EventIn`` model built once per configuration, for the same reason.

A batch is all-or-nothing: :func:`parse_events` returns every event or raises one error that lists
every invalid event, so a client can fix the batch and resend it whole.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

import numpy as np
import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails

#: Default event types and the weight each carries as implicit feedback.
DEFAULT_EVENT_TYPES: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "rating": 1.0, "like": 3.0, "share": 3.0}
)
#: Content types read as NDJSON (parameters such as ``; charset=utf-8`` are ignored).
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")
#: Longest user or item id accepted, in characters as sent.
MAX_ID_LENGTH = 256
#: Largest integer id accepted: every integer up to it is exact as a JSON number (a double), 2**53 - 1.
MAX_SAFE_INTEGER = 2**53 - 1
#: Longest ``event_id`` and ``recommendation_id`` accepted.
MAX_EVENT_ID_LENGTH = 128
#: Numeric timestamps must be below this (year 5138): larger ones are milliseconds sent by mistake.
MAX_UNIX_SECONDS = 1e11
_MAX_VALUE_CHARS = 80
#: Reasons given when a field gets a JSON value of the wrong kind (clearer than the union's branch errors).
_TYPE_HINTS = {
    "user_id": "must be a non-empty string or an integer",
    "item_id": "must be a non-empty string or an integer",
    "timestamp": "must be Unix seconds (a finite number > 0) or an ISO 8601 string",
    "context": "must be a JSON object",
}


@dataclass(frozen=True)
class EventConfig:
    """What the event endpoint accepts: event types (name -> weight) and size limits."""

    event_types: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_TYPES)
    max_batch: int = 10_000
    max_context_bytes: int = 4096
    max_id_length: int = 256
    max_body_bytes: int = 16 * 1024 * 1024
    #: how far ahead of the server's clock a timestamp may be (seconds; None: no limit). One event from the
    #: far future would otherwise lead time-decayed popularity for as long as that future is away.
    max_future_skew_s: float | None = 86_400.0

    def __post_init__(self) -> None:
        if not self.event_types:
            raise ValueError("EventConfig.event_types: at least one event type is needed")
        if self.max_future_skew_s is not None and not self.max_future_skew_s >= 0:
            raise ValueError(f"max_future_skew_s: expected a number >= 0 or None, got {self.max_future_skew_s!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """One validated interaction; ids are external ids (strings), ``timestamp`` is Unix seconds."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None = None
    context: dict[str, Any] | None = None
    recommendation_id: str | None = None


class EventValidationError(ValueError):
    """Some events of a batch are invalid; ``errors`` lists each: ``{index, field, value, reason}``.

    ``index`` is the event's position in the batch (0-based), or its 0-based line number for NDJSON.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        lines = [f"[{e['index']}] {e['field']}: {e['reason']} (value: {e['value']!r})" for e in errors[:20]]
        if len(errors) > 20:
            lines.append(f"... and {len(errors) - 20} more")
        super().__init__(f"{len(errors)} invalid event(s); nothing was stored:\n" + "\n".join(lines))


class BatchTooLargeError(ValueError):
    """The body or the number of events exceeds the configured limit (HTTP 413)."""


def _iso_to_unix(text: str) -> float:
    """ISO 8601 -> Unix seconds; a naive time is UTC (clients that omit the zone mostly mean UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"not an ISO 8601 time ({error})") from None
    seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if seconds <= 0:
        raise ValueError("must be after 1970-01-01T00:00:00Z")
    return seconds


def _context_checker(max_bytes: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(context: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(context, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
        except ValueError:
            raise ValueError("must not contain NaN or Infinity") from None
        if size > max_bytes:
            raise ValueError(f"is {size} bytes as compact JSON; at most {max_bytes} allowed")
        return context

    return check


@functools.lru_cache(maxsize=16)
def _stripped(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


def _integral(value: Any) -> Any:
    """A float with no fractional part as the integer it is (JSON does not tell ``5`` from ``5.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: A character that is not whitespace as ``str.strip`` sees it, spelled out (``\\S`` differs between Python,
#: JSON Schema's ECMA regexes and pydantic's Rust ones, e.g. on U+001F), so the schema says what is checked.
NOT_BLANK = r"[^\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def id_text(max_length: int = MAX_ID_LENGTH) -> Any:
    """The one rule for a user or item id given as text, on every route: 1 to ``max_length`` characters as sent,
    at least one of them not whitespace; surrounding whitespace is stripped (``" x "`` is ``"x"``)."""
    return Annotated[
        str, StringConstraints(min_length=1, max_length=max_length, pattern=NOT_BLANK), AfterValidator(_stripped)
    ]


#: A user or item id as text, by :func:`id_text`'s rule with the default length.
IdText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=NOT_BLANK), AfterValidator(_stripped)
]


def json_int(ge: int | None = None, le: int | None = None) -> Any:
    """An integer in a JSON body, within ``[ge, le]``: ``5`` or ``5.0``, never ``"5"`` or ``true``. (The bounds
    come first: after the validator, pydantic would not write them into the JSON schema.)"""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral), Strict()]


def _event_model(types: tuple[str, ...], max_id_length: int, max_context_bytes: int) -> type[BaseModel]:
    # integer ids within the range a JSON number holds exactly (larger ones lose digits in most clients)
    external_id = id_text(max_id_length) | json_int(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    short_id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
    unix_seconds = Annotated[float, Strict(), Field(gt=0, lt=MAX_UNIX_SECONDS, allow_inf_nan=False)]
    timestamp = unix_seconds | Annotated[str, AfterValidator(_iso_to_unix)]
    context = Annotated[dict[str, Any], AfterValidator(_context_checker(max_context_bytes))]
    event_type: Any = Literal.__getitem__(types)  # built at run time: the configured types
    return create_model(
        "EventIn",
        __config__=ConfigDict(extra="forbid"),
        __doc__="One event as a client sends it (ids may be integers; timestamp and event_id are optional).",
        user_id=(external_id, ...),
        item_id=(external_id, ...),
        type=(event_type, ...),
        timestamp=(timestamp | None, None),
        value=(Annotated[float, Strict(), Field(allow_inf_nan=False)] | None, None),
        event_id=(short_id | None, None),
        context=(context | None, None),
        recommendation_id=(short_id | None, None),
    )


def event_model(config: EventConfig) -> type[BaseModel]:
    """The ``EventIn`` pydantic model for ``config`` (built once per distinct configuration)."""
    return _event_model(tuple(config.event_types), config.max_id_length, config.max_context_bytes)


@functools.lru_cache(maxsize=16)
def _batch_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


#: The model for the default configuration (for OpenAPI documents and direct use).
EventIn = event_model(EventConfig())


def parse_events(body: bytes, content_type: str | None, config: EventConfig) -> list[Event]:
    """Validate a request body into events, all or none.

    Raises :class:`BatchTooLargeError` when the body or the batch exceeds the limits, and
    :class:`EventValidationError` listing every invalid event otherwise.
    """
    if len(body) > config.max_body_bytes:
        raise BatchTooLargeError(f"body is {len(body)} bytes; at most {config.max_body_bytes} allowed")
    is_ndjson = (content_type or "").split(";")[0].strip().lower() in NDJSON_TYPES
    items, positions, errors = _split_ndjson(body) if is_ndjson else _split_json(body)
    if len(items) + len(errors) > config.max_batch:
        raise BatchTooLargeError(f"batch has {len(items) + len(errors)} events; at most {config.max_batch} allowed")
    if not items and not errors:
        raise EventValidationError([_error(0, "body", body, "empty batch: no event")])
    try:
        models = _batch_adapter(event_model(config)).validate_python(items)
    except ValidationError as invalid:
        errors += _field_errors(invalid, positions, config)
    else:
        errors += _future_errors(models, positions, config.max_future_skew_s)
    if errors:
        raise EventValidationError(sorted(errors, key=lambda e: e["index"]))
    return _to_events(models)


def _future_errors(models: list[Any], positions: list[int], max_skew_s: float | None) -> list[dict[str, Any]]:
    """One error per event whose timestamp is more than ``max_skew_s`` ahead of the server's clock."""
    if max_skew_s is None:
        return []
    latest = time.time() + max_skew_s
    return [
        _error(
            position,
            "timestamp",
            model.timestamp,
            f"is {model.timestamp - time.time():,.0f} s in the future; at most {max_skew_s:,.0f} s "
            "ahead of the server's clock is accepted (setting max_future_skew_s)",
        )
        for model, position in zip(models, positions, strict=True)
        if model.timestamp is not None and model.timestamp > latest
    ]


def _split_json(body: bytes) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """One object or an array of objects -> (items, their indices, parse errors)."""
    if not body.strip():
        return [], [], []
    try:
        parsed = pydantic_core.from_json(body)
    except ValueError as error:
        hint = " (for NDJSON send Content-Type: application/x-ndjson)" if "trailing characters" in str(error) else ""
        return [], [], [_error(0, "body", body, f"malformed JSON: {error}{hint}")]
    if isinstance(parsed, dict):
        return [parsed], [0], []
    if isinstance(parsed, list):
        return parsed, list(range(len(parsed))), []
    return [], [], [_error(0, "body", parsed, "must be a JSON object or an array of objects")]


def _split_ndjson(body: bytes) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """NDJSON -> (items, their line numbers, one error per malformed line); blank lines are skipped.

    Each line is parsed on its own, so a line holding two objects or half of one is an error rather
    than being glued to its neighbours.
    """
    items: list[Any] = []
    positions: list[int] = []
    errors: list[dict[str, Any]] = []
    for number, line in enumerate(body.split(b"\n")):
        if not line.strip():
            continue
        try:
            items.append(pydantic_core.from_json(line))
            positions.append(number)
        except ValueError as error:
            errors.append(_error(number, "body", line, f"malformed JSON line: {error}"))
    return items, positions, errors


def _field_errors(invalid: ValidationError, positions: list[int], config: EventConfig) -> list[dict[str, Any]]:
    """pydantic's errors -> one ``{index, field, value, reason}`` per invalid field of each event.

    A union field (ids, timestamp) yields one pydantic error per branch; the one that got past the type
    check is the informative one ("too long" beats "not an integer").
    """
    chosen: dict[tuple[int, str], ErrorDetails] = {}
    for detail in invalid.errors():
        loc = detail["loc"]
        key = (int(loc[0]), str(loc[1]) if len(loc) > 1 else "event")
        previous = chosen.get(key)
        if previous is None or (previous["type"].endswith("_type") and not detail["type"].endswith("_type")):
            chosen[key] = detail
    errors = []
    for (index, name), detail in chosen.items():
        kind = detail["type"]
        if kind == "missing":
            reason, value = "required", None
        elif kind == "extra_forbidden":
            allowed = ", ".join(event_model(config).model_fields)
            reason, value = f"unknown field; allowed fields: {allowed}", detail["input"]
        elif kind == "model_type":
            reason, value = "must be a JSON object", detail["input"]
        elif kind == "less_than" and name == "timestamp":
            reason, value = "must be Unix seconds; this looks like milliseconds", detail["input"]
        elif kind == "string_pattern_mismatch" and name in ("user_id", "item_id"):
            reason, value = "must not be blank (whitespace only)", detail["input"]
        elif kind == "value_error":
            reason, value = str(detail["ctx"]["error"]), detail["input"]
        elif kind.endswith("_type") and name in _TYPE_HINTS:
            reason, value = _TYPE_HINTS[name], detail["input"]
        else:
            reason, value = detail["msg"], detail["input"]
        errors.append(_error(positions[index], name, value, reason))
    return errors


def _error(index: int, name: str, value: Any, reason: str) -> dict[str, Any]:
    """One error entry; the value stays as is when JSON-safe (strings truncated), else a truncated repr."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        value = repr(value)
    elif not isinstance(value, str | int | float | bool | None):
        value = repr(value)
    if isinstance(value, str) and len(value) > _MAX_VALUE_CHARS:
        value = value[: _MAX_VALUE_CHARS - 1] + "…"
    return {"index": index, "field": name, "value": value, "reason": reason}


def _to_events(models: list[Any]) -> list[Event]:
    """Validated models -> events; one ``now`` for the batch, UUID4s only where no event_id was sent."""
    now = time.time()
    fresh = iter(_uuid4_hex(sum(m.event_id is None for m in models)))
    return [
        Event(
            m.event_id if m.event_id is not None else next(fresh),
            str(m.user_id),
            str(m.item_id),
            m.type,
            now if m.timestamp is None else m.timestamp,
            m.value,
            m.context,
            m.recommendation_id,
        )
        for m in models
    ]


def _uuid4_hex(n: int) -> list[str]:
    """``n`` random UUID4s as 32 hex digits, from one ``urandom`` call (``uuid.uuid4`` costs ~2 µs each)."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]
