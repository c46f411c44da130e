"""Schemathesis hooks for tests/serving/test_openapi.py (loaded by the schemathesis process itself).

One rule of the API depends on the clock, which a schema cannot state: an event's timestamp may be at most
``max_future_skew_s`` ahead of the server's time (and an ISO time must be after 1970). Before each call, a
*schema-valid* timestamp that breaks that rule is moved to the present, so that a valid event is not refused
for a reason the document can only describe in words; invalid timestamps (wrong type, out of the schema's
bounds) are left alone, so negative cases stay negative. The rule itself is tested in test_http.py.

``POST /v1/experiments`` has two such rules (its schema says them in words): the live arms' shares sum to 1,
and arm names are unique. Schema-valid shares are rescaled to sum to 1 and repeated schema-valid names get a
suffix; anything the schema refuses is left as it is. Both rules are tested in test_experiments.py.

Re-ranking (the three recommendation routes and experiment arms) has two more, in words in its descriptions: an
arm's λ (``rerank_lambda``) needs its ``rerank``, and every re-ranker but ``popularity`` takes λ in [0, 1]. A
schema-valid λ with no re-ranker is dropped, and one above 1 for another re-ranker is scaled into [0, 1]; both
rules are tested in test_rerank_serving.py and test_experiments.py.
"""

from __future__ import annotations

import re
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


_ARM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _fix_experiment(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("arms"), list):
        return
    arms = [arm for arm in body["arms"] if isinstance(arm, dict)]
    shares = [arm.get("share") for arm in arms]
    valid = [s for s in shares if isinstance(s, int | float) and not isinstance(s, bool) and 0 < s <= 1]
    if arms and len(valid) == len(body["arms"]):
        total = sum(valid)
        for arm in arms:
            arm["share"] = arm["share"] / total
    shadows = body.get("shadow_arms")
    everything = arms + ([arm for arm in shadows if isinstance(arm, dict)] if isinstance(shadows, list) else [])
    seen: set[str] = set()
    for n, arm in enumerate(everything):
        name = arm.get("name")
        if isinstance(name, str) and _ARM_NAME.match(name) and name in seen:
            arm["name"] = f"{name[:56]}-{n}"
        if isinstance(arm.get("name"), str):
            seen.add(arm["name"])


_RERANKERS = ("mmr", "calibration", "popularity", "long-tail")


def _fix_rerank(values: Any) -> None:
    if not isinstance(values, dict):
        return
    strength = values.get("rerank_lambda")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1e6:
        return
    name = values.get("rerank")
    if name is None or name == "none":
        del values["rerank_lambda"]
    elif name in _RERANKERS and name != "popularity" and strength > 1:
        values["rerank_lambda"] = strength / 1e6


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    method, path = case.operation.method.upper(), case.operation.path
    if method == "POST" and path == "/v1/experiments":
        _fix_experiment(case.body)
        if "json" in kwargs:
            _fix_experiment(kwargs["json"])
        for body in (case.body, kwargs.get("json")):
            if isinstance(body, dict):
                for key in ("arms", "shadow_arms"):
                    for arm in body.get(key) if isinstance(body.get(key), list) else []:
                        _fix_rerank(arm)
    if path.endswith("/recommendations") or path.endswith("/similar"):
        for values in (case.query, kwargs.get("params"), case.body, kwargs.get("json")):
            _fix_rerank(values)
    if path != "/v1/events" or method != "POST":
        return
    _fix(case.body)
    if "json" in kwargs:
        _fix(kwargs["json"])
