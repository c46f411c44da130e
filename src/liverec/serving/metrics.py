"""The app's Prometheus metrics and the middleware that counts and times every request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from liverec.serving.engine import Engine

__all__ = ["Metrics", "MetricsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own (two apps in one process don't clash)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "liverec_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "liverec_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter("liverec_events_ingested", "events durably stored", registry=self.registry)
        self.duplicates = Counter(
            "liverec_events_duplicate", "events skipped as repeated event_id", registry=self.registry
        )
        self.rejected = Counter("liverec_events_rejected", "events in rejected batches", registry=self.registry)
        self.fallbacks = Counter(
            "liverec_recommendation_fallbacks", "answers served by popularity", ["reason"], registry=self.registry
        )
        self.rewards_joined = Counter(
            "liverec_rewards_joined", "events joined to the list they answered", registry=self.registry
        )
        self.rewards_unjoined = Counter(
            "liverec_rewards_unjoined",
            "rewarded events whose list is unknown (or not yet logged) or lacks their item; stored all the same",
            ["reason"],
            registry=self.registry,
        )
        self.rewards_late = Counter(
            "liverec_rewards_late", "joined events later than reward_window_s after their list", registry=self.registry
        )
        self.batch_size = Histogram(
            "liverec_recommendation_batch_size",
            "recommendation requests scored in one model pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        model = Gauge("liverec_model_info", "the serving model version (value 1)", ["version"], registry=self.registry)
        self._model_gauge = model
        self._model_version: str | None = None
        Gauge("liverec_users", "users in the state", registry=self.registry).set_function(lambda: engine.state.n_users)
        Gauge("liverec_items", "items in the state", registry=self.registry).set_function(lambda: engine.state.n_items)
        Gauge("liverec_log_offset", "last log offset applied to state", registry=self.registry).set_function(
            lambda: engine.state.offset
        )
        self.engine = engine

    def render(self) -> bytes:
        version = self.engine.model_version
        if version != self._model_version:
            if self._model_version is not None:
                self._model_gauge.remove(self._model_version)
            if version is not None:
                self._model_gauge.labels(version=version).set(1)
            self._model_version = version
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: request count and latency per route template (not per raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
