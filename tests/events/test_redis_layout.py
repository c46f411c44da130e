"""The Redis log's idempotency index across an upgrade: a store written by a version before session 34 (the ids in a
hash, ``P:event-ids``) keeps every id known while both are kept, older replicas see what newer ones store, erasure
clears both, and ``liverec migrate`` folds the hash into the set (``P:event-id-set``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liverec.events.redis_log import RedisEventLog, redis_client
from liverec.events.schema import Event


def ev(event_id: str, user: str = "u1", item: str = "i1") -> Event:
    return Event(event_id, user, item, "view", 1_700_000_000.0)


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def log(client: Any, redis_prefix: str) -> Iterator[RedisEventLog]:
    log = RedisEventLog(client, redis_prefix)
    yield log
    log.close()


def _legacy_store(log: RedisEventLog, client: Any, ids: list[str]) -> None:
    """What a version before session 34 left: ids in the hash ``P:event-ids`` (id -> offset), no set."""
    log.append([ev(event_id) for event_id in ids])
    client.delete(log._ids)
    client.hset(log._legacy_ids, mapping={event_id: offset for offset, event_id in enumerate(ids, start=1)})


def test_a_new_store_keeps_its_ids_in_a_set(log: RedisEventLog, client: Any) -> None:
    log.append([ev("a"), ev("b"), ev("a")])
    assert client.type(log._ids) == "set" and client.smembers(log._ids) == {"a", "b"}
    assert not client.exists(log._legacy_ids)


def test_ids_in_the_legacy_hash_stay_known_and_new_ones_go_into_both(log: RedisEventLog, client: Any) -> None:
    _legacy_store(log, client, ["a", "b"])
    result = log.append([ev("a"), ev("c"), ev("b"), ev("d")])
    assert (result.stored, result.duplicates, result.last_offset) == (2, 2, 4)
    assert [event.event_id for event in log.read()] == ["a", "b", "c", "d"]
    # an older replica, reading the hash alone, sees what this one stored (with its offset, as it wrote them)
    assert client.hgetall(log._legacy_ids) == {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert client.smembers(log._ids) == {"c", "d"}
    imported = log.import_columns(["a", "e"], ["u1", "u1"], ["i1", "i1"], "view", [1.0, 2.0])
    assert (imported.stored, imported.duplicates) == (1, 1)
    assert client.hget(log._legacy_ids, "e") == "5" and client.sismember(log._ids, "e")


def test_migrate_folds_the_hash_into_the_set_and_the_ids_stay_known(log: RedisEventLog, client: Any) -> None:
    ids = [f"old-{k}" for k in range(2_500)]
    _legacy_store(log, client, ids)
    log.append([ev("new")])
    assert log.retire_legacy_event_ids(chunk=300) == 2_501  # several HSCAN chunks
    assert not client.exists(log._legacy_ids)
    assert client.scard(log._ids) == 2_501
    result = log.append([ev("old-7"), ev("new"), ev("fresh")])
    assert (result.stored, result.duplicates) == (1, 2)
    assert not client.exists(log._legacy_ids)  # only the set from now on
    assert log.retire_legacy_event_ids() == 0  # again: nothing to do


def test_erasure_forgets_a_users_ids_in_both(log: RedisEventLog, client: Any) -> None:
    _legacy_store(log, client, ["a", "b"])
    log.append([ev("c", user="u2"), ev("d")])
    log.erase_events(user_id="u1")
    assert client.hgetall(log._legacy_ids) == {"c": "3"} and client.smembers(log._ids) == {"c"}
    # a resent erased event is stored again; the other user's is still known
    assert log.append([ev("a"), ev("c", user="u2")]).stored == 1


def test_the_migrate_command_folds_a_redis_store_and_finds_an_embedded_one_up_to_date(
    log: RedisEventLog, client: Any, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    _legacy_store(log, client, ["a", "b", "c"])
    env = {
        **os.environ,
        "LIVEREC_BACKEND": "redis",
        "LIVEREC_REDIS_URL": redis_url,
        "LIVEREC_REDIS_PREFIX": redis_prefix,
    }
    command = [sys.executable, "-m", "liverec.cli", "migrate", "--data-dir", str(tmp_path)]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"folded 3 event ids from {redis_prefix}:event-ids (a hash) into {redis_prefix}:event-id-set"
    )
    assert client.smembers(log._ids) == {"a", "b", "c"} and not client.exists(log._legacy_ids)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip().endswith("is up to date: nothing to migrate")
    embedded = {key: value for key, value in env.items() if not key.startswith("LIVEREC_")}
    local = subprocess.run(command, env=embedded, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == f"the store at {tmp_path / 'events.db'} is up to date: nothing to migrate"
