"""Streaming test-then-train replay: does a model that keeps learning beat one that does not?

The events are put in global time order (a stable sort by timestamp, so events with the same
timestamp keep their file order). The first ``pretrain_fraction`` of them (by count) trains the
initial model with ``fit`` (no validation split: SASRec holds out each user's last pretraining event
for its early stopping). The rest is replayed **test-then-train**: each event is first predicted —
the current model ranks every item seen so far for the event's user, given the user's complete
history before the event, the user's already-seen items excluded, and HR@10 / NDCG@10 of the
event's item are recorded — and then learned.

Four arms see the same events:

* ``static`` — the pretrained model, never updated (the histories it reads still grow);
* ``online`` — the pretrained model updated by an :class:`~liverec.online.OnlineLearner` after every chunk;
* ``retrain`` — a fresh ``fit`` on all events so far every ``retrain_every`` events;
* ``popularity`` — ``pop-recent`` (events in the last ``window_days``), refit on all events so far
  after every chunk.

**Chunked scoring.** For speed the replay goes in chunks of ``update_every`` events: every event of a
chunk is scored by the models as they are at the start of the chunk (one batched pass), and the
models learn the chunk afterwards. Each event's *history* is still exact: it includes the earlier
events of the same chunk. With ``update_every=1`` this is the event-by-event protocol.

Conventions that keep the numbers honest:

* Items and users are numbered by first appearance in the time-ordered stream, so the catalogue
  "seen so far" is always a prefix ``0..n-1`` of the ids and every model's item table is such a prefix
  (the models are fitted on prefixes of the stream). An item a model's table does not hold yet (first
  seen earlier in the current chunk, or after pretraining for ``static``) cannot be recommended by it.
* An event whose item the user has already interacted with (a *repeat*) is skipped from the metrics:
  excluding seen items makes it unrankable. It is still learned.
* An event whose item has never appeared before is a miss for every arm (no model can know it).
* A history never contains the event being predicted or a later one, and no model has trained on
  an event before predicting it: every model at the start of a chunk was fitted or updated on
  events before the chunk only.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from liverec.data.interactions import Dataset, Histories, Interactions, concat_ranges
from liverec.errors import UsageError
from liverec.evaluation.metrics import per_user_ranking_metrics
from liverec.models import create_model
from liverec.models.base import Recommender
from liverec.online.learner import LearnerConfig, OnlineLearner

ARMS = ("static", "online", "retrain", "popularity")
#: Cut-off of the replay's metrics.
K = 10
#: Retrains over the replay when ``retrain_every`` is not given (one more would fall at its very end).
DEFAULT_RETRAINS = 4


@dataclass(frozen=True)
class ReplayConfig:
    """What :func:`replay` runs.

    ``model`` / ``params``: the model of the ``static``, ``online`` and ``retrain`` arms and its
    hyperparameters (``seed`` included). ``pretrain_fraction``: share of the events, in time order, the
    initial model is fitted on. ``update_every``: events per chunk (the online model learns after every
    chunk). ``retrain_every``: events between retrains (None: about :data:`DEFAULT_RETRAINS` retrains
    over the replay, at chunk ends). ``window_days``: the popularity arm's window. ``windows``: equal-count
    windows of the replayed events the metrics are also reported for. ``learner``: the online arm's
    update settings (its cadence is ignored: the replay updates after every chunk).
    """

    model: str = "sasrec"
    params: dict[str, Any] = field(default_factory=dict)
    pretrain_fraction: float = 0.5
    update_every: int = 1000
    retrain_every: int | None = None
    window_days: float = 30.0
    windows: int = 10
    arms: tuple[str, ...] = ARMS
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.pretrain_fraction < 1.0:
            raise ValueError(f"pretrain_fraction: expected a number between 0 and 1, got {self.pretrain_fraction}")
        if self.update_every < 1:
            raise ValueError(f"update_every: expected a positive integer, got {self.update_every}")
        if self.retrain_every is not None and self.retrain_every < 1:
            raise ValueError(f"retrain_every: expected a positive integer, got {self.retrain_every}")
        if not self.window_days > 0:
            raise ValueError(f"window_days: expected a positive number, got {self.window_days}")
        if self.windows < 1:
            raise ValueError(f"windows: expected a positive integer, got {self.windows}")
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms: expected distinct names from {', '.join(ARMS)}, got {', '.join(self.arms)}")

    def pretrain_events(self, n_events: int) -> int:
        """Events the initial model is fitted on; raises when pretraining or the replay would be empty
        or when there are fewer replayed events than windows."""
        n_pretrain = int(self.pretrain_fraction * n_events)
        if n_pretrain < 1 or n_events - n_pretrain < self.windows:
            raise ValueError(
                f"pretrain_fraction {self.pretrain_fraction} of {n_events} events leaves {n_pretrain} to pretrain "
                f"and {n_events - n_pretrain} to replay; need at least 1 and {self.windows} (--windows)"
            )
        return n_pretrain

    def retrain_interval(self, n_replayed: int) -> int:
        """``retrain_every``, or a multiple of ``update_every`` giving about :data:`DEFAULT_RETRAINS` retrains."""
        if self.retrain_every is not None:
            return self.retrain_every
        n_chunks = math.ceil(n_replayed / self.update_every)
        return self.update_every * max(1, math.ceil(n_chunks / (DEFAULT_RETRAINS + 1)))


@dataclass(frozen=True)
class _Stream:
    """The events in global time order, ids renumbered by first appearance, with per-user positions."""

    users: np.ndarray  # [n] int64
    items: np.ndarray  # [n] int64
    times: np.ndarray  # [n] float64
    values: np.ndarray  # [n] float32
    event_types: np.ndarray  # [n] int16
    event_type_names: tuple[str, ...]
    user_ids: np.ndarray  # [n_users] external ids, by first appearance
    item_ids: np.ndarray  # [n_items] external ids, by first appearance
    by_user: np.ndarray  # [n] event positions ordered by (user, time)
    user_start: np.ndarray  # [n_users + 1] where each user's events start in ``by_user``
    rank_in_user: np.ndarray  # [n] how many earlier events the event's user has
    repeat: np.ndarray  # [n] bool: the user interacted with the item before
    new_item: np.ndarray  # [n] bool: the item's first appearance
    n_items_upto: np.ndarray  # [n + 1] items seen in events [0, e)
    n_users_upto: np.ndarray  # [n + 1] users seen in events [0, e)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> _Stream:
        events = dataset.interactions
        order = np.argsort(events.timestamps, kind="stable")
        user_codes, user_first = pd.factorize(events.user_ids[order])
        item_codes, item_first = pd.factorize(events.item_ids[order])
        users, items = user_codes.astype(np.int64), item_codes.astype(np.int64)
        n = len(users)
        by_user = np.lexsort((np.arange(n), users))
        user_start = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=len(user_first)))])
        rank_in_user = np.empty(n, dtype=np.int64)
        rank_in_user[by_user] = np.arange(n) - user_start[users[by_user]]
        first_of_pair = np.unique(users * len(item_first) + items, return_index=True)[1]
        repeat = np.ones(n, dtype=bool)
        repeat[first_of_pair] = False
        seen_items = np.concatenate([[0], np.maximum.accumulate(items) + 1]) if n else np.zeros(1, dtype=np.int64)
        seen_users = np.concatenate([[0], np.maximum.accumulate(users) + 1]) if n else np.zeros(1, dtype=np.int64)
        return cls(
            users=users,
            items=items,
            times=events.timestamps[order],
            values=events.values[order],
            event_types=events.event_types[order],
            event_type_names=events.event_type_names,
            user_ids=dataset.user_map.to_external(user_first),
            item_ids=dataset.item_map.to_external(item_first),
            by_user=by_user,
            user_start=user_start,
            rank_in_user=rank_in_user,
            repeat=repeat,
            new_item=np.diff(seen_items) > 0,
            n_items_upto=seen_items,
            n_users_upto=seen_users,
        )

    def __len__(self) -> int:
        return len(self.users)

    def prefix(self, end: int) -> Interactions:
        """Events ``[0, end)`` in the id spaces they have seen (so a model fitted on them knows exactly those)."""
        return Interactions(
            self.users[:end],
            self.items[:end],
            self.times[:end],
            self.values[:end],
            self.event_types[:end],
            n_users=int(self.n_users_upto[end]),
            n_items=int(self.n_items_upto[end]),
            event_type_names=self.event_type_names,
        )

    def histories(self, rows: np.ndarray) -> Histories:
        """Each event's user's items before the event (in order), one row per event of ``rows``."""
        users = self.users[rows]
        lengths = self.rank_in_user[rows]
        take = concat_ranges(self.user_start[users], lengths)
        return Histories(users, np.concatenate([[0], np.cumsum(lengths)]), self.items[self.by_user[take]])


@dataclass(frozen=True)
class ReplayResult:
    """Per-event outcomes of a replay and the report built from them (:meth:`to_dict`).

    ``hits`` / ``ndcg``: per arm, ``[n_replayed]`` HR@10 and NDCG@10 of each replayed event (0 for the
    skipped ones); ``scored``: ``[n_replayed]`` bool, the events in the metrics (not repeats);
    ``window_bounds``: ``[windows + 1]`` positions in the replayed part.
    """

    setting: dict[str, Any]
    hits: dict[str, np.ndarray]
    ndcg: dict[str, np.ndarray]
    scored: np.ndarray
    times: np.ndarray
    window_bounds: np.ndarray
    counts: dict[str, int]
    seconds: dict[str, float]
    updater_events_per_s: float | None

    def metrics(self, arm: str, start: int = 0, stop: int | None = None) -> dict[str, float]:
        """HR@10 and NDCG@10 of ``arm`` over the scored events among replayed events ``[start, stop)``."""
        scored = self.scored[start:stop]
        n = int(scored.sum())
        hits, ndcg = self.hits[arm][start:stop][scored], self.ndcg[arm][start:stop][scored]
        return {f"hr@{K}": float(hits.mean()) if n else 0.0, f"ndcg@{K}": float(ndcg.mean()) if n else 0.0}

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: setting, overall and per-window metrics per arm, updater speed, counts, seconds."""
        windows = []
        for index, (start, stop) in enumerate(zip(self.window_bounds[:-1], self.window_bounds[1:], strict=True)):
            windows.append(
                {
                    "window": index + 1,
                    "events": int(stop - start),
                    "scored": int(self.scored[start:stop].sum()),
                    "first_timestamp": float(self.times[start]),
                    "last_timestamp": float(self.times[stop - 1]),
                    "arms": {arm: self.metrics(arm, int(start), int(stop)) for arm in self.hits},
                }
            )
        return {
            "setting": self.setting,
            "arms": {arm: self.metrics(arm) for arm in self.hits},
            "windows": windows,
            "updater_events_per_s": self.updater_events_per_s,
            "counts": self.counts,
            "seconds": self.seconds,
        }


def replay(dataset: Dataset, config: ReplayConfig, progress: bool = False) -> ReplayResult:
    """Pretrain on the first part of ``dataset``'s events, then replay the rest test-then-train (module doc).

    The replay needs one clock over every user's events: data with order but no time (``timed`` False)
    is a UsageError.
    """
    if not dataset.interactions.timed:
        raise UsageError(
            f"replay: {dataset.name} has each user's order but no time (a sequences file), so there is no "
            "stream to replay in time order; evaluate it with leave-one-out instead"
        )
    started = time.perf_counter()
    run = _ReplayRun(_Stream.from_dataset(dataset), config, show=progress and sys.stderr.isatty())
    chunks = range(run.n_pretrain, run.n_events, config.update_every)
    for start in tqdm(chunks, desc="replay", unit="chunk", disable=not run.show, leave=False):
        stop = min(start + config.update_every, run.n_events)
        run.test(start, stop)
        if stop == run.n_events:
            break  # nothing left to predict: learning the last chunk would not be measured
        run.learn(start, stop)
    run.seconds["total"] = time.perf_counter() - started
    return run.result()


class _ReplayRun:
    """The state of one :func:`replay`: the arms' current models, their per-event outcomes and the clocks."""

    def __init__(self, stream: _Stream, config: ReplayConfig, show: bool) -> None:
        self.stream, self.config, self.show = stream, config, show
        self.n_events = len(stream)
        self.n_pretrain = config.pretrain_events(self.n_events)
        self.n_replayed = self.n_events - self.n_pretrain
        self.retrain_every = config.retrain_interval(self.n_replayed)
        self.seconds: dict[str, float] = {}
        clock = time.perf_counter()
        self.pretrained = self.fit(config.model, self.n_pretrain, **config.params)
        self.seconds["pretrain"] = time.perf_counter() - clock
        self.current: dict[str, Recommender] = {}
        self.learner: OnlineLearner | None = None
        for arm in config.arms:
            if arm == "online":
                pretrain = stream.prefix(self.n_pretrain)
                self.learner = OnlineLearner(
                    copy.deepcopy(self.pretrained),
                    stream.item_ids[: pretrain.n_items],
                    stream.user_ids[: pretrain.n_users],
                    history=pretrain,
                    config=config.learner,
                )
                self.current[arm] = self.learner.model
            elif arm == "popularity":
                self.current[arm] = self.fit("pop-recent", self.n_pretrain, window_days=config.window_days)
            else:  # static, and retrain until its first retrain
                self.current[arm] = self.pretrained
        learning = {"online": "update", "retrain": "retrain", "popularity": "popularity"}
        for arm in config.arms:
            self.seconds[f"score_{arm}"] = 0.0
            if arm in learning:
                self.seconds[learning[arm]] = 0.0
        self.hits = {arm: np.zeros(self.n_replayed) for arm in config.arms}
        self.ndcg = {arm: np.zeros(self.n_replayed) for arm in config.arms}
        self.learned, self.retrains, self.updates = 0, 0, 0

    def fit(self, model_name: str, end: int, **params: Any) -> Recommender:
        """A fresh ``model_name`` fitted on the stream's first ``end`` events."""
        model = create_model(model_name, **params)
        model.progress = self.show
        return model.fit(self.stream.prefix(end))

    def test(self, start: int, stop: int) -> None:
        """Rank every scored event of ``[start, stop)`` by each arm's model as it is at the chunk's start."""
        stream = self.stream
        rows = start + np.flatnonzero(~stream.repeat[start:stop])
        histories = stream.histories(rows)
        targets = Histories(stream.users[rows], np.arange(len(rows) + 1), stream.items[rows])
        outcomes: dict[int, dict[str, np.ndarray]] = {}  # arms holding the same model share its ranking
        for arm, model in self.current.items() if len(rows) else ():
            if id(model) not in outcomes:
                clock = time.perf_counter()
                ranked, _ = model.recommend(histories, K)
                outcomes[id(model)] = per_user_ranking_metrics(ranked, targets, K)
                self.seconds[f"score_{arm}"] += time.perf_counter() - clock
            self.hits[arm][rows - self.n_pretrain] = outcomes[id(model)]["hr"]
            self.ndcg[arm][rows - self.n_pretrain] = outcomes[id(model)]["ndcg"]

    def learn(self, start: int, stop: int) -> None:
        """Every arm learns the events ``[start, stop)`` its own way."""
        stream, config = self.stream, self.config
        if self.learner is not None:
            self.learner.observe(
                stream.user_ids[stream.users[start:stop]],
                stream.item_ids[stream.items[start:stop]],
                stream.times[start:stop],
            )
            stats = self.learner.update()
            self.seconds["update"] += stats.seconds
            self.learned += stats.events
            self.updates += 1
        if "popularity" in self.current:
            clock = time.perf_counter()
            self.current["popularity"] = self.fit("pop-recent", stop, window_days=config.window_days)
            self.seconds["popularity"] += time.perf_counter() - clock
        done_before, done_after = start - self.n_pretrain, stop - self.n_pretrain
        if "retrain" in self.current and done_after // self.retrain_every > done_before // self.retrain_every:
            clock = time.perf_counter()
            self.current["retrain"] = self.fit(config.model, stop, **config.params)
            self.seconds["retrain"] += time.perf_counter() - clock
            self.retrains += 1

    def result(self) -> ReplayResult:
        stream, config, n_pretrain = self.stream, self.config, self.n_pretrain
        replayed = slice(n_pretrain, self.n_events)
        scored = ~stream.repeat[replayed]
        counts = {
            "events": self.n_events,
            "pretrain_events": n_pretrain,
            "replayed_events": self.n_replayed,
            "scored_events": int(scored.sum()),
            "skipped_repeats": int((~scored).sum()),
            "new_item_events": int(stream.new_item[replayed].sum()),
            "scored_events_of_users_unseen_in_pretraining": int(
                (scored & (stream.users[replayed] >= stream.n_users_upto[n_pretrain])).sum()
            ),
            "scored_events_of_items_unseen_in_pretraining": int(
                (scored & (stream.items[replayed] >= stream.n_items_upto[n_pretrain])).sum()
            ),
            "updates": self.updates,
            "retrains": self.retrains,
        }
        update_seconds = self.seconds.get("update", 0.0)
        return ReplayResult(
            setting=self.setting(),
            hits=self.hits,
            ndcg=self.ndcg,
            scored=scored,
            times=stream.times[replayed],
            window_bounds=np.linspace(0, self.n_replayed, config.windows + 1).round().astype(np.int64),
            counts=counts,
            seconds=self.seconds,
            updater_events_per_s=self.learned / update_seconds if self.learned and update_seconds > 0 else None,
        )

    def setting(self) -> dict[str, Any]:
        config = self.config
        return {
            "model": config.model,
            "parameters": dataclasses.asdict(self.pretrained.config),
            "pretrain_fraction": config.pretrain_fraction,
            "update_every": config.update_every,
            "retrain_every": self.retrain_every,
            "window_days": config.window_days,
            "windows": config.windows,
            "learner": {
                "rehearsal_ratio": config.learner.rehearsal_ratio,
                "lr_multiplier": config.learner.lr_multiplier,
                "epochs": config.learner.epochs,
                "batch_size": config.learner.batch_size,
                "max_sequence": config.learner.max_sequence,
                "seed": config.learner.seed,
            },
            "scoring": f"chunks of {config.update_every} events: models as at the start of the chunk, exact "
            "histories; full ranking over the items seen so far, the user's seen items excluded; repeats skipped",
        }


def format_report(report: dict[str, Any]) -> str:
    """A readable summary of a replay report (``{"dataset": ..., **ReplayResult.to_dict()}``)."""
    data, setting, counts = report["dataset"], report["setting"], report["counts"]
    arms = list(report["arms"])
    learner = ", ".join(
        f"{key} {'model default' if value is None else value}" for key, value in setting["learner"].items()
    )
    lines = [
        f"dataset   {data['name']}: {data['users']} users, {data['items']} items, {data['events']} events",
        f"model     {setting['model']}; pretrained on the first {counts['pretrain_events']} events "
        f"({setting['pretrain_fraction']:.0%}), {counts['replayed_events']} replayed test-then-train in chunks of "
        f"{setting['update_every']} (models as at the chunk's start, exact histories)",
    ]
    if "online" in arms:
        lines.append(f"online    {counts['updates']} updates ({learner})")
    if "retrain" in arms:
        lines.append(f"retrain   {counts['retrains']} refits (every {setting['retrain_every']} events)")
    if "popularity" in arms:
        lines.append(f"popular   pop-recent, last {setting['window_days']:g} days, refit after every chunk")
    lines += [
        f"events    {counts['scored_events']} scored, {counts['skipped_repeats']} repeats skipped, "
        f"{counts['new_item_events']} with a never-seen item (a miss for every arm)",
        "",
        f"{'arm':<12}{'HR@10':>9}{'NDCG@10':>10}",
    ]
    lines += [f"{arm:<12}{values['hr@10']:>9.4f}{values['ndcg@10']:>10.4f}" for arm, values in report["arms"].items()]
    lines += ["", f"{'window':<8}{'from':>12}{'to':>12}{'scored':>8}" + "".join(f"{arm + ' HR':>15}" for arm in arms)]
    for window in report["windows"]:
        lines.append(
            f"{window['window']:<8}{_date(window['first_timestamp']):>12}{_date(window['last_timestamp']):>12}"
            f"{window['scored']:>8}" + "".join(f"{window['arms'][arm]['hr@10']:>15.4f}" for arm in arms)
        )
    if report["updater_events_per_s"] is not None:
        lines += ["", f"updater   {report['updater_events_per_s']:,.0f} events learned per second of update time"]
    lines += ["seconds   " + ", ".join(f"{key} {value:.1f}" for key, value in report["seconds"].items())]
    return "\n".join(lines)


def plot_windows(report: dict[str, Any], path: str | Path) -> None:
    """Draw HR@10 and NDCG@10 per window for every arm into a PNG at ``path`` (needs matplotlib)."""
    from matplotlib.figure import Figure  # the Agg canvas; no pyplot state, no display needed

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2)
    windows = report["windows"]
    x = [window["window"] for window in windows]
    for axis, metric in zip(axes, (f"hr@{K}", f"ndcg@{K}"), strict=True):
        for arm in report["arms"]:
            axis.plot(x, [window["arms"][arm][metric] for window in windows], marker="o", label=arm)
        axis.set_xlabel("window of the replayed events (equal counts, in time order)")
        axis.set_ylabel(metric.upper())
        axis.set_xticks(x)
        axis.grid(alpha=0.3)
    axes[0].legend()
    setting = report["setting"]
    figure.suptitle(
        f"{report['dataset']['name']}: test-then-train replay, {setting['model']} pretrained on "
        f"{setting['pretrain_fraction']:.0%}, chunks of {setting['update_every']} events"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
