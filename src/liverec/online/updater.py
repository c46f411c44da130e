"""The updater: tail the event log, learn incrementally, register candidates, promote what the gate approves.

One loop (``liverec worker``, or a child process of ``liverec serve``):

1. read the events after the committed offset (at-least-once: the offset is committed in the
   manifest of each registered version, ``training.last_offset``, so a restart resumes from the newest
   version the updater wrote and learns again anything after it);
2. **gate** a pending candidate first, test-then-train: each new event is ranked by the candidate and
   by the serving version from the user's history before it (seen items excluded, full catalogue);
   after ``gate_events`` events the candidate is promoted unless its NDCG@10 is worse than the
   serving version's by more than ``gate_margin``; otherwise it is kept unserved as ``rejected`` with
   the numbers in its manifest's ``reason``. While the updater keeps up, the gate ranks every new
   event (or the ``gate_sample_rate`` share of them); while events wait behind it (a read fills its
   batch), it ranks a hash-chosen sample sized so that ranking takes at most ``gate_max_share`` of the
   updater's time, from the measured cost of ranking and of everything else: a backlog is worked off
   at the learner's pace, and decisions then rest on ``gate_events`` events spread over more;
3. feed the events to the :class:`~liverec.online.learner.OnlineLearner`; when its cadence is due,
   update the model and register the result as the next candidate (lineage: ``parent``, the events
   and offsets trained on);
4. every ``retrain_interval_s``, a full retraining from the log (:func:`liverec.pipeline.train_and_register`)
   yields a candidate that goes through the same gate; if promoted, the learner continues from it.

Servers notice promotions by polling the registry's ``PROMOTED`` pointer (within a second).

Erasure: the learner's recent sequences, the gate and the updater's state hold users. When the log's erasure
epoch changes (a user was erased, or old events were dropped by retention) the updater forgets all of it and
starts again from the newest usable version (rewritten by the erasure) and the scrubbed log. A version it was
about to register is refused under the registry's lock once the epoch has moved (``register(guard=...)``), so
nothing learned from an erased user's events is written after the erasure rewrote the registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverec.backends import EVENTS_FILE, MODELS_DIR
from liverec.data.interactions import Histories, Interactions
from liverec.evaluation.metrics import ndcg_at_ranks, single_target_ranks
from liverec.events.log import EventLog, SQLiteEventLog, StoredEvent, log_is_timed
from liverec.models.base import Recommender
from liverec.online.learner import TUNED_LEARNER, LearnerConfig, OnlineLearner
from liverec.pipeline import catalogue_metadata, read_log, train_and_register
from liverec.registry import Announcer, LoadedModel, ModelRegistry, RegistrationRefused
from liverec.settings import Settings
from liverec.state.store import State, StateConfig

logger = logging.getLogger("liverec.updater")

#: The timestamp given to events from the state's histories, whose times the state does not keep.
UNKNOWN_PAST = -1.0e18


@dataclass(frozen=True)
class UpdaterConfig:
    every_events: int | None = 1000  # learn after this many new events ...
    every_seconds: float | None = 30.0  # ... or once the oldest unlearned event waited this long
    lr_multiplier: float = 1.0
    rehearsal_ratio: float = 1.0
    epochs: int | None = None
    relearn_history: bool = False  # updates learn the updated users' earlier events again (LearnerConfig)
    gate_events: int = 500  # events a candidate is judged on before it is promoted or rejected
    gate_margin: float = 0.0  # promote unless NDCG@10 is worse than the serving version's by more than this
    # fraction of new events the gate ranks (chosen by offset, deterministic): ranking is most of the
    # updater's time, so a lower rate buys throughput with decisions that span more events
    gate_sample_rate: float = 1.0
    # while events wait, the gate's sample shrinks so that ranking takes at most this share of the
    # updater's time (None: always gate_sample_rate)
    gate_max_share: float | None = 0.25
    retrain_interval_s: float | None = None  # periodic full retraining (None: off)
    retrain_params: Mapping[str, Any] = field(default_factory=dict)  # hyperparameters of the full retraining
    poll_interval_s: float = 1.0
    read_batch: int = 10_000
    seed: int = 0


@dataclass
class _Gate:
    """A candidate under evaluation and the hits/NDCG of both models on the events seen so far."""

    version: str
    model: Recommender
    item_index: dict[str, int]
    results: dict[str, list[float]] = field(default_factory=lambda: {"candidate": [], "serving": []})
    hits: dict[str, list[float]] = field(default_factory=lambda: {"candidate": [], "serving": []})
    events_read: int = 0  # new events that went by while it was judged (ranked or not)


def prequential_metrics(
    model: Recommender,
    item_index: Mapping[str, int],
    histories: Sequence[Sequence[str]],
    seen: Sequence[Sequence[str]],
    targets: Sequence[str],
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-event hit@k and NDCG@k of ``targets`` ranked over the model's whole catalogue.

    ``histories[e]`` is the user's item sequence before event ``e`` (external ids, oldest first) and
    ``seen[e]`` every item the user had interacted with (excluded from the ranking). An item the model
    does not know is a miss.
    """
    rows = [np.array([item_index[i] for i in h if i in item_index], dtype=np.int64) for h in histories]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    batch = Histories(
        np.full(len(rows), -1),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate([np.zeros(0, np.int64), *rows]),
    )
    scores = model.score(batch)
    target = np.array([item_index.get(t, -1) for t in targets], dtype=np.int64)
    for row, items in enumerate(seen):
        known = [item_index[i] for i in items if i in item_index]
        scores[row, known] = -np.inf
    ranks = single_target_ranks(scores, target)
    hit = (ranks >= 0) & (ranks < k)
    return hit.astype(np.float64), ndcg_at_ranks(ranks, k)


class Updater:
    """The model-update loop over one data folder (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | Path,
        event_weights: Mapping[str, float],
        config: UpdaterConfig | None = None,
        state_config: StateConfig | None = None,
        *,
        log: EventLog | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or UpdaterConfig()
        self.event_weights = dict(event_weights)
        self.registry = ModelRegistry(self.data_dir / MODELS_DIR, announcer=announcer)
        # the log it tails (the worker passes its backend's); by default the data folder's SQLite log, read-only
        self.log: EventLog = log if log is not None else SQLiteEventLog(self.data_dir / EVENTS_FILE, readonly=True)
        self.state = State(state_config or StateConfig(event_weights=self.event_weights))
        self.learner: OnlineLearner | None = None
        self.version: str | None = None  # the version the learner's weights descend from
        self.offset = 0
        self.gate: _Gate | None = None
        self._serving: LoadedModel | None = None
        self._last_retrain = time.monotonic()
        self.decisions: list[dict[str, Any]] = []
        # measured seconds per event ranked by the gate (both models) and per event for everything else
        self._gate_cost: float | None = None
        self._other_cost: float | None = None
        self.gate_rate = self.config.gate_sample_rate  # the sampling rate of the latest gate batch
        self.erasure_epoch = self.log.erasure_epoch()  # the erasures what this updater holds has followed
        self.restarts = 0  # times it forgot everything to follow an erasure

    # -- start-up --------------------------------------------------------------------------------
    def start(self) -> bool:
        """Load the newest usable version and replay the log up to its offset; False when there is no model."""
        manifests = [m for m in self.registry.manifests() if m["status"] != "rejected"]
        if not manifests:
            return False
        newest = manifests[-1]
        self._resume_from(self.registry.load(newest["version"]))
        if newest["status"] == "candidate" and newest.get("parent") is not None:
            self._open_gate(newest["version"])
        return True

    def _resume_from(self, loaded: LoadedModel) -> None:
        if not loaded.model.supports_partial_fit:
            raise ValueError(f"version {loaded.version}: model {loaded.model.name!r} cannot learn online")
        offset = int(loaded.manifest["training"].get("last_offset") or 0)
        self.state = State(self.state.config)
        while self.state.offset < offset:
            batch = self.log.read(
                after_offset=self.state.offset, limit=min(self.config.read_batch, offset - self.state.offset)
            )
            within = [event for event in batch if event.offset <= offset]  # erasure leaves holes in the offsets
            self.state.apply(within)
            if len(within) < len(batch) or not batch:
                break
        user_ids = loaded.user_ids or [f"__user_{n}" for n in range(loaded.model.n_users)]
        history = self._history_interactions(loaded.item_ids, user_ids)
        tuned = TUNED_LEARNER.get(loaded.model.name, {})
        learner_config = LearnerConfig(
            every_events=self.config.every_events,
            every_seconds=self.config.every_seconds,
            rehearsal_ratio=self.config.rehearsal_ratio,
            lr_multiplier=self.config.lr_multiplier,
            epochs=self.config.epochs,
            relearn_history=self.config.relearn_history,
            seed=self.config.seed,
            batch_size=tuned.get("batch_size"),
            max_sequence=tuned.get("max_sequence"),
        )
        self.learner = OnlineLearner(
            loaded.model, loaded.item_ids, user_ids, history=history, config=learner_config, timed=history.timed
        )
        self.version = loaded.version
        self.offset = offset
        logger.info("updater resumes", extra={"version": loaded.version, "offset": offset})

    def _started_learner(self) -> OnlineLearner:
        """The learner; a RuntimeError before :meth:`start` has loaded a model."""
        if self.learner is None:
            raise RuntimeError("updater: no model loaded; call start() first (and check that it returned True)")
        return self.learner

    def _describe_new_items(self) -> None:
        """Give a model that learned item side features the catalogue's categories of the items about to
        join it, so that they start from the items sharing their categories (SASRec's ``_grow_items``)."""
        learner = self._started_learner()
        model, known = learner.model, learner.observed_item_ids
        if not model.takes_item_features or not model.has_item_features() or len(known) <= model.n_items:
            return
        metadata = catalogue_metadata(self.log, known)
        if metadata is not None:
            model.set_item_features(*metadata.genre_matrix())

    def _history_interactions(self, item_ids: Sequence[str], user_ids: Sequence[str]) -> Interactions:
        """The state's recent sequences in the model's id spaces (unknown users/items dropped)."""
        items = {item: n for n, item in enumerate(item_ids)}
        users = {user: n for n, user in enumerate(user_ids)}
        names = self.state.item_ids
        rows_u: list[int] = []
        rows_i: list[int] = []
        for user_id, user in users.items():
            for index in self.state.history(user_id).tolist():
                item = items.get(names[index])
                if item is not None:
                    rows_u.append(user)
                    rows_i.append(item)
        # the state keeps no times: one far-past instant for all, so the events keep their order, come before
        # any new event, and count as one session among themselves (SASRec's window_gap_s)
        timestamps = np.full(len(rows_u), UNKNOWN_PAST)
        return Interactions.from_arrays(
            rows_u, rows_i, timestamps, n_users=len(user_ids), n_items=len(item_ids), timed=log_is_timed(self.log)
        )

    # -- the loop --------------------------------------------------------------------------------
    def run_once(self, stop: threading.Event) -> None:
        """One turn of a worker's loop: follow an erasure, load a model if none is yet, process a batch, and wait
        a poll interval (or until ``stop``) when there was nothing to do."""
        self.follow_erasures()
        try:
            if self.learner is None and not self.start():
                stop.wait(self.config.poll_interval_s)
            elif self.step() == 0:
                stop.wait(self.config.poll_interval_s)
        except RegistrationRefused:
            self.follow_erasures()

    def follow_erasures(self) -> bool:
        """When the log's erasure epoch moved, forget the learner, the gate, the serving model and the state
        (they may hold an erased user); the next turn starts again from the registry and the scrubbed log."""
        epoch = self.log.erasure_epoch()
        if epoch == self.erasure_epoch:
            return False
        logger.info("erasure: the updater starts again", extra={"epoch": epoch, "version": self.version})
        self.learner = None
        self.gate = None
        self._serving = None
        self.version = None
        self.offset = 0
        self.state = State(self.state.config)
        self.erasure_epoch = epoch
        self.restarts += 1
        return True

    def _unchanged(self) -> bool:
        """The registration guard: no erasure happened since this updater's state was built."""
        return self.log.erasure_epoch() == self.erasure_epoch

    def step(self) -> int:
        """Process the next batch of events; returns how many were read."""
        learner = self._started_learner()
        # never read past the cadence: an update after every `every_events` events, not per read batch
        limit = min(self.config.read_batch, self.config.every_events or self.config.read_batch)
        started = time.perf_counter()
        events = self.log.read(after_offset=self.offset, limit=limit)
        gate_seconds = 0.0
        if events:
            used = [e for e in events if self.event_weights.get(e.type, 0.0) > 0]
            if self.gate is not None and used:
                self.gate_rate = self._gate_rate(behind=len(events) >= limit)
                judging = time.perf_counter()
                ranked = self._judge(used, self.gate_rate)
                gate_seconds = time.perf_counter() - judging
                if ranked:
                    self._gate_cost = _moving_average(self._gate_cost, gate_seconds / ranked)
            self.state.apply(events)
            learner.observe([e.user_id for e in used], [e.item_id for e in used], [e.timestamp for e in used])
            self.offset = events[-1].offset
        if learner.should_update():
            self._update()
        if events:  # a full retraining below is not a per-event cost
            other = (time.perf_counter() - started - gate_seconds) / len(events)
            self._other_cost = _moving_average(self._other_cost, other)
        if self.config.retrain_interval_s is not None and self.gate is None:
            if time.monotonic() - self._last_retrain >= self.config.retrain_interval_s:
                self._retrain()
        return len(events)

    def _gate_rate(self, behind: bool) -> float:
        """The share of new events the gate ranks: ``gate_sample_rate``, less while events wait behind.

        Ranking ``r`` of the events costs ``r * gate_cost`` per event against ``other_cost`` for the rest;
        its share of the time, ``r * gate_cost / (r * gate_cost + other_cost)``, is held to ``gate_max_share``.
        """
        rate, share = self.config.gate_sample_rate, self.config.gate_max_share
        if not behind or share is None or self._gate_cost is None or self._other_cost is None:
            return rate
        return min(rate, share * self._other_cost / ((1.0 - share) * self._gate_cost))

    def _update(self) -> None:
        learner = self._started_learner()
        self._describe_new_items()
        stats = learner.update()
        training = {
            "kind": "online update",
            "last_offset": self.offset,
            "events": stats.events,
            "users": stats.users,
            "new_items": stats.new_items,
            "seconds": round(stats.seconds, 3),
            "first_timestamp": stats.first_timestamp,
            "last_timestamp": stats.last_timestamp,
        }
        model = learner.model
        version = self.registry.register(
            model,
            list(learner.item_ids),
            training=training,
            parent=self.version,
            user_ids=list(learner.user_ids),
            guard=self._unchanged,
        )
        logger.info("candidate registered", extra={"version": version, **training})
        self.version = version
        if self.registry.promoted() is None:
            self.registry.promote(version, reason="no version was serving")
        elif self.gate is None:
            self._open_gate(version)

    def _retrain(self) -> None:
        self._last_retrain = time.monotonic()
        learner = self._started_learner()
        data = read_log(self.log, self.event_weights, last_offset=self.offset)  # the gate's events stay unseen
        summary = train_and_register(
            data,
            self.registry,
            learner.model.name,
            self.config.retrain_params,
            promote=False,
            seed=self.config.seed,
            guard=self._unchanged,
        )
        logger.info("full retraining registered", extra={"version": summary.version, "metrics": summary.metrics})
        self._open_gate(summary.version)

    # -- the gate --------------------------------------------------------------------------------
    def _open_gate(self, version: str) -> None:
        loaded = self.registry.load(version)
        self.gate = _Gate(version, loaded.model, {item: n for n, item in enumerate(loaded.item_ids)})

    def _serving_model(self) -> LoadedModel | None:
        promoted = self.registry.promoted()
        if promoted is None:
            return None
        if self._serving is None or self._serving.version != promoted:
            self._serving = self.registry.load(promoted)
        return self._serving

    def _judge(self, events: list[StoredEvent], rate: float) -> int:
        """Score the ``rate`` sample of the events test-then-train with the candidate and the serving
        version; decide when enough. Returns how many events were ranked."""
        gate = self.gate
        serving = self._serving_model()
        if gate is None:
            raise RuntimeError("updater: _judge called with no candidate version at the gate")
        if serving is None:
            self.registry.promote(gate.version, reason="no version was serving")
            self.gate = None
            return 0
        # each event's history and seen set before it, including earlier events of this same batch
        names = self.state.item_ids
        sequences: dict[str, list[str]] = {}
        seen_sets: dict[str, set[str]] = {}
        histories: list[list[str]] = []
        seen: list[list[str]] = []
        targets: list[str] = []
        for event in events:
            user = event.user_id
            if user not in sequences:
                sequences[user] = [names[i] for i in self.state.history(user).tolist()]
                seen_sets[user] = {names[i] for i in self.state.seen(user).tolist()}
            if event.item_id not in seen_sets[user] and _sampled(event.offset, rate):
                # (a repeat cannot be ranked with seen items excluded)
                histories.append(list(sequences[user]))
                seen.append(list(seen_sets[user]))
                targets.append(event.item_id)
            sequences[user].append(event.item_id)
            seen_sets[user].add(event.item_id)
        # rank only as many events as the decision still needs: ranking is most of an update cycle's cost
        needed = self.config.gate_events - len(gate.results["candidate"])
        histories, seen, targets = histories[:needed], seen[:needed], targets[:needed]
        if not targets:
            return 0
        serving_index = {item: n for n, item in enumerate(serving.item_ids)}
        for name, model, index in (
            ("candidate", gate.model, gate.item_index),
            ("serving", serving.model, serving_index),
        ):
            hit, ndcg = prequential_metrics(model, index, histories, seen, targets)
            gate.hits[name].extend(hit.tolist())
            gate.results[name].extend(ndcg.tolist())
        gate.events_read += len(events)
        n = len(gate.results["candidate"])
        if n < self.config.gate_events:
            return len(targets)
        candidate_ndcg = float(np.mean(gate.results["candidate"]))
        serving_ndcg = float(np.mean(gate.results["serving"]))
        numbers = (
            f"prequential NDCG@10 on {n} new events: candidate {candidate_ndcg:.4f} vs serving "
            f"{serving.version} {serving_ndcg:.4f} (HR@10 {np.mean(gate.hits['candidate']):.4f} vs "
            f"{np.mean(gate.hits['serving']):.4f}), margin {self.config.gate_margin}; "
            f"ranked from {gate.events_read} events read"
        )
        decision = {
            "version": gate.version,
            "candidate_ndcg": candidate_ndcg,
            "serving_ndcg": serving_ndcg,
            "events": n,
            "events_read": gate.events_read,
        }
        if candidate_ndcg >= serving_ndcg - self.config.gate_margin:
            self.registry.promote(gate.version, reason=numbers)
            decision["promoted"] = True
            if self.registry.manifest(gate.version)["training"].get("kind") != "online update":
                self._resume_from(self.registry.load(gate.version))  # a full retraining: continue from it
        else:
            self.registry.set_status(gate.version, "rejected", numbers)
            decision["promoted"] = False
        self.registry.record_gate(gate.version, decision)
        logger.info("gate decision", extra=decision)
        self.decisions.append(decision)
        self.gate = None
        return len(targets)

    def close(self) -> None:
        self.log.close()


def updater_config(settings: Settings) -> UpdaterConfig:
    """The updater's part of :class:`liverec.settings.Settings`."""
    return UpdaterConfig(
        every_events=settings.updater_every_events,
        every_seconds=settings.updater_every_seconds,
        lr_multiplier=settings.updater_lr_multiplier,
        rehearsal_ratio=settings.updater_rehearsal_ratio,
        relearn_history=settings.updater_relearn_history,
        gate_events=settings.gate_events,
        gate_margin=settings.gate_margin,
        gate_sample_rate=settings.gate_sample_rate,
        gate_max_share=settings.gate_max_share,
        retrain_interval_s=settings.retrain_interval_s,
    )


def _moving_average(previous: float | None, value: float, weight: float = 0.2) -> float:
    return value if previous is None else (1.0 - weight) * previous + weight * value


def _sampled(offset: int, rate: float) -> bool:
    """Whether the event at ``offset`` is in the gate's sample (a fixed hash of the offset: reproducible)."""
    if rate >= 1.0:
        return True
    return (offset * 2654435761) % 4294967296 < rate * 4294967296
