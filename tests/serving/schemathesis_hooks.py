"""Schemathesis hooks for tests/serving/test_openapi.py (loaded by the schemathesis process itself).

One rule of the API depends on the clock, which a schema cannot state: an event's timestamp may be at most
``max_future_skew_s`` ahead of the server's time (and an ISO time must be after 1970). Before each call, a
*schema-valid* timestamp that breaks that rule is moved to the present, so that a valid event is not refused
for a reason the document can only describe in words; invalid timestamps (wrong type, out of the schema's
bounds) are left alone, so negative cases stay negative. The rule itself is tested in test_http.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import schemathesis

SKEW_S = 86_400.0


def _present(value: Any) -> Any:
    now = time.time()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and 0 < value < 1e11 and value > now + SKEW_S / 2:
        return now
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        if seconds <= 0 or seconds > now + SKEW_S / 2:
            return datetime.fromtimestamp(now, UTC).isoformat()
    return value


def _fix(body: Any) -> None:
    events = body if isinstance(body, list) else [body]
    for event in events:
        if isinstance(event, dict) and "timestamp" in event:
            event["timestamp"] = _present(event["timestamp"])


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path != "/v1/events" or case.operation.method.upper() != "POST":
        return
    _fix(case.body)
    if "json" in kwargs:
        _fix(kwargs["json"])
