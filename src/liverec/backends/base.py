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
from typing import TYPE_CHECKING, Any, Protocol, Self

from liverec.events.log import ConsumerGroupLog, EventLog, StoredEvent
from liverec.events.pseudonyms import pseudonymiser
from liverec.experiments import EXPERIMENTS_FILE, ExperimentStore, SQLiteExperimentStore
from liverec.registry import Announcer, ModelRegistry
from liverec.settings import Settings
from liverec.state.base import StateStore
from liverec.state.store import StateConfig

if TYPE_CHECKING:
    from liverec.backends.erasure import ErasureReport, RetentionReport

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

    #: Whether the retention pass runs in the serving process (embedded: it holds the state) or in the worker
    #: holding the updater lease (Redis: one process for the whole deployment).
    retention_by_server: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.state_config = state_config(settings)
        secret = settings.pseudonym_secret
        #: raw user id -> the form the log stores (None: as given)
        self.pseudonymise = pseudonymiser(None if secret is None else secret.get_secret_value())

    def user_key(self, user_id: str) -> str:
        """How ``user_id`` is stored (its pseudonym where ``pseudonym_secret`` is set): what to look up."""
        return user_id if self.pseudonymise is None else self.pseudonymise(user_id)

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

    def migrate(self) -> list[str]:
        """Bring the stored layout up to date, once every process of the deployment runs this version (an older one
        may not read the new layout); returns a line per change made (none: nothing was needed)."""
        return []

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

    # -- erasure and retention ---------------------------------------------------------------------
    def forget_user(
        self, user_id: str, *, log: EventLog | None = None, state: StateStore | None = None
    ) -> ErasureReport:
        """Erase ``user_id`` (a raw id) everywhere (``backends.erasure.forget_user``): ``log`` / ``state`` are the
        caller's open ones (a server's), else the log is opened here and the stored state is scrubbed."""
        from liverec.backends.erasure import forget_user

        if log is not None:
            return forget_user(self, user_id, log=log, state=state)
        with self.open_log() as opened:
            return forget_user(self, user_id, log=opened, state=state)

    def apply_retention(
        self, *, log: EventLog, state: StateStore | None, now: float | None = None
    ) -> RetentionReport | None:
        """Delete events older than ``retention_days`` (None when the setting is off)."""
        from liverec.backends.erasure import apply_retention

        days = self.settings.retention_days
        return None if days is None else apply_retention(self, days, log=log, state=state, now=now)

    def follow_erasures(self, state: StateStore, log: EventLog, *, applied: int | None = None) -> bool:
        """Bring a state this process holds up to the log's erasure records (``applied``: an epoch this process
        has applied itself); returns whether it changed. A shared state is scrubbed by whoever erases: nothing."""
        return False

    def forget_in_stored_state(self, user_keys: list[str], log: EventLog) -> bool:
        """Drop stored users from the state where no live state of this process holds it (``liverec
        forget-user``); returns whether the state knew one of them."""
        return self.open_state().reset_users(user_keys) > 0

    # -- models and the worker ---------------------------------------------------------------------
    def announcer(self) -> Announcer | None:
        """What announces promotions to every serving process, if anything does (besides the registry's poll)."""
        return None

    def open_registry(self) -> ModelRegistry:
        """``<data-dir>/models``, with the announcer of this deployment when it has one."""
        return ModelRegistry(self.data_dir / MODELS_DIR, announcer=self.announcer())

    def open_experiments(self) -> ExperimentStore:
        """Where the deployment's experiments and serving policy live: ``<data-dir>/experiments.db``."""
        return SQLiteExperimentStore(self.data_dir / EXPERIMENTS_FILE)

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
