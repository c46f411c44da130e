"""The SQLite event log on real files: append/read, dedup, group commit, imports, catalogue, crash durability."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from liverec.events.log import AppendResult, SQLiteEventLog, StoredEvent
from liverec.events.schema import Event


def ev(event_id: str, user: str = "u1", item: str = "i1", **fields: Any) -> Event:
    return Event(event_id, user, item, fields.pop("type", "view"), fields.pop("timestamp", 1_700_000_000.0), **fields)


def plain(event: StoredEvent) -> Event:
    """The event without its offset, to compare with what was appended."""
    return Event(*(getattr(event, name) for name in Event.__dataclass_fields__))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


#: Opens an event log of the backend under test; ``on_commit`` as in the log classes.
LogFactory = Callable[..., Any]


@pytest.fixture(params=["sqlite", "redis"])
def open_log(request: pytest.FixtureRequest, db: Path) -> Iterator[LogFactory]:
    """The same contract for both backends: SQLite file, Redis Streams (a real Redis, own key prefix)."""
    opened: list[Any] = []
    if request.param == "sqlite":

        def factory(on_commit: Any = None) -> Any:
            opened.append(SQLiteEventLog(db, on_commit=on_commit))
            return opened[-1]

    else:
        from liverec.events.redis_log import RedisEventLog, redis_client

        prefix = request.getfixturevalue("redis_prefix")
        client = redis_client(request.getfixturevalue("redis_url"))

        def factory(on_commit: Any = None) -> Any:
            opened.append(RedisEventLog(client, prefix, on_commit=on_commit))
            return opened[-1]

    yield factory
    for event_log in opened:
        event_log.close()


@pytest.fixture
def log(open_log: LogFactory) -> Any:
    return open_log()


def test_append_then_read_back(log: Any) -> None:
    events = [
        ev("e1", value=4.5, context={"page": "home", "tags": ["a", "é"]}, recommendation_id="r1"),
        ev("e2", user="u2", item="i9", type="purchase", timestamp=1_700_000_100.5),
    ]
    result = log.append(events)
    assert (result.stored, result.duplicates, result.last_offset) == (2, 0, 2)
    assert [plain(e) for e in result.events] == events
    stored = log.read()
    assert [plain(e) for e in stored] == events
    assert [e.offset for e in stored] == [1, 2]
    assert stored == result.events
    assert (log.count(), log.last_offset()) == (2, 2)


def test_offsets_increase_across_appends(log: Any) -> None:
    for start in range(0, 30, 3):
        result = log.append([ev(f"e{start + k}") for k in range(3)])
        assert [e.offset for e in result.events] == [start + 1, start + 2, start + 3]
        assert result.last_offset == start + 3
    assert [e.offset for e in log.read(after_offset=10, limit=5)] == [11, 12, 13, 14, 15]
    assert [len(chunk) for chunk in log.iter_all(batch=7)] == [7, 7, 7, 7, 2]


def test_iter_columns_give_the_events_fields(log: Any) -> None:
    """The columnar read (what ``read_log`` uses) holds what ``iter_all``'s events hold, in offset order, in
    batches, cut at ``up_to``; an event without a value reads as NaN."""
    log.append(
        [
            ev(
                f"e{k}",
                user=f"u{k % 3}",
                item=f"i{k % 5}",
                type=("view", "purchase")[k % 2],
                timestamp=1_700_000_000.5 + k,
                value=None if k % 4 else 2.5,
            )
            for k in range(23)
        ]
    )
    stored = [event for chunk in log.iter_all() for event in chunk]
    chunks = list(log.iter_columns(batch=7))
    assert [len(chunk) for chunk in chunks] == [7, 7, 7, 2]
    assert np.concatenate([chunk.offsets for chunk in chunks]).tolist() == [e.offset for e in stored]
    assert [user for chunk in chunks for user in chunk.user_ids] == [e.user_id for e in stored]
    assert [item for chunk in chunks for item in chunk.item_ids] == [e.item_id for e in stored]
    assert [kind for chunk in chunks for kind in chunk.types] == [e.type for e in stored]
    assert np.concatenate([chunk.timestamps for chunk in chunks]).tolist() == [e.timestamp for e in stored]
    np.testing.assert_array_equal(  # NaN at the same places counts as equal
        np.concatenate([chunk.values for chunk in chunks]),
        [np.nan if e.value is None else e.value for e in stored],
    )
    cut = list(log.iter_columns(up_to=10, batch=4))
    assert [chunk.offsets.tolist() for chunk in cut] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert list(log.iter_columns(up_to=0)) == []


def test_duplicates_are_stored_once(log: Any) -> None:
    log.append([ev("a"), ev("b")])
    result = log.append([ev("b", item="other"), ev("c"), ev("c", item="other"), ev("d")])
    assert (result.stored, result.duplicates, result.last_offset) == (2, 2, 4)
    assert [(e.event_id, e.item_id, e.offset) for e in result.events] == [("c", "i1", 3), ("d", "i1", 4)]
    again = log.append([ev("a"), ev("d")])
    assert (again.stored, again.duplicates, again.last_offset, again.events) == (0, 2, 4, [])
    assert [e.event_id for e in log.read()] == ["a", "b", "c", "d"]
    assert log.count() == log.last_offset() == 4  # skipped duplicates leave no gaps in the offsets


def test_a_known_id_late_in_a_large_batch_leaves_no_gap_and_stores_the_rest(log: Any) -> None:
    log.append([ev("k-230"), ev("k-9")])  # ids the big batch repeats, deep inside its grouped statements
    batch = [ev(f"k-{n}") for n in range(250)] + [ev("k-249"), ev("late")]  # and one repeated inside it
    result = log.append(batch)
    assert (result.stored, result.duplicates, result.last_offset) == (249, 3, 251)
    assert [e.offset for e in result.events] == list(range(3, 252))  # consecutive: nothing rolled back burnt one
    assert [e.event_id for e in result.events[:2]] == ["k-0", "k-1"]
    assert log.count() == log.last_offset() == 251
    fresh = log.append([ev("after")])
    assert (fresh.stored, fresh.last_offset) == (1, 252)


def test_empty_append(log: Any) -> None:
    assert log.append([]) == AppendResult(0, 0, 0, [])
    assert log.commits == 0


def test_concurrent_appends(open_log: LogFactory) -> None:
    seen: list[StoredEvent] = []
    threads, appends = 8, 100

    def worker(thread: int) -> list[AppendResult]:
        return [log.append([ev(f"{thread}-{k}", user=f"u{thread}")]) for k in range(appends)]

    lock = threading.Lock()

    def collect(events: list[StoredEvent]) -> None:
        with lock:
            seen.extend(events)

    log = open_log(on_commit=collect)
    with ThreadPoolExecutor(threads) as pool:
        results = [result for mine in pool.map(worker, range(threads)) for result in mine]
    total = threads * appends
    assert sum(r.stored for r in results) == total
    assert sorted(e.offset for r in results for e in r.events) == list(range(1, total + 1))
    assert sorted(e.offset for e in seen) == list(range(1, total + 1))  # each once
    if isinstance(log, SQLiteEventLog):
        assert [e.offset for e in seen] == list(range(1, total + 1))  # one writer thread: in log order
        assert log.commits < total  # group commit: concurrent appends share transactions
    assert sorted(e.event_id for e in seen) == sorted(f"{t}-{k}" for t in range(threads) for k in range(appends))
    assert log.count() == total
    for thread in range(threads):  # each caller's appends are in its own order
        offsets = [e.offset for e in seen if e.user_id == f"u{thread}"]
        assert offsets == sorted(offsets)


def test_group_commit_takes_everything_waiting(db: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def on_commit(events: list[StoredEvent]) -> None:
        entered.set()
        release.wait(10)  # hold the writer so that the next appends queue up

    with SQLiteEventLog(db, on_commit=on_commit) as log:
        first = log.append_async([ev("first")])
        assert entered.wait(10)
        waiting = [log.append_async([ev(f"e{k}"), ev(f"e{k}-b")]) for k in range(20)]
        repeat = log.append_async([ev("e3"), ev("new")])
        release.set()
        results = [future.result(10) for future in [first, *waiting, repeat]]
        assert log.commits == 2
        assert [r.stored for r in results] == [1] + [2] * 20 + [1]
        assert results[-1].duplicates == 1
        assert {r.last_offset for r in results[1:]} == {42}


def test_bad_batch_does_not_fail_its_group(db: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def on_commit(events: list[StoredEvent]) -> None:
        entered.set()
        release.wait(10)

    with SQLiteEventLog(db, on_commit=on_commit) as log:
        log.append_async([ev("first")])
        assert entered.wait(10)
        before = log.append_async([ev("good-1")])
        bad = log.append_async([ev("bad-ok"), ev("bad", user=["not", "a", "string"])])  # type: ignore[arg-type]
        after = log.append_async([ev("good-2")])
        release.set()
        assert before.result(10).stored == after.result(10).stored == 1
        with pytest.raises(sqlite3.ProgrammingError):
            bad.result(10)
        assert [e.event_id for e in log.read()] == ["first", "good-1", "good-2"]  # the bad batch is all-or-nothing
        assert log.append([ev("later")]).last_offset == 4


def test_failing_on_commit_loses_nothing(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    def on_commit(events: list[StoredEvent]) -> None:
        raise RuntimeError("state broke")

    with caplog.at_level(logging.ERROR), SQLiteEventLog(db, on_commit=on_commit) as log:
        result = log.append([ev("a"), ev("b")])
        assert (result.stored, result.last_offset) == (2, 2)
        assert "on_commit failed" in caplog.text
    with SQLiteEventLog(db) as reopened:
        assert [e.event_id for e in reopened.read()] == ["a", "b"]


def test_reopen_keeps_everything(db: Path) -> None:
    with SQLiteEventLog(db) as log:
        log.append([ev(f"e{k}") for k in range(10)])
        log.put_item("i1", title="One", categories=["a"])
        log.meta_set("model", "v3")
    with SQLiteEventLog(db) as log:
        assert (log.count(), log.last_offset()) == (10, 10)
        assert log.get_item("i1")["title"] == "One"  # type: ignore[index]
        assert log.meta_get("model") == "v3"
        assert log.append([ev("e10")]).events[0].offset == 11


def test_closed_log(db: Path) -> None:
    log = SQLiteEventLog(db)
    futures = [log.append_async([ev(f"e{k}")]) for k in range(200)]
    assert log.writable()
    log.close()  # drains what is queued
    assert all(f.done() for f in futures)
    assert not log.writable()
    with pytest.raises(RuntimeError, match="closed"):
        log.append([ev("late")])
    with pytest.raises(RuntimeError, match="closed"):
        log.count()
    log.close()
    with SQLiteEventLog(db) as reopened:
        assert reopened.count() == 200


def test_invalid_synchronous(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteEventLog(db, synchronous="SOMETIMES")


def test_import_columns_is_idempotent(open_log: LogFactory) -> None:
    seen: list[StoredEvent] = []
    n = 2_500
    columns: dict[str, Any] = {
        "event_ids": np.array([f"ml:{k}" for k in range(n)], dtype=object),
        "user_ids": np.arange(n) % 7,
        "item_ids": [f"i{k % 13}" for k in range(n)],
        "types": "rating",
        "timestamps": np.arange(n, dtype=np.int64) + 1_000_000_000,
        "values": np.where(np.arange(n) % 5 == 0, np.nan, 4.0),
    }
    log = open_log(on_commit=seen.extend)
    with log.bulk_import():  # what import_dataset wraps its slices in
        first = log.import_columns(**columns, batch_size=1_000)
    assert (first.stored, first.duplicates, first.last_offset) == (n, 0, n)
    assert log.commits <= 3  # chunks waiting together may share a commit
    again = log.import_columns(**columns, batch_size=1_000)
    assert (again.stored, again.duplicates, again.last_offset) == (0, n, n)
    assert [e.offset for e in seen] == list(range(1, n + 1))
    events = log.read(limit=n + 1)
    assert len(events) == n
    assert events[5] == StoredEvent("ml:5", "5", "i5", "rating", 1_000_000_005.0, None, None, None, offset=6)
    assert events[6].value == 4.0


def test_a_bulk_import_raises_the_page_cache_and_gives_it_back(db: Path) -> None:
    from liverec.events.log import CACHE_MIB, IMPORT_CACHE_MIB

    def cache_kib(log: SQLiteEventLog) -> int:
        return -int(log._call(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0], False))

    with SQLiteEventLog(db) as log:
        assert cache_kib(log) == CACHE_MIB * 1024
        with log.bulk_import():
            assert cache_kib(log) == IMPORT_CACHE_MIB * 1024 > CACHE_MIB * 1024
            log.import_columns(["a:1"], ["u"], ["i"], "view", [1e9])
        assert cache_kib(log) == CACHE_MIB * 1024
        with pytest.raises(RuntimeError, match="stopped"), log.bulk_import():
            raise RuntimeError("stopped")
        assert cache_kib(log) == CACHE_MIB * 1024  # given back when the block fails too
        assert log.count() == 1


def test_import_columns_store_what_append_stores(open_log: LogFactory) -> None:
    """Ids with quotes, backslashes, control characters and non-ASCII text, integer ids, values with and without:
    the bulk path (which writes Redis's JSON without a ``json.dumps`` per event) stores what ``append`` does."""
    awkward = ['say "hi"', "back\\slash", "tab\tnew\nline", "é→😀", "plain", "\u2028sep"]
    n = 12
    columns: dict[str, Any] = {
        "event_ids": [f"bulk:{k}" for k in range(n)],
        "user_ids": [awkward[k % len(awkward)] if k % 4 else k for k in range(n)],
        "item_ids": [awkward[(k + 1) % len(awkward)] for k in range(n)],
        "types": ["view", "purchase", "rating"] * 4,
        "timestamps": 1_700_000_000.125 + np.arange(n) / 3,
        "values": [None if k % 3 else k * 1.1 for k in range(n)],
    }
    log = open_log()
    log.import_columns(**columns, batch_size=5)
    expected = [
        Event(event_id, str(user), item, kind, float(timestamp), value)
        for event_id, user, item, kind, timestamp, value in zip(*columns.values(), strict=True)
    ]
    assert [plain(event) for event in log.read()] == expected
    if not isinstance(log, SQLiteEventLog):  # Redis: each entry's JSON byte for byte as an append writes it
        from liverec.events.redis_log import _fields

        entries = log.client.xrange(log.stream)
        received = json.loads(entries[0][1]["j"])[-1]
        assert [fields["j"] for _, fields in entries] == [_fields(event, received)[1] for event in expected]


def test_a_redis_import_whose_script_fails_raises_and_leaves_its_connection_clean(
    redis_url: str, redis_prefix: str
) -> None:
    """The Redis import sends each script call before reading the reply to the one before: when a call fails, the
    error is raised, and the connection (a reply still unread on it) is closed, not handed back to the next user."""
    from liverec.events.redis_log import RedisEventLog, redis_client

    client = redis_client(redis_url)
    log = RedisEventLog(client, redis_prefix)
    client.set(log.stream, "not a stream")  # every XADD fails (WRONGTYPE)
    n = 30
    columns: dict[str, Any] = {
        "event_ids": [f"x:{k}" for k in range(n)],
        "user_ids": ["u"] * n,
        "item_ids": ["i"] * n,
        "types": "view",
        "timestamps": 1_700_000_000.0 + np.arange(n),
    }
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        log.import_columns(**columns, batch_size=10)  # three calls: two in flight when the first reply fails
    client.delete(log.stream, log._seq, log._ids)
    for _ in range(3):  # every pooled connection answers its own commands
        assert client.ping() is True
    result = log.import_columns(**columns, batch_size=10)
    assert (result.stored, result.last_offset) == (n, n)
    assert [event.event_id for event in log.read()] == columns["event_ids"]
    log.close()
    client.close()


def test_import_columns_checks_columns(log: Any) -> None:
    with pytest.raises(ValueError, match="different lengths"):
        log.import_columns(["a", "b"], ["u"], ["i", "j"], "view", [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        log.import_columns(["a"], ["u"], ["i"], ["view"], [np.nan])


def test_import_events(log: Any) -> None:
    log.append([ev("e3")])
    result = log.import_events((ev(f"e{k}") for k in range(10)), batch_size=4)
    assert (result.stored, result.duplicates, result.last_offset) == (9, 1, 10)
    assert log.import_events([]).last_offset == 10
    assert [e.event_id for e in log.read()] == ["e3", "e0", "e1", "e2", "e4", "e5", "e6", "e7", "e8", "e9"]


def test_catalogue(log: Any) -> None:
    record = log.put_item("i1", title="Heat", categories=["Action", "Crime"], attributes={"year": 1995})
    assert log.get_item("i1") == record
    assert record["categories"] == ["Action", "Crime"] and record["available"] is True
    log.put_item("i0", available=False)
    log.put_item("i1", title="Heat (1995)")  # a put replaces the whole record
    assert [(r["item_id"], r["title"], r["categories"], r["available"]) for r in log.items()] == [
        ("i0", None, [], False),
        ("i1", "Heat (1995)", [], True),
    ]
    assert log.delete_item("i1") is True
    assert log.delete_item("i1") is False
    assert log.get_item("i1") is None
    assert log.delete_item("only-in-events") is False  # a tombstone all the same: stays unrecommendable
    tombstones = {r["item_id"] for r in log.items() if r["deleted"]}
    assert tombstones == {"i1", "only-in-events"}
    log.put_item("i1", title="back")
    assert log.get_item("i1") is not None and log.get_item("i1")["deleted"] is False
    with pytest.raises(TypeError, match="categories"):
        log.put_item("i2", categories="Action")


def test_iter_items_yields_the_records_items_lists(log: Any) -> None:
    log.put_items({"item_id": f"i{n}", "title": f"T{n}", "categories": ["c"]} for n in range(2_500))
    log.delete_item("i7")
    assert sorted(log.iter_items(), key=lambda record: record["item_id"]) == log.items()
    assert len(log.items()) == 2_500


def test_put_items_writes_what_successive_puts_write(log: Any) -> None:
    records = [
        {"item_id": "i1", "title": "Heat", "categories": ["Action", "Crime"], "attributes": {"year": 1995}},
        {"item_id": "i0", "available": False},
        {"item_id": "i2", "title": "Ran"},
        {"item_id": "i1", "title": "Heat (1995)"},  # a later record replaces an earlier one, across batches
    ]
    assert log.put_items(iter(records), batch_size=3) == 4
    assert [(r["item_id"], r["title"], r["categories"], r["available"], r["attributes"]) for r in log.items()] == [
        ("i0", None, [], False, None),
        ("i1", "Heat (1995)", [], True, None),
        ("i2", "Ran", [], True, None),
    ]
    log.delete_item("i2")
    log.put_items([{"item_id": "i2", "categories": ["Drama"]}])  # puts a deleted item back, like put_item
    assert log.get_item("i2") == {**log.get_item("i2"), "categories": ["Drama"], "deleted": False}
    assert log.put_items([]) == 0
    with pytest.raises(TypeError, match="colour"):
        log.put_items([{"item_id": "i3", "colour": "red"}])  # a field put_item does not take


def test_meta(log: Any) -> None:
    assert log.meta_get("missing") is None
    assert log.meta_get("missing", "x") == "x"
    log.meta_set("k", "1")
    log.meta_set("k", "2")
    assert log.meta_get("k") == "2"


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_readonly_reader_process(db: Path) -> None:
    log = SQLiteEventLog(db)
    log.append([ev(f"e{k}") for k in range(5)])
    reader = run_python(
        """
        import sys
        from liverec.events.log import SQLiteEventLog
        with SQLiteEventLog(sys.argv[1], readonly=True) as log:
            print(log.count(), log.last_offset(), log.writable())
            try:
                log.append([])
                log.meta_set("k", "v")
            except RuntimeError as error:
                print(error)
        """,
        str(log.path),
    )
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    first, second = out.splitlines()
    assert first == "5 5 False"
    assert second.endswith("read-only")
    assert log.append([ev("e5")]).last_offset == 6  # the writer was never blocked
    log.close()


def test_acknowledged_events_survive_kill_9(db: Path) -> None:
    writer = run_python(
        """
        import sys
        from liverec.events.log import SQLiteEventLog
        from liverec.events.schema import Event
        log = SQLiteEventLog(sys.argv[1])
        batch = 0
        while True:
            result = log.append([Event(f"{batch}-{k}", "u", "i", "view", 1.0 + batch) for k in range(50)])
            print(batch, result.last_offset, flush=True)
            batch += 1
        """,
        str(db),
    )
    assert writer.stdout is not None
    acknowledged = []
    for line in writer.stdout:
        acknowledged.append(tuple(map(int, line.split())))
        if len(acknowledged) == 40:
            break
    writer.kill()  # SIGKILL: no close, no checkpoint
    out, err = writer.communicate(timeout=60)
    acknowledged += [tuple(map(int, line.split())) for line in out.splitlines() if len(line.split()) == 2]
    assert len(acknowledged) >= 40, err
    with SQLiteEventLog(db) as log:
        stored = {e.event_id for chunk in log.iter_all() for e in chunk}
        assert log.count() % 50 == 0  # a batch is one transaction: all or nothing
        assert log.last_offset() >= acknowledged[-1][1]
    for batch, _ in acknowledged:
        assert {f"{batch}-{k}" for k in range(50)} <= stored


def impression(rid: str, user: str | None = "u1", served_at: float = 1_700_000_000.0) -> Any:
    from liverec.events.impressions import Impression

    return Impression(
        recommendation_id=rid,
        user_id=user,
        kind="user" if user else "session",
        items=["i1", "i2", "i3"],
        scores=[0.9, None, 0.1],
        propensities=[0.9, 0.05, 0.9],
        list_propensities=[0.9, 0.1, None],
        explored=[False, True, False],
        model_version="v0001",
        policy="epsilon",
        policy_settings={"epsilon": 0.1},
        served_at=served_at,
    )


def test_impressions_and_rewards_are_stored_and_survive_a_reopen(open_log: LogFactory) -> None:
    from liverec.events.impressions import Reward, join_rewards

    log = open_log()
    log.log_impressions([impression("r1"), impression("r2", user=None)])
    result = log.append([ev("e1", item="i2", type="click", recommendation_id="r1", timestamp=1_700_000_002.0)])
    found = log.get_impressions(["r1", "r2", "r9"])  # queued before the append: committed with it or before
    assert set(found) == {"r1", "r2"} and found["r1"] == impression("r1") and found["r2"].user_id is None
    report = join_rewards(result.events, found, {"click": 1.0}, window_s=60.0)
    assert report.rewards == [Reward("r1", "i2", "click", 2, 1.0, 2.0, False, result.last_offset)]
    log.log_rewards(report.rewards)
    log.flush()
    log.close()
    again = open_log()
    assert again.get_impressions(["r1"])["r1"].to_json()["slate_propensity"] == pytest.approx(0.9 * 0.05 * 0.9)
    assert again.get_rewards("r1") == report.rewards and again.get_rewards("r2") == []
    assert again.count_impressions() == 2


def test_erasure_deletes_a_users_impressions_and_their_rewards(open_log: LogFactory) -> None:
    from liverec.events.impressions import Reward

    log = open_log()
    log.log_impressions([impression("r1", user="gone"), impression("r2", user="kept"), impression("r3", user="gone")])
    log.log_rewards(
        [Reward("r1", "i1", "click", 1, 1.0, 2.0, False, 1), Reward("r2", "i1", "click", 1, 1.0, 2.0, False, 2)]
    )
    log.flush()
    erased = log.erase_events(user_id="gone")
    assert erased.count == 0 and erased.impressions == 2
    assert set(log.get_impressions(["r1", "r2", "r3"])) == {"r2"}
    assert log.get_rewards("r1") == [] and len(log.get_rewards("r2")) == 1
    old = log.erase_events(before=1_700_000_000.5)  # retention: lists served before the cut-off go too
    assert old.impressions == 1 and log.count_impressions() == 0
