"""The batch steps around the event log: import a dataset into it, read it back for training, train
and register a model. Used by ``liverec import`` / ``liverec train`` / ``liverec demo`` and by the
updater's periodic retraining."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from liverec.data.interactions import Dataset, Interactions, ItemMetadata
from liverec.data.splits import leave_one_out
from liverec.evaluation.protocols import evaluate_ranking
from liverec.events.log import EVENT_TIME_META, EventLog, log_is_timed
from liverec.models import create_model
from liverec.registry import ModelRegistry

#: Events :func:`import_dataset` hands the log per call: their ids (``source:row``) are the only strings it makes
#: per event, so it makes them a slice at a time (all 20M at once: a 1.7 GB NumPy string array, then a Python
#: string each; issue 22).
IMPORT_SLICE = 1_000_000

#: Rows :func:`read_log`'s arrays start with; they double as the read needs (never past the last offset).
READ_LOG_START_ROWS = 1 << 20


@dataclass(frozen=True)
class ImportSummary:
    events: int
    stored: int
    duplicates: int
    items_described: int
    seconds: float
    timed: bool = True  # False: the source had order without time; positions were stored as timestamps


def import_dataset(
    dataset: Dataset,
    event_log: EventLog,
    *,
    source: str,
    event_types: Mapping[str, float],
    limit: int | None = None,
) -> ImportSummary:
    """Append a dataset's events to the log in time order, with ids ``{source}:{row}``.

    The ids are a function of the file and the row's place in time order, so importing the same file
    again stores nothing twice: an interrupted import is resumed by running it again. Titles and
    genres, where the dataset has them, go into the catalogue (genres become categories).

    Data with order but no time (``timed`` False, a sequences file) goes in user by user, each user's
    events in order, with their positions as timestamps, and the log is marked *order-only*
    (:func:`log_is_timed`): whatever trains from it then reads those timestamps as order, never as time.
    """
    started = time.perf_counter()
    inter = dataset.interactions
    unknown = sorted(set(inter.event_type_names) - set(event_types))
    if unknown:
        raise ValueError(
            f"event type {unknown[0]!r} of {source} is not configured; accepted types: {', '.join(event_types)} "
            f"(add it under [event_types] in the settings file)"
        )
    if inter.timed:
        order = np.argsort(inter.timestamps, kind="stable")
    else:
        order = np.lexsort((inter.timestamps, inter.user_ids))
        event_log.meta_set(EVENT_TIME_META, "order")  # before the events: no reader sees them as timed
    if limit is not None:
        order = order[:limit]
    type_names = np.asarray(inter.event_type_names, dtype=object)
    stored = duplicates = 0
    with event_log.bulk_import():
        for start in range(0, len(order), IMPORT_SLICE):  # the ids of one slice at a time: no string per event held
            rows = order[start : start + IMPORT_SLICE]
            result = event_log.import_columns(
                event_ids=[f"{source}:{row}" for row in range(start, start + len(rows))],
                user_ids=dataset.user_map.to_external(inter.user_ids[rows]),
                item_ids=dataset.item_map.to_external(inter.item_ids[rows]),
                types=type_names[inter.event_types[rows]],
                timestamps=inter.timestamps[rows],
                values=inter.values[rows],
            )
            stored, duplicates = stored + result.stored, duplicates + result.duplicates
        described = 0
        if dataset.items is not None:
            described = event_log.put_items(
                {"item_id": str(item_id), "title": None if title is None else str(title), "categories": list(genres)}
                for item_id, title, genres in zip(
                    dataset.item_map.external_ids, dataset.items.titles, dataset.items.genres, strict=True
                )
            )
    seconds = time.perf_counter() - started
    return ImportSummary(len(order), stored, duplicates, described, seconds, inter.timed)


@dataclass(frozen=True)
class LogData:
    """The log's events as training data, with the external ids and the range they cover, and the
    catalogue's titles and categories of those items (None when no item has a record)."""

    interactions: Interactions
    user_ids: list[str]
    item_ids: list[str]
    training: dict[str, Any]
    items: ItemMetadata | None = None


def read_log(
    event_log: EventLog, event_weights: Mapping[str, float], last_offset: int | None = None, *, batch: int = 50_000
) -> LogData:
    """Every event of a type with positive weight (up to ``last_offset``; None: up to the log's last offset when
    the read starts), in log order; ids in order of first appearance. An order-only log (:func:`log_is_timed`)
    gives ``timed`` False interactions.

    Items are numbered in the order they first appear in the log, which is also the order the serving
    state numbers them, so the served model's item ids line up with the state's without a lookup.

    The log is read in columns (:meth:`EventLog.iter_columns`), a batch at a time: each batch's ids are
    numbered against dictionaries of the ids seen so far and its codes written into arrays that grow by
    doubling, never past the last offset (offsets are distinct positive integers, so no more events than that
    can come; pages never written are never resident). The peak is the final arrays (30 bytes per event), one
    batch and the id dictionaries: no Python object per event (issue 22: five lists of them took 7.6 GB at 20M
    events). ``batch``: events per read.
    """
    used = {name for name, weight in event_weights.items() if weight > 0}
    newest = event_log.last_offset()
    up_to = newest if last_offset is None else min(last_offset, newest)
    # offsets are distinct positive integers, so no more than up_to events can come; a log whose old events
    # were trimmed can have offsets far beyond its events, so the arrays start at most at a million rows and
    # double as needed
    capacity = max(min(up_to, READ_LOG_START_ROWS), 0)
    columns_out = [np.empty(capacity, dtype=dtype) for dtype in (np.int64, np.int64, np.float64, np.float32, np.int16)]
    users, items, kinds = _Numbering(), _Numbering(), _Numbering()
    offsets = [0, 0]
    n_events = 0
    for columns in event_log.iter_columns(up_to=up_to, batch=batch):
        offsets[0] = offsets[0] or int(columns.offsets[0])
        offsets[1] = int(columns.offsets[-1])
        types = np.array(columns.types, dtype=object)
        local_types, distinct_types = pd.factorize(types, sort=False)
        keep = np.array([kind in used for kind in distinct_types], dtype=bool)[local_types]
        end = n_events + int(keep.sum())
        if end > up_to:
            raise RuntimeError(f"read_log: the log gave more events than its last offset {up_to}")
        if end > capacity:
            capacity = min(max(2 * capacity, end), up_to)
            for column in columns_out:
                column.resize(capacity, refcheck=False)
        user_codes, item_codes, stamps, values, type_codes = columns_out
        user_codes[n_events:end] = users.encode(np.array(columns.user_ids, dtype=object)[keep])
        item_codes[n_events:end] = items.encode(np.array(columns.item_ids, dtype=object)[keep])
        type_codes[n_events:end] = kinds.encode(types[keep])
        stamps[n_events:end] = columns.timestamps[keep]
        kept_values = columns.values[keep]
        values[n_events:end] = np.where(np.isnan(kept_values), 1.0, kept_values)  # no value: weight 1
        n_events = end
    for column in columns_out:
        column.resize(n_events, refcheck=False)  # in place: frees the tail a shorter read never wrote
    user_codes, item_codes, stamps, values, type_codes = columns_out
    user_ids, item_ids = users.ids(), items.ids()
    interactions = Interactions(
        user_ids=user_codes,
        item_ids=item_codes,
        timestamps=stamps,
        values=values,
        event_types=type_codes,
        n_users=len(user_ids),
        n_items=len(item_ids),
        event_type_names=tuple(kinds.ids()) or ("interaction",),
        timed=log_is_timed(event_log),
    )
    training = {
        "first_offset": offsets[0],
        "last_offset": offsets[1],
        "n_events": n_events,
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "first_timestamp": float(stamps.min()) if n_events else None,
        "last_timestamp": float(stamps.max()) if n_events else None,
    }
    metadata = catalogue_metadata(event_log, item_ids)
    return LogData(interactions, user_ids, item_ids, training, metadata)


class _Numbering:
    """Ids numbered 0, 1, 2, ... in order of first appearance, across the batches of a read."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """The codes of ``ids`` ([n] object array of str), numbering the new ones: [n] int64.

        The batch is factorized first (in C), so the dictionary is asked once per distinct id of the batch,
        in the batch's order of first appearance, which keeps the numbering that of the whole log."""
        local, distinct = pd.factorize(ids, sort=False)
        codes = self._codes
        lookup = np.fromiter(
            (codes.setdefault(name, len(codes)) for name in distinct), dtype=np.int64, count=len(distinct)
        )
        return lookup[local]

    def ids(self) -> list[str]:
        """Every id numbered so far, by code."""
        return [str(name) for name in self._codes]


def catalogue_metadata(event_log: EventLog, item_ids: list[str]) -> ItemMetadata | None:
    """Titles and categories of ``item_ids`` from the log's catalogue (deleted or missing records: none)."""
    records = {record["item_id"]: record for record in event_log.iter_items() if not record["deleted"]}
    if not any(item in records for item in item_ids):
        return None
    described = [records.get(item, {}) for item in item_ids]
    titles = np.array([record.get("title") for record in described], dtype=object)
    return ItemMetadata(titles, [tuple(record.get("categories") or ()) for record in described])


def log_data_from_dataset(dataset: Dataset, source: str) -> LogData:
    """A dataset read straight from a file, in the shape :func:`train_and_register` takes."""
    inter = dataset.interactions
    training = {
        "source": source,
        "n_events": len(inter),
        "n_users": inter.n_users,
        "n_items": inter.n_items,
        "first_timestamp": float(inter.timestamps.min()) if len(inter) else None,
        "last_timestamp": float(inter.timestamps.max()) if len(inter) else None,
    }
    return LogData(
        inter,
        [str(u) for u in dataset.user_map.external_ids],
        [str(i) for i in dataset.item_map.external_ids],
        training,
        dataset.items,
    )


@dataclass(frozen=True)
class TrainSummary:
    version: str
    model: str
    metrics: dict[str, float]
    fit_seconds: float
    promoted: bool


def train_and_register(
    data: LogData,
    registry: ModelRegistry,
    model_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    promote: bool = True,
    progress: bool = False,
    seed: int = 0,
    guard: Callable[[], bool] | None = None,
) -> TrainSummary:
    """Fit ``model_name`` and register it, with held-out metrics in its manifest.

    The model is fitted on every event except each user's last two; the second-last is its
    validation item (early stopping) and the last is the test item: HR@10 / NDCG@10 over the whole
    catalogue, seen items excluded — the same protocol as ``liverec evaluate --protocol loo``. The
    registered model is that fitted one: at serving time it sees each user's newest events in the
    history it is given, and the online updater trains on them. ``guard``: passed to ``registry.register`` (the
    updater's: no erasure since the data was read).
    """
    validation, test = leave_one_out(data.interactions)
    model = create_model(model_name, seed=seed, **dict(params or {}))
    model.progress = progress
    if model.takes_item_features and data.items is not None:  # categories, used where side_features is on
        model.set_item_features(*data.items.genre_matrix())
    started = time.perf_counter()
    model.fit(test.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    result = evaluate_ranking(model, test, (10,))
    metrics = {name: float(result.metrics[name]) for name in ("hr@10", "ndcg@10", "mrr@10", "coverage@10")}
    metrics["users_evaluated"] = float(len(test.history))
    training = dict(data.training, fit_seconds=round(fit_seconds, 3), protocol="leave-one-out (last event held out)")
    version = registry.register(
        model, data.item_ids, metrics=metrics, training=training, user_ids=data.user_ids, guard=guard
    )
    first = registry.promoted() is None
    if promote or first:
        registry.promote(version, reason="first model" if first else "liverec train --promote")
    return TrainSummary(version, model_name, metrics, fit_seconds, promote or first)
