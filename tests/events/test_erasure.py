"""Erasure in both event logs: what leaves, what no byte of survives, what other processes are told."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liverec.events.log import ErasedEvents, SQLiteEventLog, StoredEvent
from liverec.events.pseudonyms import erasure_token, matches_token, pseudonym, pseudonymiser
from liverec.events.schema import Event

USER = "erase-me-7f3a9c"
LogFactory = Callable[..., Any]


def user_events(n: int = 5, timestamp: float = 1_700_000_000.0) -> list[Event]:
    return [Event(f"evt-erase-{j:04d}", USER, f"i{j}", "view", timestamp + j) for j in range(n)]


def other_events(n: int, timestamp: float = 1_700_000_000.0, prefix: str = "o") -> list[Event]:
    return [Event(f"{prefix}-{j}", f"u{j % 7}", f"i{j % 11}", "view", timestamp + j) for j in range(n)]


@pytest.fixture(params=["sqlite", "redis"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogFactory]:
    opened: list[Any] = []
    client = None
    if request.param == "sqlite":

        def factory(**options: Any) -> Any:
            opened.append(SQLiteEventLog(tmp_path / "events.db", **options))
            return opened[-1]

    else:
        from liverec.events.redis_log import RedisEventLog, redis_client

        prefix = request.getfixturevalue("redis_prefix")
        client = redis_client(request.getfixturevalue("redis_url"))

        def factory(**options: Any) -> Any:
            opened.append(RedisEventLog(client, prefix, **options))
            return opened[-1]

    yield factory
    for event_log in opened:
        event_log.close()
    if client is not None:
        client.close()


def stored_bytes(event_log: Any) -> bytes:
    """Every byte the log keeps: the SQLite files, or an uncompressed DUMP of every key of the prefix."""
    if isinstance(event_log, SQLiteEventLog):
        return b"".join(path.read_bytes() for path in sorted(event_log.path.parent.glob("events.db*")))
    client = event_log.client
    previous = client.config_get("rdbcompression")["rdbcompression"]
    client.config_set("rdbcompression", "no")  # DUMP compresses long strings with LZF otherwise
    try:
        keys = sorted(client.scan_iter(match=f"{event_log.prefix}:*"))
        return b"".join(bytes(client.dump(key) or b"") for key in keys)
    finally:
        client.config_set("rdbcompression", previous)


def test_a_user_erasure_deletes_their_events_and_leaves_no_byte(open_log: LogFactory) -> None:
    event_log = open_log()
    event_log.append(other_events(300))
    event_log.append(user_events(5) + other_events(20, prefix="mixed"))
    event_log.append(other_events(300, prefix="late"))
    assert USER.encode() in stored_bytes(event_log)

    erased = event_log.erase_events(user_id=USER)
    assert erased == ErasedEvents(5, [301, 302, 303, 304, 305], [USER])
    everything = [event for batch in event_log.iter_all() for event in batch]
    assert len(everything) == event_log.count() == 620 and all(event.user_id != USER for event in everything)
    assert event_log.last_offset() == 625  # offsets are never given out again
    data = stored_bytes(event_log)
    assert USER.encode() not in data and b"evt-erase" not in data

    # idempotent; a resent erased event is a new event (its id left the dedupe index too)
    assert event_log.erase_events(user_id=USER) == ErasedEvents()
    result = event_log.append(user_events(1))
    assert result.stored == 1 and result.events[0].offset == 626


def test_erasing_the_newest_events_does_not_give_their_offsets_again(open_log: LogFactory) -> None:
    event_log = open_log()
    event_log.append(other_events(3) + user_events(2))
    event_log.erase_events(user_id=USER)
    assert event_log.last_offset() == 5
    assert event_log.append(other_events(1, prefix="next")).events[0].offset == 6


def test_retention_deletes_old_events_and_tells_what_the_users_have_left(open_log: LogFactory) -> None:
    event_log = open_log()
    event_log.append(other_events(50, timestamp=1000.0) + other_events(30, timestamp=5000.0, prefix="new"))
    seen: list[tuple[ErasedEvents, list[StoredEvent]]] = []
    erased = event_log.erase_events(before=2000.0, on_erased=lambda e, remaining: seen.append((e, remaining)))
    assert erased.count == 50 and erased.offsets == list(range(1, 51))
    assert erased.users == sorted({f"u{j % 7}" for j in range(50)})
    assert [event.offset for event in event_log.read(0)] == list(range(51, 81))
    [(told, remaining)] = seen
    assert told == erased and [event.offset for event in remaining] == list(range(51, 81))
    assert b"o-1" not in stored_bytes(event_log)


def test_erasure_records_carry_no_user_id_and_count_as_the_epoch(open_log: LogFactory) -> None:
    event_log = open_log()
    assert event_log.erasure_epoch() == 0 and event_log.erasures_after(0) == []
    token = erasure_token(USER)
    assert event_log.record_erasure("user", token) == 1
    assert event_log.record_erasure("retention") == 2
    records = event_log.erasures_after(0)
    assert [(r.epoch, r.kind) for r in records] == [(1, "user"), (2, "retention")]
    assert matches_token(USER, records[0].token) and not matches_token("someone-else", records[0].token)
    assert [r.epoch for r in event_log.erasures_after(1)] == [2] and event_log.erasure_epoch() == 2
    assert USER.encode() not in stored_bytes(event_log)
    with pytest.raises(ValueError, match="kind"):
        event_log.record_erasure("everything")


def test_pseudonymised_logs_store_the_keyed_hash_only(open_log: LogFactory) -> None:
    secret = "s3cret"
    event_log = open_log(pseudonymise=pseudonymiser(secret))
    result = event_log.append(user_events(3))
    event_log.import_columns(["imp-1"], [USER], ["i9"], "view", np.array([1.0]))
    stored = pseudonym(secret, USER)
    assert result.events[0].user_id == stored and stored.startswith("ps-") and len(stored) == 67
    assert {event.user_id for event in event_log.read(0)} == {stored}
    assert USER.encode() not in stored_bytes(event_log)
    assert event_log.erase_events(user_id=stored).count == 4


def test_the_redis_rewrite_keeps_consumer_groups_and_pending_entries(redis_url: str, redis_prefix: str) -> None:
    from liverec.events.redis_log import RedisEventLog, redis_client

    client = redis_client(redis_url)
    with RedisEventLog(client, redis_prefix) as event_log:
        event_log.append(other_events(40) + user_events(5) + other_events(40, prefix="late"))
        event_log.ensure_group("state", "w1")
        event_log.ensure_group("other", "w2")
        delivered = event_log.consume("state", "w1", count=60, block_ms=10)
        event_log.ack("state", [event.offset for event in delivered[:20]])  # 21..60 stay pending
        event_log.erase_events(user_id=USER)
        groups = {group["name"]: group for group in client.xinfo_groups(event_log.stream)}
        assert groups["state"]["last-delivered-id"] == "60-0" and groups["other"]["last-delivered-id"] == "0-0"
        assert groups["state"]["pending"] == 35  # 40 pending, 5 of them erased
        assert [c["name"] for c in client.xinfo_consumers(event_log.stream, "other")] == ["w2"]
        assert [event.offset for event in event_log.consume("state", "w1", count=100, block_ms=10)] == list(
            range(61, 86)
        )
        assert len(event_log.consume("other", "w2", count=100, block_ms=10)) == 80
        assert client.xinfo_stream(event_log.stream)["last-generated-id"] == "85-0"
        assert event_log.append(other_events(1, prefix="next")).events[0].offset == 86
    client.close()


def test_a_stream_left_empty_keeps_its_groups(redis_url: str, redis_prefix: str) -> None:
    from liverec.events.redis_log import RedisEventLog, redis_client

    client = redis_client(redis_url)
    with RedisEventLog(client, redis_prefix) as event_log:
        event_log.append(user_events(3))
        event_log.ensure_group("state", "w1")
        assert event_log.erase_events(user_id=USER).count == 3
        assert event_log.count() == 0 and client.xinfo_groups(event_log.stream)[0]["name"] == "state"
        assert event_log.append(other_events(1)).events[0].offset == 4
    client.close()
