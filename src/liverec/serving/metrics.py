"""The app's Prometheus metrics and the middleware that counts and times every request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from liverec.registry import STATUSES, ModelRegistry
from liverec.serving.engine import Engine

__all__ = ["Metrics", "MetricsMiddleware", "ModelVersionsCollector"]

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
        self.registry.register(ModelVersionsCollector(engine.registry, engine.log.last_offset))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
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


class ModelVersionsCollector(Collector):
    """What the model registry says about the updater, read at each scrape: the updater runs in another
    process (``liverec worker``) and leaves its progress and its gate's decisions in the version manifests.

    - ``liverec_model_versions{status}``: registered versions by status (candidate, promoted, retired, rejected).
    - ``liverec_gate_decisions_total{decision}``: versions the updater's gate promoted or rejected.
    - ``liverec_updater_offset``: the highest log offset a registered version has learned.
    - ``liverec_updater_lag_events``: events in the log that no registered version has learned (the log's last
      offset minus ``liverec_updater_offset``); an updater that keeps up holds it under ``updater_every_events``.
    - ``liverec_updater_last_version_timestamp_seconds``: when the newest version was registered (Unix s).

    The three updater series are absent until a version exists. Manifests are re-read only when their file
    changed (one ``stat`` per version and scrape), so a registry of thousands of versions stays cheap.
    """

    def __init__(self, registry: ModelRegistry, last_offset: Callable[[], int]) -> None:
        self.model_registry = registry
        self.last_offset = last_offset
        self._manifests: dict[str, tuple[int, dict[str, Any]]] = {}  # version -> (manifest mtime_ns, manifest)

    def _read_manifests(self) -> list[dict[str, Any]]:
        current: dict[str, tuple[int, dict[str, Any]]] = {}
        for version in self.model_registry.versions():
            try:
                stamp = (self.model_registry.root / version / "manifest.json").stat().st_mtime_ns
                cached = self._manifests.get(version)
                current[version] = (
                    cached if cached and cached[0] == stamp else (stamp, self.model_registry.manifest(version))
                )
            except (FileNotFoundError, KeyError):  # renamed away by an erasure's rewrite meanwhile: next scrape
                continue
        self._manifests = current
        return [manifest for _, manifest in current.values()]

    def collect(self) -> Iterator[Metric]:
        manifests = self._read_manifests()
        versions = GaugeMetricFamily("liverec_model_versions", "registered model versions by status", labels=["status"])
        for status in STATUSES:
            versions.add_metric([status], sum(1 for m in manifests if m.get("status") == status))
        yield versions
        decisions = CounterMetricFamily(
            "liverec_gate_decisions", "versions the updater's gate promoted or rejected", labels=["decision"]
        )
        judged = [m["gate"] for m in manifests if isinstance(m.get("gate"), dict)]
        decisions.add_metric(["promoted"], sum(1 for gate in judged if gate.get("promoted")))
        decisions.add_metric(["rejected"], sum(1 for gate in judged if not gate.get("promoted")))
        yield decisions
        if not manifests:
            return
        learned = max(int((m.get("training") or {}).get("last_offset") or 0) for m in manifests)
        yield GaugeMetricFamily(
            "liverec_updater_offset", "the highest log offset a registered model version has learned", value=learned
        )
        yield GaugeMetricFamily(
            "liverec_updater_lag_events",
            "events in the log that no registered model version has learned",
            value=max(0, self.last_offset() - learned),
        )
        yield GaugeMetricFamily(
            "liverec_updater_last_version_timestamp_seconds",
            "when the newest model version was registered (Unix time)",
            value=max(float(m.get("created_at") or 0.0) for m in manifests),
        )


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
