"""The Redis worker's parts: the consumer-group state applier (reclaim, exactly-once) and the updater lease."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from liverec.backends.redis import LeaderLease
from liverec.events.redis_log import RedisEventLog, redis_client
from liverec.events.schema import Event
from liverec.online.worker import StateApplier
from liverec.state.redis_store import RedisState
from liverec.state.store import State


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    connection = redis_client(redis_url)
    yield connection
    connection.close()


def events(n: int, start: int = 0) -> list[Event]:
    return [Event(f"e{k}", f"u{k % 7}", f"i{k % 11}", "click", 1_700_000_000.0 + k) for k in range(start, start + n)]


def test_pending_events_of_a_dead_consumer_are_reclaimed_and_applied_once(client: Any, redis_prefix: str) -> None:
    log = RedisEventLog(client, redis_prefix)  # appends without applying: only the workers apply
    state = RedisState(client, redis_prefix)
    log.append(events(300))
    dead = StateApplier(log, state, consumer="dead", batch=100, claim_idle_ms=60_000)
    delivered = log.consume(dead.group, dead.consumer, count=100, block_ms=10)  # read, then "killed": never acked
    assert len(delivered) == 100 and log.pending(dead.group) == 100
    state.apply(delivered[:40])  # it had applied part of them before dying

    alive = StateApplier(log, state, consumer="alive", batch=1000, claim_idle_ms=0)
    while alive.step():
        pass
    assert log.pending(alive.group) == 0
    assert alive.delivered == 300 and alive.applied == 260  # the 40 already applied are not applied again
    memory = State()
    memory.apply(log.read(limit=1000))
    got, expected = state.fingerprint(), memory.fingerprint()
    assert got["counts"] == expected["counts"] and got["seen"] == expected["seen"]
    assert got["n_events"] == 300 and got["popularity"] == expected["popularity"]


def test_two_appliers_share_the_stream(client: Any, redis_prefix: str) -> None:
    log = RedisEventLog(client, redis_prefix)
    state = RedisState(client, redis_prefix)
    a = StateApplier(log, state, consumer="a", batch=50, block_ms=10)
    b = StateApplier(log, state, consumer="b", batch=50, block_ms=10)
    log.append(events(500))
    while a.step() + b.step():
        pass
    assert a.delivered + b.delivered == 500 and a.delivered > 0 and b.delivered > 0  # the group splits the work
    assert a.applied + b.applied == 500 and state.n_events == 500


def test_the_updater_lease_has_one_holder_and_passes_on(client: Any, redis_prefix: str) -> None:
    key = f"{redis_prefix}:updater:leader"
    first = LeaderLease(client, key, ttl_s=0.2, owner="first")
    second = LeaderLease(client, key, ttl_s=0.2, owner="second")
    assert first.held() and not second.held() and first.held()  # renewing keeps it
    assert first.holder() == "first"
    first.release()
    assert second.held() and not first.held()
    client.pexpire(key, 1)  # the holder died: its lease expires
    time.sleep(0.05)
    assert first.held() and first.holder() == "first"
