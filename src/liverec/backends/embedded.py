"""The embedded deployment: one data folder, the SQLite event log and the state in this process.

``<data-dir>/events.db`` is the log (SQLite, WAL) and catalogue; the state lives in the serving process and
is snapshotted to ``<data-dir>/state.npz``; new model versions are found by polling ``models/PROMOTED``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from liverec.backends.base import EVENTS_FILE, STATE_FILE, Backend, OnCommit
from liverec.errors import UsageError
from liverec.events.log import ErasureRecord, EventLog, SQLiteEventLog
from liverec.events.pseudonyms import matches_token
from liverec.settings import Settings
from liverec.state.base import StateStore
from liverec.state.store import State

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedBackend"]

#: Events read per batch when a state catches up with the log.
_READ_BATCH = 50_000


class EmbeddedBackend(Backend):
    """SQLite log + in-process :class:`~liverec.state.store.State` + snapshot files (see the module docstring)."""

    retention_by_server = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        #: the offset and erasure epoch of the last snapshot this process wrote
        self._saved_offset: tuple[int, int] | None = None
        self._save_lock = threading.Lock()

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
        return SQLiteEventLog(
            self.log_path, on_commit=on_commit, synchronous=self.settings.synchronous, pseudonymise=self.pseudonymise
        )

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
            for record in event_log.iter_items():
                if record["deleted"]:
                    state.remove_item(record["item_id"])
                else:
                    state.put_item(record["item_id"], record)
            if recovery == "rebuild":  # built from the scrubbed log: every erasure so far is in it
                state.erasure_epoch = event_log.erasure_epoch()
            else:
                self.follow_erasures(state, event_log)
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
            state.erasure_epoch = event_log.erasure_epoch()
        with self._snapshot_lock():
            state.snapshot(self.state_path)
        return state

    def save_state(self, state: StateStore, *, if_changed: bool = False) -> None:
        """Write ``state.npz`` (``if_changed``: only when the state moved since this process last wrote it)."""
        if not isinstance(state, State):
            raise TypeError(f"the embedded backend snapshots an in-process State, got {type(state).__name__}")
        offset = (state.offset, state.erasure_epoch)
        if if_changed and self.state_path.exists() and offset == self._saved_offset:
            return
        with self._snapshot_lock():
            state.snapshot(self.state_path)
        self._saved_offset = offset

    @contextlib.contextmanager
    def _snapshot_lock(self) -> Iterator[None]:
        """One snapshot writer at a time, in this process and across processes (``liverec forget-user`` rewrites
        the snapshot while a server may write it): they share the file's temporary name."""
        with self._save_lock, open(self.data_dir / ".state.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- erasure -----------------------------------------------------------------------------------
    def follow_erasures(self, state: StateStore, log: EventLog, *, applied: int | None = None) -> bool:
        """Apply the erasure records after the state's epoch (but ``applied``) and write the snapshot."""
        if not isinstance(state, State):
            raise TypeError(f"the embedded backend follows erasures in an in-process State, got {type(state).__name__}")
        records = log.erasures_after(state.erasure_epoch)
        if not records:
            return False
        _apply_records(state, [record for record in records if record.epoch != applied], log)
        state.erasure_epoch = max(state.erasure_epoch, records[-1].epoch)
        self.save_state(state)
        return True

    def forget_in_stored_state(self, user_keys: list[str], log: EventLog) -> bool:
        """Drop the users from ``state.npz`` (and follow every erasure since it was written); an unreadable
        snapshot is deleted (the next server rebuilds from the scrubbed log)."""
        path = self.state_path
        if not path.exists():
            return False
        try:
            state = State.load(path, self.state_config)
        except (OSError, ValueError, KeyError):
            state = None
        if state is None:
            path.unlink(missing_ok=True)
            return False
        known = state.reset_users(user_keys) > 0
        if not self.follow_erasures(state, log):
            self.save_state(state)
        return known


def _apply_records(state: State, records: list[ErasureRecord], event_log: EventLog) -> None:
    """Drop the users named by user-erasure records (their tokens hash a user with a salt; the state's users
    are hashed with it to find them); after a retention record, rebuild every user's sequence from the log."""
    tokens = [record.token for record in records if record.kind == "user" and record.token]
    if tokens:
        erased = [user for user in list(state.user_ids) if any(matches_token(user, token) for token in tokens)]
        state.reset_users(erased)
    if any(record.kind == "retention" for record in records):
        state.reset_users(list(state.user_ids), (event for batch in event_log.iter_all() for event in batch))


def _catch_up(state: State, event_log: EventLog) -> None:
    """Apply the log after the state's offset (everything, for a new state)."""
    while True:
        batch = event_log.read(after_offset=state.offset, limit=_READ_BATCH)
        if not batch:
            break
        state.apply(batch)
