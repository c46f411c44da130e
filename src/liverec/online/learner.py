"""The online learner: new events in, incremental updates of a fitted model out.

:class:`OnlineLearner` wraps a fitted model that ``supports_partial_fit`` (SASRec is the one that
matters; MF works too). It keeps its own record of each user's recent item sequence, so an update can
train on a user's *whole recent sequence* — the new positions are learned with the context that
precedes them, which is what a sequence model needs — instead of on the new events alone.

* :meth:`OnlineLearner.observe` takes events with external ids in stream order, appends them to the
  users' sequences and queues the users. An item never seen before gets the next model id at once
  (so ids stay dense and in order of first appearance); the model's item table grows at the next update.
* :meth:`OnlineLearner.update` trains the model on one batch: every queued user's updated sequence plus a
  *rehearsal sample* of other users seen before (``rehearsal_ratio`` old users per queued user, uniformly
  drawn), which keeps the model from forgetting the rest of the population while it follows the stream.
  A queued user's earlier items are context: only the new events are learned as targets (unless
  ``relearn_history``); a rehearsed user's whole sequence is learned again.
  The learning rate and the number of epochs of the update are settings of the learner.
* :meth:`OnlineLearner.should_update` says when the cadence (every N events and/or T seconds) is due.

The learner does no file or network I/O: a caller (the replay in :mod:`liverec.evaluation.replay`, or
an updater process tailing the event log) feeds it events and decides what to do with the model —
:attr:`OnlineLearner.item_ids` gives the external item ids in model order for saving or registering it.
Given the same model, events and ``seed`` it produces the same weights: the rehearsal sample comes from
its own generator and each update runs under a torch random state seeded from it (dropout masks),
without touching the process's global torch random state.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import Recommender, UpdateOptions

#: Items kept per user when the model reads whole histories (``context_length()`` None); else its context + 1.
DEFAULT_MAX_SEQUENCE = 201


#: Online-update settings per model that :class:`LearnerConfig` leaves to the model, chosen on the first half of
#: the ml-100k replay as the most accurate of the settings fast enough to follow a busy stream on one core:
#: training steps of 16 sequences (several steps per update instead of one) on each user's last 101 items.
#: The measurements are in docs/results.md, "Streaming replay". Used by the replay and by the updater. (SASRec's
#: own ``update_batch_positions`` then lets a batch of short windows take more than 16 of them.)
TUNED_LEARNER: dict[str, dict[str, int]] = {"sasrec": {"batch_size": 16, "max_sequence": 101}}


@dataclass(frozen=True)
class LearnerConfig:
    """How and when the learner updates its model.

    ``every_events`` / ``every_seconds``: :meth:`OnlineLearner.should_update` is true once this many events
    are pending, or once the oldest pending event has waited this many seconds (None switches a rule off;
    with both, whichever comes first). ``rehearsal_ratio``: old users rehearsed per user with new events
    (0 = none). ``lr_multiplier``: the model's learning rate is multiplied by this during an update (the
    model's own setting is restored afterwards). ``epochs``: passes over the update batch (None = the
    model's ``partial_fit_epochs``). ``batch_size``: the model's training batch during an update (None =
    its own; smaller batches mean more optimiser steps per update). ``max_sequence``: items kept, and
    trained, per user (None = the model's ``max_len + 1``, else :data:`DEFAULT_MAX_SEQUENCE`).
    ``relearn_history``: whether an update learns a queued user's earlier items again as targets (True) or
    reads them as context for the new events only (False; models that cannot use context are given the
    new events alone). ``seed``: rehearsal samples and dropout masks. The replay's tuned values for SASRec
    are in :data:`TUNED_LEARNER` (batch 16, last 101 items).
    """

    every_events: int | None = 1000
    every_seconds: float | None = None
    rehearsal_ratio: float = 1.0
    lr_multiplier: float = 1.0
    epochs: int | None = None
    batch_size: int | None = None
    max_sequence: int | None = None
    relearn_history: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.every_events is not None and self.every_events < 1:
            raise ValueError(f"every_events: expected a positive integer or None, got {self.every_events!r}")
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ValueError(f"every_seconds: expected a positive number or None, got {self.every_seconds!r}")
        if not self.rehearsal_ratio >= 0:
            raise ValueError(f"rehearsal_ratio: expected a number >= 0, got {self.rehearsal_ratio!r}")
        if not self.lr_multiplier > 0:
            raise ValueError(f"lr_multiplier: expected a positive number, got {self.lr_multiplier!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs: expected a positive integer or None, got {self.epochs!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer or None, got {self.batch_size!r}")
        if self.max_sequence is not None and self.max_sequence < 2:
            raise ValueError(f"max_sequence: expected an integer >= 2 or None, got {self.max_sequence!r}")


@dataclass(frozen=True)
class UpdateStats:
    """What one :meth:`OnlineLearner.update` did.

    ``events``: events learned (observed since the previous update); ``users``: users with new events,
    whose recent sequences were trained; ``rehearsed_user_ids``: external ids of the old users rehearsed
    against forgetting; ``new_items``: rows added to the model's item table; ``seconds``: wall time of
    the update; ``first_timestamp`` / ``last_timestamp``: time range of the events learned (None when
    there were none), e.g. for a model manifest.
    """

    events: int
    users: int
    rehearsed_user_ids: np.ndarray
    new_items: int
    seconds: float
    first_timestamp: float | None
    last_timestamp: float | None


class OnlineLearner:
    """Incremental updates of a fitted model from a stream of events (see the module docstring).

    ``item_ids`` / ``user_ids``: external ids of the model's items and users, in model order (one per
    row of its tables: ``len(item_ids) == model.n_items``). ``history``: the events the model was
    trained on, in those id spaces, to seed each user's recent sequence (without it, sequences start
    empty and an update sees only what was observed since). ``timed``: whether the events' timestamps are
    time (None: as ``history`` says, else True); False on an order-only log (``pipeline.log_is_timed``), so
    the update batches are order without time as the fit's were. The model is updated in place.
    """

    def __init__(
        self,
        model: Recommender,
        item_ids: Sequence[object] | np.ndarray,
        user_ids: Sequence[object] | np.ndarray,
        history: Interactions | None = None,
        config: LearnerConfig | None = None,
        timed: bool | None = None,
    ) -> None:
        if not model.supports_partial_fit:
            raise ValueError(f"model {model.name!r} cannot learn online: it does not support partial_fit")
        self.model = model
        self.config = config if config is not None else LearnerConfig()
        # order without time (an order-only log): the update batches say so, and no time gap is measured
        self.timed = timed if timed is not None else (history.timed if history is not None else True)
        self._options = UpdateOptions(
            lr_multiplier=self.config.lr_multiplier,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
        )
        model.check_update_options(self._options)  # a model without such a setting fails here, not mid-stream
        if len(item_ids) != model.n_items or len(user_ids) != model.n_users:
            raise ValueError(
                f"item_ids/user_ids: expected {model.n_items} items and {model.n_users} users (the model's "
                f"tables), got {len(item_ids)} and {len(user_ids)}"
            )
        self._item_ids = [str(i) for i in item_ids]
        self._user_ids = [str(u) for u in user_ids]
        self._item_index = {item: index for index, item in enumerate(self._item_ids)}
        self._user_index = {user: index for index, user in enumerate(self._user_ids)}
        if len(self._item_index) != len(self._item_ids) or len(self._user_index) != len(self._user_ids):
            raise ValueError("item_ids/user_ids: every id must appear once")
        context = model.context_length()
        default_cap = DEFAULT_MAX_SEQUENCE if context is None else context + 1
        self._cap = self.config.max_sequence or default_cap
        self._sequences: list[list[int]] = [[] for _ in self._user_ids]
        self._times: list[list[float]] = [[] for _ in self._user_ids]  # each sequence's event timestamps
        if history is not None:
            if history.n_users > model.n_users or history.n_items > model.n_items:
                raise ValueError(
                    f"history: id spaces ({history.n_users} users, {history.n_items} items) exceed the model's "
                    f"({model.n_users}, {model.n_items})"
                )
            recent = Histories.from_interactions(history).last(self._cap)
            if recent.timestamps is None and self.timed:
                raise ValueError("history: expected interactions with timestamps (or timed=False)")
            for user in np.flatnonzero(recent.lengths()):
                start, stop = recent.indptr[user], recent.indptr[user + 1]
                self._sequences[user] = recent.items[start:stop].tolist()
                stamps = recent.timestamps[start:stop] if recent.timestamps is not None else np.zeros(stop - start)
                self._times[user] = stamps.tolist()  # unread without time: update batches number positions
        #: users with at least two items (a trainable sequence), in order of reaching two: the rehearsal pool
        self._trainable = [user for user, sequence in enumerate(self._sequences) if len(sequence) >= 2]
        #: users in order of their first pending event -> their pending events (new items at the sequence's end)
        self._pending_users: dict[int, int] = {}
        self._pending_events = 0
        self._pending_since: float | None = None
        self._pending_times: tuple[float, float] | None = None
        self._rng = np.random.default_rng(self.config.seed)

    # ------------------------------------------------------------------------------------------ ids
    @property
    def item_ids(self) -> np.ndarray:
        """External ids of the model's items in model order (items observed since the last update join at the next)."""
        return np.asarray(self._item_ids[: self.model.n_items], dtype=object)

    @property
    def observed_item_ids(self) -> list[str]:
        """External ids of every item known so far in model order: the model's, then those joining next update."""
        return list(self._item_ids)

    @property
    def user_ids(self) -> np.ndarray:
        """External ids of the model's users in model order (new users join at the next update)."""
        return np.asarray(self._user_ids[: self.model.n_users], dtype=object)

    @property
    def pending_events(self) -> int:
        """Events observed since the last update."""
        return self._pending_events

    # ------------------------------------------------------------------------------------------ stream
    def observe(
        self,
        user_ids: Sequence[object] | np.ndarray,
        item_ids: Sequence[object] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray,
    ) -> None:
        """Append events (external ids, in stream order) to the users' sequences; learned at the next update."""
        if not len(user_ids) == len(item_ids) == len(timestamps):
            raise ValueError(
                f"user_ids, item_ids, timestamps: expected equal lengths, got "
                f"{len(user_ids)}, {len(item_ids)}, {len(timestamps)}"
            )
        if len(user_ids) == 0:
            return
        times = np.asarray(timestamps, dtype=np.float64)
        pending = self._pending_users
        for raw_user, raw_item, when in zip(user_ids, item_ids, times.tolist(), strict=True):
            user = self._index_of(str(raw_user), self._user_index, self._user_ids)
            if user == len(self._sequences):
                self._sequences.append([])
                self._times.append([])
            item = self._index_of(str(raw_item), self._item_index, self._item_ids)
            sequence, sequence_times = self._sequences[user], self._times[user]
            sequence.append(item)
            # a sequence stays in arrival order: an event older than the one before counts as simultaneous
            sequence_times.append(max(when, sequence_times[-1]) if sequence_times else when)
            if len(sequence) == 2:
                self._trainable.append(user)
            elif len(sequence) > self._cap:
                del sequence[0], sequence_times[0]
            pending[user] = pending.get(user, 0) + 1
        self._pending_events += len(times)
        first, last = float(times.min()), float(times.max())
        if self._pending_times is not None:
            first, last = min(first, self._pending_times[0]), max(last, self._pending_times[1])
        self._pending_times = (first, last)
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    def should_update(self) -> bool:
        """Whether the cadence is due: enough pending events, or the oldest pending one waited long enough."""
        if self._pending_events == 0:
            return False
        every_events, every_seconds = self.config.every_events, self.config.every_seconds
        if every_events is not None and self._pending_events >= every_events:
            return True
        waited = time.monotonic() - (self._pending_since or 0.0)
        return every_seconds is not None and waited >= every_seconds

    def update(self) -> UpdateStats:
        """Train on the pending users' sequences plus a rehearsal sample of old users; grow the item table."""
        started = time.perf_counter()
        affected = np.fromiter(self._pending_users, dtype=np.int64, count=len(self._pending_users))
        rehearsed = self._rehearsal_sample(affected)
        n_model_items = self.model.n_items
        if len(affected):
            users = np.concatenate([affected, rehearsed])
            sequences = [self._sequences[user] for user in users]
            lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
            total = int(lengths.sum())
            items = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=total)
            if self.timed:
                event_times = np.fromiter(
                    itertools.chain.from_iterable(self._times[user] for user in users), dtype=np.float64, count=total
                )
            else:  # order without time: each sequence's positions, in the order the learner keeps it
                event_times = (np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.float64)
            n_users, n_items = len(self._user_ids), len(self._item_ids)
            rows = np.repeat(users, lengths)
            batch = Interactions.from_arrays(
                rows, items, event_times, n_users=n_users, n_items=n_items, timed=self.timed
            )
            learn = None
            if not self.config.relearn_history:  # the pending events of the queued users, every rehearsed event
                learn = np.ones(total, dtype=bool)
                ends = np.cumsum(lengths[: len(affected)])
                for end, length, user in zip(ends.tolist(), lengths.tolist(), affected.tolist(), strict=False):
                    learn[end - length : end - min(self._pending_users[user], length)] = False
            torch_seed = int(self._rng.integers(2**62))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch_seed)
                self.model.partial_fit(batch, learn, options=self._options)
        times = self._pending_times
        stats = UpdateStats(
            events=self._pending_events,
            users=len(affected),
            rehearsed_user_ids=np.asarray([self._user_ids[user] for user in rehearsed], dtype=object),
            new_items=self.model.n_items - n_model_items,
            seconds=time.perf_counter() - started,
            first_timestamp=None if times is None else times[0],
            last_timestamp=None if times is None else times[1],
        )
        self._pending_users = {}
        self._pending_events = 0
        self._pending_since = None
        self._pending_times = None
        return stats

    # ------------------------------------------------------------------------------------------ internals
    @staticmethod
    def _index_of(external: str, index: dict[str, int], ids: list[str]) -> int:
        """The internal id of ``external``, appending it (next id) if it is new."""
        internal = index.get(external)
        if internal is None:
            internal = index[external] = len(ids)
            ids.append(external)
        return internal

    def _rehearsal_sample(self, affected: np.ndarray) -> np.ndarray:
        """Up to ``rehearsal_ratio * len(affected)`` users with a trainable sequence and no pending event, sorted."""
        wanted = round(self.config.rehearsal_ratio * len(affected))
        if wanted == 0:
            return np.zeros(0, dtype=np.int64)
        pool = np.asarray(self._trainable, dtype=np.int64)
        pool = pool[~np.isin(pool, affected)]
        chosen = self._rng.choice(pool, size=min(wanted, len(pool)), replace=False)
        return np.sort(chosen).astype(np.int64)
