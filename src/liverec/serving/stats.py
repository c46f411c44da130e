"""What ``GET /v1/stats`` answers: the engine's numbers now and its rates over the last few seconds.

Nothing here runs while nobody asks. The rates are differences between two readings of what serving counts
anyway: the log offset the state has applied (events) and the request-latency histogram of the metrics
middleware (recommendations and their p99). Each call of :meth:`StatsWindow.read` takes one reading and keeps
it for :attr:`StatsWindow.window_s` seconds; a dashboard polling once a second thus sees the rates of the last
few seconds; the first call, having nothing to compare with, answers them as null, and so does a call less than
50 ms after the oldest reading kept (too short a window to say a rate).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from liverec.serving.engine import Engine
from liverec.serving.metrics import Metrics

__all__ = ["RECOMMENDATION_ROUTES", "StatsWindow", "histogram_quantile"]

#: The routes (method, path template) whose answers count as recommendations.
RECOMMENDATION_ROUTES = frozenset(
    {
        ("GET", "/v1/users/{user_id}/recommendations"),
        ("POST", "/v1/recommendations"),
        ("GET", "/v1/items/{item_id}/similar"),
    }
)


@dataclass(frozen=True)
class _Reading:
    at: float  # time.monotonic()
    offset: int  # the last log offset applied to the state
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count) of the recommendation routes


def histogram_quantile(quantile: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """The ``quantile`` of a cumulative histogram, interpolated linearly inside its bucket as Prometheus'
    ``histogram_quantile`` does; None when it counts nothing. A quantile in the open last bucket is the
    highest finite bound (the histogram knows no more)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile: expected a number in [0, 1], got {quantile}")
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


class StatsWindow:
    """Readings of the engine's counters, kept for ``window_s`` seconds, and the numbers they give.

    One per app (``app.state.stats``); safe to call from several threads at once.
    """

    def __init__(self, engine: Engine, metrics: Metrics, window_s: float = 5.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s: expected a number of seconds > 0, got {window_s}")
        self.engine = engine
        self.metrics = metrics
        self.window_s = window_s
        self._readings: deque[_Reading] = deque()
        self._lock = threading.Lock()

    def _recommendation_buckets(self) -> tuple[tuple[float, float], ...]:
        """The cumulative latency buckets of every recommendation route together."""
        counts: dict[float, float] = {}
        for family in self.metrics.latency.collect():
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                if (sample.labels.get("method"), sample.labels.get("route")) not in RECOMMENDATION_ROUTES:
                    continue
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
        return tuple(sorted(counts.items()))

    def read(self) -> dict[str, Any]:
        """The numbers of ``GET /v1/stats`` (see ``serving.schemas.StatsOut`` for each field)."""
        engine = self.engine
        state = engine.state
        reading = _Reading(time.monotonic(), int(state.offset), self._recommendation_buckets())
        with self._lock:
            while self._readings and reading.at - self._readings[0].at > self.window_s:
                self._readings.popleft()
            earlier = self._readings[0] if self._readings else None
            self._readings.append(reading)
        events_per_s = recommendations_per_s = p99_ms = window = None
        if earlier is not None and reading.at - earlier.at > 0.05:
            window = reading.at - earlier.at
            events_per_s = max(0, reading.offset - earlier.offset) / window
            before = dict(earlier.buckets)
            delta = tuple((bound, count - before.get(bound, 0.0)) for bound, count in reading.buckets)
            recommendations_per_s = (delta[-1][1] if delta else 0.0) / window
            p99 = histogram_quantile(0.99, delta)
            p99_ms = None if p99 is None else p99 * 1000.0
        serving = engine.serving
        log_offset = engine.log.last_offset()
        model_age_s = updater_lag = None
        if serving is not None:
            created = serving.manifest.get("created_at")
            model_age_s = None if created is None else max(0.0, time.time() - float(created))
            learned = serving.manifest.get("training", {}).get("last_offset")
            updater_lag = None if learned is None else max(0, log_offset - int(learned))
        return {
            "window_s": window,
            "events_per_s": events_per_s,
            "recommendations_per_s": recommendations_per_s,
            "recommendation_p99_ms": p99_ms,
            "events_in_log": engine.log.count(),
            "log_offset": log_offset,
            "state_lag_events": max(0, log_offset - reading.offset),
            "model_age_s": model_age_s,
            "updater_lag_events": updater_lag,
            "users": int(state.n_users),
            "items": int(state.n_items),
            "model_version": serving.version if serving is not None else None,
            "retrieval": engine.retrieval,
        }
