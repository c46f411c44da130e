"""``read_log`` on real logs (SQLite file and Redis Streams): the columnar read gives exactly what the
event-by-event read it replaced gave."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liverec import pipeline
from liverec.data.interactions import Interactions
from liverec.events.log import EventLog, SQLiteEventLog, log_is_timed
from liverec.events.schema import Event
from liverec.pipeline import LogData, catalogue_metadata, read_log

#: ``hover`` has no weight and ``impression`` is not configured: both are left out of the training data.
WEIGHTS = {"view": 1.0, "click": 2.0, "purchase": 8.0, "hover": 0.0}


@pytest.fixture(params=["sqlite", "redis"])
def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "sqlite":
        with SQLiteEventLog(tmp_path / "events.db") as sqlite_log:
            yield sqlite_log
        return
    from liverec.events.redis_log import RedisEventLog, redis_client

    client = redis_client(request.getfixturevalue("redis_url"))
    with RedisEventLog(client, request.getfixturevalue("redis_prefix")) as redis_log:
        yield redis_log
    client.close()


def read_by_events(event_log: EventLog, weights: Mapping[str, float], last_offset: int | None) -> LogData:
    """The event-by-event ``read_log`` (before issue 22's columnar read): the reference the new one must equal."""
    users, items, stamps, values, kinds = [], [], [], [], []
    offsets = [0, 0]
    used = {name for name, weight in weights.items() if weight > 0}
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
    return LogData(
        interactions, [str(u) for u in user_ids], item_names, training, catalogue_metadata(event_log, item_names)
    )


def fill(event_log: EventLog) -> None:
    """Five event types (two left out), values with and without, users and items whose first event is one of the
    left-out types (their numbering must skip it), and an erased user (holes in the offsets)."""
    rng = np.random.default_rng(7)
    kinds = ["hover", "impression", "view", "click", "purchase"]
    events = [
        Event(
            f"e{k}",
            f"u{rng.integers(12)}",
            f"i{rng.integers(30)}",
            kinds[int(rng.integers(len(kinds)))],
            1_700_000_000.0 + k * 7.5,
            None if k % 3 else float(rng.integers(1, 6)),
        )
        for k in range(300)
    ]
    event_log.append(events)
    event_log.erase_events(user_id="u5")
    for item in ("i3", "i4", "i29"):
        event_log.put_item(item, title=f"title {item}", categories=["c1", item])


def assert_same(new: LogData, old: LogData) -> None:
    for name in ("user_ids", "item_ids", "timestamps", "values", "event_types"):
        got, expected = getattr(new.interactions, name), getattr(old.interactions, name)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    for name in ("n_users", "n_items", "event_type_names", "timed"):
        assert getattr(new.interactions, name) == getattr(old.interactions, name), name
    assert (new.user_ids, new.item_ids, new.training) == (old.user_ids, old.item_ids, old.training)
    if old.items is None:
        assert new.items is None
    else:
        assert new.items is not None
        np.testing.assert_array_equal(new.items.titles, old.items.titles)
        assert new.items.genres == old.items.genres


@pytest.mark.parametrize("start_rows", [1 << 20, 5])
@pytest.mark.parametrize("last_offset", [None, 1, 137, 10_000])
def test_read_log_equals_the_event_by_event_read(
    event_log: EventLog, last_offset: int | None, start_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "READ_LOG_START_ROWS", start_rows)  # 5: the arrays grow several times
    fill(event_log)
    old = read_by_events(event_log, WEIGHTS, last_offset)
    for batch in (7, 50_000):  # ids first seen in a later batch keep the numbering of the whole log
        new = read_log(event_log, WEIGHTS, last_offset=last_offset, batch=batch)
        assert_same(new, old)
    if last_offset is None:
        assert set(new.interactions.event_type_names) == {"view", "click", "purchase"}
        assert new.training["n_events"] < event_log.count() < 300  # types left out; u5 erased
        assert "u5" not in new.user_ids


def test_read_log_of_an_empty_log(event_log: EventLog) -> None:
    data = read_log(event_log, WEIGHTS)
    assert len(data.interactions) == 0 and data.interactions.event_type_names == ("interaction",)
    assert data.training["first_offset"] == data.training["last_offset"] == 0
    assert (data.user_ids, data.item_ids, data.items) == ([], [], None)
