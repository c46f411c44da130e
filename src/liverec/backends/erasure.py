"""Erasure of a user and the retention pass, over whichever backend holds the log and the state.

:func:`forget_user` (``DELETE /v1/users/{id}``, ``liverec forget-user``) and :func:`apply_retention` (the
``retention_days`` schedule) run the same steps:

1. the log deletes the events and leaves no copy behind (SQLite: ``secure_delete`` + a ``TRUNCATE``
   checkpoint of the WAL; Redis: ``XDEL``, the dedupe entries, then a rewrite of the stream);
2. a user's erasure rewrites, under the registry lock, every model version that lists the user
   (:meth:`~liverec.registry.ModelRegistry.forget_users`) and records the erasure in the log (a salted hash,
   never the id) while still holding the lock: the updater's registrations are refused from then on until it
   has started again from the scrubbed versions and log;
3. the state drops the user (or rebuilds the affected users' sequences from what they have left): the live
   state where the caller holds it, else the shared one (Redis) or the snapshot file (embedded, whose server,
   if one runs, follows the erasure record within a second).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from liverec.events.log import ErasedEvents, EventLog, StoredEvent, log_is_timed
from liverec.events.pseudonyms import erasure_token
from liverec.state.base import StateStore

if TYPE_CHECKING:
    from liverec.backends.base import Backend

logger = logging.getLogger(__name__)

__all__ = ["ErasureReport", "RetentionReport", "apply_retention", "forget_user"]


@dataclass(frozen=True)
class ErasureReport:
    """What erasing one user did (the answer of ``DELETE /v1/users/{id}`` and ``liverec forget-user``)."""

    user_id: str  # as asked (the raw id, also where ids are pseudonymised)
    events_deleted: int
    state: bool  # whether the live state knew the user (and dropped them)
    models_rewritten: list[str] = field(default_factory=list)  # versions rewritten without the user
    trained_on: list[str] = field(default_factory=list)  # versions whose training data held the user's events
    erased_at: float = 0.0
    epoch: int = 0  # the log's erasure epoch after this erasure
    seconds: float = 0.0
    impressions_deleted: int = 0  # served lists of the user (and the rewards joined to them)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RetentionReport:
    """What one retention pass did: events timestamped before ``cutoff`` were deleted."""

    cutoff: float
    events_deleted: int
    users_affected: int
    epoch: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def forget_user(backend: Backend, user_id: str, *, log: EventLog, state: StateStore | None) -> ErasureReport:
    """Erase ``user_id`` (a raw id) from the log, the model versions and the state (see the module docstring).

    ``state``: the live state the caller serves from (dropped in place and, embedded, snapshotted), or None
    for a process that holds none (``liverec forget-user``). Idempotent: a second call finds nothing."""
    started = time.perf_counter()
    key = backend.user_key(user_id)
    erased = log.erase_events(user_id=key)
    registry = backend.open_registry()
    with registry.exclusive():
        forgotten = registry.forget_users([key], erased.offsets)
        epoch = log.record_erasure("user", erasure_token(key))
    if state is not None:
        known = state.reset_users([key]) > 0
        backend.follow_erasures(state, log, applied=epoch)
    else:
        known = backend.forget_in_stored_state([key], log)
    report = ErasureReport(
        user_id=user_id,
        events_deleted=erased.count,
        state=known,
        models_rewritten=forgotten.rewritten,
        trained_on=forgotten.trained_on,
        erased_at=time.time(),
        epoch=epoch,
        seconds=round(time.perf_counter() - started, 4),
        impressions_deleted=erased.impressions,
    )
    logger.info(
        "user erased",
        extra={k: v for k, v in report.to_json().items() if k != "user_id"},  # the log holds no user id
    )
    return report


def apply_retention(
    backend: Backend, retention_days: float, *, log: EventLog, state: StateStore | None, now: float | None = None
) -> RetentionReport:
    """Delete every event timestamped more than ``retention_days`` before ``now`` (default: the clock) and
    rebuild the affected users' sequences from what they have left (a user left with nothing is dropped).

    Model versions are not rewritten: they keep no event, and users that remain in them are dropped by their
    own erasure. Item statistics keep the deleted events' contribution, which time decay has nearly zeroed."""
    started = time.perf_counter()
    cutoff = (time.time() if now is None else now) - retention_days * 86_400.0
    if not log_is_timed(log):  # positions are no age: every imported event would look 56 years old
        logger.error(
            "retention_days is set, but the log holds events with order and no time (imported from a sequences "
            "file): their age is unknown, so the retention pass deletes nothing; erase users with forget-user"
        )
        return RetentionReport(cutoff, 0, 0, log.erasure_epoch(), round(time.perf_counter() - started, 4))

    def refresh(erased: ErasedEvents, remaining: list[StoredEvent]) -> None:
        if state is not None:
            state.reset_users(erased.users, remaining)

    erased = log.erase_events(before=cutoff, on_erased=refresh)
    epoch = log.erasure_epoch()
    if erased.count:
        epoch = log.record_erasure("retention")
        if state is not None:
            backend.follow_erasures(state, log, applied=epoch)
    report = RetentionReport(cutoff, erased.count, len(erased.users), epoch, round(time.perf_counter() - started, 4))
    logger.info("retention pass", extra=report.to_json())
    return report
