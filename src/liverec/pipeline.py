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
    types = np.asarray(inter.event_type_names, dtype=object)[inter.event_types[order]]
    ids = np.char.add(f"{source}:", np.arange(len(order)).astype(str)).astype(object)
    result = event_log.import_columns(
        event_ids=ids,
        user_ids=dataset.user_map.to_external(inter.user_ids[order]),
        item_ids=dataset.item_map.to_external(inter.item_ids[order]),
        types=types,
        timestamps=inter.timestamps[order],
        values=inter.values[order],
    )
    described = 0
    if dataset.items is not None:
        described = event_log.put_items(
            {"item_id": str(item_id), "title": None if title is None else str(title), "categories": list(genres)}
            for item_id, title, genres in zip(
                dataset.item_map.external_ids, dataset.items.titles, dataset.items.genres, strict=True
            )
        )
    seconds = time.perf_counter() - started
    return ImportSummary(len(order), result.stored, result.duplicates, described, seconds, inter.timed)


@dataclass(frozen=True)
class LogData:
    """The log's events as training data, with the external ids and the range they cover, and the
    catalogue's titles and categories of those items (None when no item has a record)."""

    interactions: Interactions
    user_ids: list[str]
    item_ids: list[str]
    training: dict[str, Any]
    items: ItemMetadata | None = None


def read_log(event_log: EventLog, event_weights: Mapping[str, float], last_offset: int | None = None) -> LogData:
    """Every event of a type with positive weight (up to ``last_offset``), in log order; ids in order of
    first appearance. An order-only log (:func:`log_is_timed`) gives ``timed`` False interactions.

    Items are numbered in the order they first appear in the log, which is also the order the serving
    state numbers them, so the served model's item ids line up with the state's without a lookup.
    """
    users: list[str] = []
    items: list[str] = []
    stamps: list[float] = []
    values: list[float] = []
    kinds: list[str] = []
    offsets = [0, 0]
    used = {name for name, weight in event_weights.items() if weight > 0}
    for batch in event_log.iter_all():
        if last_offset is not None:
            batch = [event for event in batch if event.offset <= last_offset]
        if offsets[0] == 0 and batch:
            offsets[0] = batch[0].offset
        for event in batch:
            if event.type in used:
                users.append(event.user_id)
                items.append(event.item_id)
                stamps.append(event.timestamp)
                values.append(1.0 if event.value is None else event.value)
                kinds.append(event.type)
        if batch:
            offsets[1] = batch[-1].offset
    user_codes, user_ids = pd.factorize(pd.Series(users, dtype=object), sort=False)
    item_codes, item_ids = pd.factorize(pd.Series(items, dtype=object), sort=False)
    type_codes, type_names = pd.factorize(pd.Series(kinds, dtype=object), sort=False)
    interactions = Interactions(
        user_ids=user_codes,
        item_ids=item_codes,
        timestamps=np.asarray(stamps, dtype=np.float64),
        values=np.asarray(values, dtype=np.float32),
        event_types=type_codes.astype(np.int16),
        n_users=len(user_ids),
        n_items=len(item_ids),
        event_type_names=tuple(str(t) for t in type_names) or ("interaction",),
        timed=log_is_timed(event_log),
    )
    training = {
        "first_offset": offsets[0],
        "last_offset": offsets[1],
        "n_events": len(users),
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "first_timestamp": float(min(stamps)) if stamps else None,
        "last_timestamp": float(max(stamps)) if stamps else None,
    }
    item_names = [str(i) for i in item_ids]
    metadata = catalogue_metadata(event_log, item_names)
    return LogData(interactions, [str(u) for u in user_ids], item_names, training, metadata)


def catalogue_metadata(event_log: EventLog, item_ids: list[str]) -> ItemMetadata | None:
    """Titles and categories of ``item_ids`` from the log's catalogue (deleted or missing records: none)."""
    records = {record["item_id"]: record for record in event_log.items() if not record["deleted"]}
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
