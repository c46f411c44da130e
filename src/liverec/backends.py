"""Choosing the storage backend from the settings: the one place that knows both deployments.

``backend = "embedded"`` (the default): the event log is ``<data-dir>/events.db`` (SQLite, WAL) and the
state lives in the process (snapshot ``<data-dir>/state.npz``). ``backend = "redis"``: the log is a Redis
Stream and the state is in Redis under ``redis_prefix``, shared by every ``liverec serve`` replica and
``liverec worker``; new model versions are announced over Redis. The model registry is
``<data-dir>/models`` in both (in the Redis deployment every process must see the same folder: one machine,
or shared storage).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from liverec.events.log import EventLog, SQLiteEventLog, StoredEvent
from liverec.registry import ModelRegistry, RedisAnnouncer
from liverec.settings import Settings
from liverec.state.store import StateConfig

__all__ = [
    "EVENTS_FILE",
    "MODELS_DIR",
    "STATE_FILE",
    "open_event_log",
    "open_redis_state",
    "open_registry",
    "redis_for",
    "state_config",
]

STATE_FILE = "state.npz"
EVENTS_FILE = "events.db"
MODELS_DIR = "models"

#: Consumer group of the workers that apply events to the Redis state.
STATE_GROUP = "state"


def state_config(settings: Settings) -> StateConfig:
    return StateConfig(
        max_history=settings.max_history,
        half_life_days=settings.popularity_half_life_days,
        event_weights=dict(settings.event_types),
    )


def redis_for(settings: Settings) -> Any:
    from liverec.events.redis_log import redis_client

    return redis_client(settings.redis_url)


def open_event_log(
    settings: Settings,
    on_commit: Callable[[list[StoredEvent]], Any] | None = None,
    *,
    readonly: bool = False,
    client: Any = None,
) -> EventLog:
    """The configured event log (``readonly`` only matters for SQLite: a second process's view)."""
    if settings.backend == "redis":
        from liverec.events.redis_log import RedisEventLog

        return RedisEventLog(client or redis_for(settings), settings.redis_prefix, on_commit=on_commit)
    path = Path(settings.data_dir) / EVENTS_FILE
    if readonly:
        return SQLiteEventLog(path, readonly=True)
    return SQLiteEventLog(path, on_commit=on_commit, synchronous=settings.synchronous)


def open_registry(settings: Settings, client: Any = None) -> ModelRegistry:
    """``<data-dir>/models``; with the Redis backend, promotions are also announced to every replica."""
    announcer = None
    if settings.backend == "redis":
        announcer = RedisAnnouncer(client or redis_for(settings), settings.redis_prefix)
    return ModelRegistry(Path(settings.data_dir) / MODELS_DIR, announcer=announcer)


def open_redis_state(settings: Settings, client: Any = None, *, popularity_ttl_s: float | None = None) -> Any:
    """The shared Redis state of the configured prefix (``RedisState``)."""
    from liverec.state.redis_store import RedisState

    ttl = settings.redis_popularity_ttl_s if popularity_ttl_s is None else popularity_ttl_s
    client = client or redis_for(settings)
    return RedisState(client, settings.redis_prefix, state_config(settings), popularity_ttl_s=ttl)
