"""Choosing the storage backend from the settings: the one place that knows both deployments.

``backend = "embedded"`` (the default, :mod:`liverec.backends.embedded`): the event log is
``<data-dir>/events.db`` (SQLite, WAL) and the state lives in the process (snapshot ``<data-dir>/state.npz``).
``backend = "redis"`` (:mod:`liverec.backends.redis`): the log is a Redis Stream and the state is in Redis
under ``redis_prefix``, shared by every ``liverec serve`` replica and ``liverec worker``; new model versions
are announced over Redis. The model registry is ``<data-dir>/models`` in both. Everything else talks to a
:class:`~liverec.backends.base.Backend`.
"""

from __future__ import annotations

from liverec.backends.base import EVENTS_FILE, MODELS_DIR, STATE_FILE, Backend, OnCommit, state_config
from liverec.settings import Settings

__all__ = [
    "EVENTS_FILE",
    "MODELS_DIR",
    "STATE_FILE",
    "Backend",
    "OnCommit",
    "open_backend",
    "state_config",
]


def open_backend(settings: Settings) -> Backend:
    """The backend the settings configure (Redis: connected, or :class:`~liverec.errors.BackendUnavailable`)."""
    if settings.backend == "redis":
        from liverec.backends.redis import RedisBackend

        return RedisBackend(settings)
    if settings.backend == "embedded":
        from liverec.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings)
    raise ValueError(f"backend: expected 'embedded' or 'redis', got {settings.backend!r}")
