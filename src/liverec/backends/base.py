"""The storage backend seam: one interface over where the event log, the state and announcements live.

Every process (``serve``, ``worker``, ``import``, ``train``, ``rebuild``) opens a :class:`Backend` from the
settings (``liverec.backends.open_backend``) and asks it for what it needs; only the implementations
(``embedded``, ``redis``) know where things are.
"""

from __future__ import annotations

import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from liverec.events.log import ConsumerGroupLog, EventLog, StoredEvent
from liverec.registry import Announcer, ModelRegistry
from liverec.settings import Settings
from liverec.state.base import StateStore
from liverec.state.store import StateConfig

__all__ = [
    "EVENTS_FILE",
    "MODELS_DIR",
    "STATE_FILE",
    "Backend",
    "Lease",
    "OnCommit",
    "StateFeed",
    "consumer_name",
    "state_config",
]

STATE_FILE = "state.npz"
EVENTS_FILE = "events.db"
MODELS_DIR = "models"

#: Called by a log with the events of each commit, in offset order, before the append returns.
OnCommit = Callable[[list[StoredEvent]], Any]


def state_config(settings: Settings) -> StateConfig:
    """The state's part of the settings."""
    return StateConfig(
        max_history=settings.max_history,
        half_life_days=settings.popularity_half_life_days,
        event_weights=dict(settings.event_types),
    )


def consumer_name() -> str:
    """A worker name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease(Protocol):
    """The right to be the one updater of a deployment: ``held()`` acquires or renews it."""

    def held(self) -> bool: ...
    def release(self) -> None: ...


class _SoleUpdater:
    """The lease of a deployment with one worker by construction (serve's child on its data folder)."""

    def held(self) -> bool:
        return True

    def release(self) -> None:
        return None


@dataclass(frozen=True)
class StateFeed:
    """What a worker keeps applying to a shared state: the log read through a consumer group, and the state."""

    log: ConsumerGroupLog
    state: StateStore
    group: str
    claim_idle_ms: int


class Backend(ABC):
    """Where the event log, the live state and model announcements of one deployment live.

    The model registry is ``<data-dir>/models`` with either backend; what differs is whether promotions
    are also announced. A backend may hold a connection: :meth:`close` it (or use it as a context manager).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.state_config = state_config(settings)

    # -- the event log -----------------------------------------------------------------------------
    @abstractmethod
    def open_log(self, on_commit: OnCommit | None = None, *, readonly: bool = False) -> EventLog:
        """The event log; ``on_commit`` sees every commit; ``readonly``: a second process's view where that
        matters (the SQLite file)."""

    def open_ingest_log(self) -> EventLog:
        """The log for a process that appends besides the API (``liverec import``): where the state is shared,
        what it appends is applied to the state as well; otherwise the state catches up when served."""
        return self.open_log()

    @abstractmethod
    def describe(self) -> str:
        """Where the log lives, for messages (a path, or a Redis URL and prefix)."""

    def require_log(self, hint: str | None = None) -> None:
        """Raise :class:`~liverec.errors.UsageError` when there is no log to read (``hint``: what to do)."""
        return None  # a log that lives in a server always exists

    # -- the state ---------------------------------------------------------------------------------
    @abstractmethod
    def open_state(self) -> StateStore:
        """The live state, up to date with the log (loaded or rebuilt, or the shared one)."""

    @abstractmethod
    def rebuild_state(self) -> StateStore:
        """Rebuild the state from the whole log and keep it (``liverec rebuild``)."""

    def save_state(self, state: StateStore, *, if_changed: bool = False) -> None:
        """Persist ``state`` where it is not persisted by itself (``if_changed``: skip when nothing changed)."""
        return None  # a state kept in a server is persisted by the server

    # -- models and the worker ---------------------------------------------------------------------
    def announcer(self) -> Announcer | None:
        """What announces promotions to every serving process, if anything does (besides the registry's poll)."""
        return None

    def open_registry(self) -> ModelRegistry:
        """``<data-dir>/models``, with the announcer of this deployment when it has one."""
        return ModelRegistry(self.data_dir / MODELS_DIR, announcer=self.announcer())

    def open_state_feed(self) -> StateFeed | None:
        """The events a worker must apply to a shared state; None where each server applies its own."""
        return None

    def updater_lease(self, owner: str) -> Lease:
        """Who may run the online updater now (``owner``: this worker's name)."""
        return _SoleUpdater()

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's connection (logs and states it opened must be closed first)."""
        return None  # nothing held by default

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
