"""The event schema: every validation path of parse_events, error reports, and a JSON round-trip property."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.events.schema import (
    DEFAULT_EVENT_TYPES,
    BatchTooLargeError,
    Event,
    EventConfig,
    EventValidationError,
    parse_events,
)

CONFIG = EventConfig()
MISSING = object()
NDJSON = "application/x-ndjson"


def good(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u1", "item_id": "i1", "type": "click", "timestamp": 1_700_000_000, **fields}


def body(*events: Any) -> bytes:
    return json.dumps(list(events)).encode()


def errors_of(raw: bytes, content_type: str | None = None, config: EventConfig = CONFIG) -> list[dict[str, Any]]:
    with pytest.raises(EventValidationError) as caught:
        parse_events(raw, content_type, config)
    assert str(caught.value).startswith(f"{len(caught.value.errors)} invalid event")
    return caught.value.errors


def only_error(raw: bytes, content_type: str | None = None, config: EventConfig = CONFIG) -> dict[str, Any]:
    errors = errors_of(raw, content_type, config)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_event_fields() -> None:
    context = {"page": "home", "position": 3}
    [event] = parse_events(
        body(good(value=4.5, event_id="e-1", context=context, recommendation_id="r-9")), None, CONFIG
    )
    assert event == Event("e-1", "u1", "i1", "click", 1_700_000_000.0, 4.5, context, "r-9")


def test_single_object_body_and_integer_ids() -> None:
    [event] = parse_events(json.dumps(good(user_id=42, item_id=7)).encode(), "application/json", CONFIG)
    assert (event.user_id, event.item_id) == ("42", "7")


def test_ids_are_stripped() -> None:
    [event] = parse_events(body(good(user_id="  u1 ")), None, CONFIG)
    assert event.user_id == "u1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200.0),
        ("2024-01-01T02:00:00+02:00", 1_704_067_200.0),
        ("2024-01-01T00:00:00", 1_704_067_200.0),  # naive = UTC
        ("2024-01-01T00:00:00.250000", 1_704_067_200.25),
    ],
)
def test_iso_timestamps(text: str, expected: float) -> None:
    [event] = parse_events(body(good(timestamp=text)), None, CONFIG)
    assert event.timestamp == expected


def test_defaults_timestamp_now_and_unique_event_ids() -> None:
    before = time.time()
    events = parse_events(body(*[{"user_id": "u", "item_id": "i", "type": "view"}] * 500), None, CONFIG)
    after = time.time()
    assert all(before <= event.timestamp <= after for event in events)
    ids = [event.event_id for event in events]
    assert len(set(ids)) == 500
    assert all(len(i) == 32 and i[12] == "4" and i[16] in "89ab" for i in ids)  # UUID4 hex


@pytest.mark.parametrize(
    ("fields", "field", "value", "reason"),
    [
        ({"user_id": MISSING}, "user_id", None, "required"),
        ({"user_id": None}, "user_id", None, "string or an integer"),
        ({"item_id": ""}, "item_id", "", "at least 1 character"),
        ({"item_id": "   "}, "item_id", "   ", "must not be blank"),
        ({"item_id": "x" * 257}, "item_id", "x" * 79 + "…", "at most 256 characters"),
        ({"user_id": 1.5}, "user_id", 1.5, "string or an integer"),
        ({"user_id": True}, "user_id", True, "string or an integer"),
        ({"type": "buy"}, "type", "buy", "'view', 'click', 'add_to_cart', 'purchase'"),
        ({"timestamp": "yesterday"}, "timestamp", "yesterday", "not an ISO 8601 time"),
        ({"timestamp": "1969-12-31T00:00:00Z"}, "timestamp", "1969-12-31T00:00:00Z", "after 1970"),
        ({"timestamp": -5}, "timestamp", -5, "greater than 0"),
        ({"timestamp": 0}, "timestamp", 0, "greater than 0"),
        ({"timestamp": 1_700_000_000_000}, "timestamp", 1_700_000_000_000, "looks like milliseconds"),
        ({"timestamp": float("nan")}, "timestamp", "nan", "finite"),
        ({"timestamp": True}, "timestamp", True, "Unix seconds"),
        ({"value": float("inf")}, "value", "inf", "finite"),
        ({"value": "3"}, "value", "3", "valid number"),
        ({"context": [1, 2]}, "context", "[1, 2]", "JSON object"),
        ({"context": "page=home"}, "context", "page=home", "JSON object"),
        ({"context": {"x": float("nan")}}, "context", "{'x': nan}", "NaN"),
        ({"context": {"blob": "x" * 5000}}, "context", None, "at most 4096 allowed"),
        ({"event_id": "e" * 129}, "event_id", "e" * 79 + "…", "at most 128 characters"),
        ({"recommendation_id": "r" * 129}, "recommendation_id", "r" * 79 + "…", "at most 128 characters"),
        ({"colour": "red"}, "colour", "red", "unknown field; allowed fields: user_id, item_id"),
    ],
)
def test_invalid_field(fields: dict[str, Any], field: str, value: Any, reason: str) -> None:
    """Each bad field yields exactly one error naming the event (index 1: index 0 is valid), field and value."""
    event = {name: given for name, given in good(**fields).items() if given is not MISSING}
    error = only_error(body(good(), event))
    assert (error["index"], error["field"]) == (1, field)
    assert reason in error["reason"]
    if value is not None:
        assert error["value"] == value
    json.dumps(error, allow_nan=False)  # the report is JSON-safe for a 422 body


def test_unknown_type_lists_configured_types() -> None:
    config = EventConfig(event_types={"play": 1.0, "skip": -1.0})
    assert "'play' or 'skip'" in only_error(body(good(type="click")), None, config)["reason"]
    assert parse_events(body(good(type="skip")), None, config)[0].type == "skip"


def test_configured_limits() -> None:
    config = EventConfig(max_id_length=4, max_context_bytes=10)
    assert only_error(body(good(user_id="abcde")), None, config)["field"] == "user_id"
    assert only_error(body(good(context={"k": "0123456789"})), None, config)["field"] == "context"


def test_every_invalid_event_is_reported() -> None:
    batch = [good(), good(user_id=""), good(), "not an object", good(type="x", value=math.inf), good()]
    errors = errors_of(body(*batch))
    assert [(e["index"], e["field"]) for e in errors] == [(1, "user_id"), (3, "event"), (4, "type"), (4, "value")]
    assert all(set(e) == {"index", "field", "value", "reason"} for e in errors)


def test_malformed_json() -> None:
    error = only_error(b'[{"user_id": "u1",')
    assert (error["index"], error["field"]) == (0, "body")
    assert error["reason"].startswith("malformed JSON")


def test_ndjson_sent_as_json_gets_a_hint() -> None:
    raw = "\n".join([json.dumps(good())] * 2).encode()
    assert "application/x-ndjson" in only_error(raw, "application/json")["reason"]


def test_body_must_be_object_or_array() -> None:
    assert only_error(b"42")["reason"] == "must be a JSON object or an array of objects"


def test_ndjson() -> None:
    lines = [json.dumps(good(event_id=str(i))) for i in range(3)]
    raw = "\n".join([lines[0], "", lines[1], "   ", lines[2], ""]).encode()
    events = parse_events(raw, "application/jsonl; charset=utf-8", CONFIG)
    assert [event.event_id for event in events] == ["0", "1", "2"]


def test_ndjson_errors_use_line_numbers() -> None:
    raw = "\n".join(
        [
            json.dumps(good()),
            "",
            json.dumps(good(item_id="")),
            '{"user_id": "u1", "item_id"',  # malformed
            json.dumps(good()) + "," + json.dumps(good()),  # two objects on one line
            json.dumps(good(type="nope")),
        ]
    ).encode()
    errors = errors_of(raw, NDJSON)
    assert [(e["index"], e["field"]) for e in errors] == [(2, "item_id"), (3, "body"), (4, "body"), (5, "type")]
    assert errors[1]["reason"].startswith("malformed JSON line")


@pytest.mark.parametrize(("raw", "content_type"), [(b"[]", None), (b"", None), (b"  \n", NDJSON), (b"\n\n", NDJSON)])
def test_empty_batch(raw: bytes, content_type: str | None) -> None:
    assert "empty batch" in only_error(raw, content_type)["reason"]


def test_batch_too_large() -> None:
    config = EventConfig(max_batch=3)
    assert len(parse_events(body(*[good()] * 3), None, config)) == 3
    with pytest.raises(BatchTooLargeError, match="4 events; at most 3"):
        parse_events(body(*[good()] * 4), None, config)
    with pytest.raises(BatchTooLargeError):
        parse_events("\n".join([json.dumps(good())] * 4).encode(), NDJSON, config)


def test_body_too_large() -> None:
    raw = body(good())
    with pytest.raises(BatchTooLargeError, match="bytes"):
        parse_events(raw, None, EventConfig(max_body_bytes=len(raw) - 1))


def test_config_needs_event_types() -> None:
    with pytest.raises(ValueError, match="at least one event type"):
        EventConfig(event_types={})


ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256).filter(lambda s: s == s.strip())
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
)
contexts = st.none() | st.dictionaries(
    st.text(max_size=10), json_scalars | st.lists(json_scalars, max_size=3), max_size=5
)
events = st.builds(
    Event,
    event_id=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=128),
    user_id=ids,
    item_id=ids,
    type=st.sampled_from(sorted(DEFAULT_EVENT_TYPES)),
    timestamp=st.floats(min_value=1e-3, max_value=time.time(), allow_nan=False),  # the future is refused
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    context=contexts,
    recommendation_id=st.none() | st.text(min_size=1, max_size=128),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(events, min_size=1, max_size=5), st.booleans())
def test_valid_events_round_trip(batch: list[Event], as_ndjson: bool) -> None:
    objects = [dataclasses.asdict(event) for event in batch]
    if as_ndjson:
        raw, content_type = "\n".join(json.dumps(obj) for obj in objects).encode(), NDJSON
    else:
        raw, content_type = json.dumps(objects).encode(), "application/json"
    assert parse_events(raw, content_type, CONFIG) == batch


def test_future_timestamps_beyond_the_skew_are_refused_and_the_limit_can_be_lifted() -> None:
    body = json.dumps(
        [
            {"user_id": "u", "item_id": "a", "type": "view", "timestamp": time.time() + 30},
            {"user_id": "u", "item_id": "b", "type": "view", "timestamp": time.time() + 7_200},
            {"user_id": "u", "item_id": "c", "type": "view", "timestamp": "2100-01-01T00:00:00+00:00"},
        ]
    ).encode()
    with pytest.raises(EventValidationError) as raised:
        parse_events(body, "application/json", EventConfig(max_future_skew_s=3_600.0))
    assert [(e["index"], e["field"]) for e in raised.value.errors] == [(1, "timestamp"), (2, "timestamp")]
    assert len(parse_events(body, "application/json", EventConfig(max_future_skew_s=None))) == 3
    with pytest.raises(ValueError, match="max_future_skew_s"):
        EventConfig(max_future_skew_s=-1.0)
