"""The embedded deployment: one data folder, the SQLite event log and the state in this process.

``<data-dir>/events.db`` is the log (SQLite, WAL) and catalogue; the state lives in the serving process and
is snapshotted to ``<data-dir>/state.npz``; new model versions are found by polling ``models/PROMOTED``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from liverec.backends.base import EVENTS_FILE, STATE_FILE, Backend, OnCommit
from liverec.errors import UsageError
from liverec.events.log import EventLog, SQLiteEventLog
from liverec.settings import Settings
from liverec.state.base import StateStore
from liverec.state.store import State

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedBackend"]

#: Events read per batch when a state catches up with the log.
_READ_BATCH = 50_000


class EmbeddedBackend(Backend):
    """SQLite log + in-process :class:`~liverec.state.store.State` + snapshot files (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._saved_offset = -1  # the offset of the last snapshot this process wrote

    @property
    def log_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    # -- the event log -----------------------------------------------------------------------------
    def open_log(self, on_commit: OnCommit | None = None, *, readonly: bool = False) -> SQLiteEventLog:
        if readonly:
            return SQLiteEventLog(self.log_path, readonly=True)
        return SQLiteEventLog(self.log_path, on_commit=on_commit, synchronous=self.settings.synchronous)

    def describe(self) -> str:
        return str(self.log_path)

    def require_log(self, hint: str | None = None) -> None:
        if not self.log_path.exists():
            message = f"--data-dir: no event log at {str(self.log_path)!r}"
            raise UsageError(f"{message}; {hint}" if hint else message)

    # -- the state ---------------------------------------------------------------------------------
    def open_state(self) -> State:
        """The snapshot (when readable and made with these settings) brought up to the log, else a rebuild."""
        state, recovery = self._load_snapshot()
        with self.open_log() as event_log:
            if state.offset > event_log.last_offset():
                logger.warning("state snapshot is ahead of the log; rebuilding from the log")
                state, recovery = State(self.state_config), "rebuild"
            _catch_up(state, event_log)
            for record in event_log.items():
                if record["deleted"]:
                    state.remove_item(record["item_id"])
                else:
                    state.put_item(record["item_id"], record)
        logger.info("state ready", extra={"recovery": recovery, "offset": state.offset, "users": state.n_users})
        return state

    def _load_snapshot(self) -> tuple[State, str]:
        path = self.state_path
        if path.exists():
            try:
                state = State.load(path, self.state_config)
            except (OSError, ValueError, KeyError) as error:
                logger.warning("state snapshot unreadable, rebuilding from the log", extra={"error": str(error)})
                state = None
            if state is not None:
                return state, "snapshot"
            logger.warning("state snapshot made with other settings; rebuilding from the log")
        return State(self.state_config), "rebuild"

    def rebuild_state(self) -> State:
        """Replay the whole log into a fresh state and write ``state.npz``."""
        state = State(self.state_config)
        with self.open_log() as event_log:
            _catch_up(state, event_log)
        state.snapshot(self.state_path)
        return state

    def save_state(self, state: StateStore, *, if_changed: bool = False) -> None:
        """Write ``state.npz`` (``if_changed``: only when the state moved since this process last wrote it)."""
        if not isinstance(state, State):
            raise TypeError(f"the embedded backend snapshots an in-process State, got {type(state).__name__}")
        offset = state.offset
        if if_changed and self.state_path.exists() and offset == self._saved_offset:
            return
        state.snapshot(self.state_path)
        self._saved_offset = offset


def _catch_up(state: State, event_log: EventLog) -> None:
    """Apply the log after the state's offset (everything, for a new state)."""
    while True:
        batch = event_log.read(after_offset=state.offset, limit=_READ_BATCH)
        if not batch:
            break
        state.apply(batch)
