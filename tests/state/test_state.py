"""The live state: sequences, seen sets, decayed popularity, catalogue masks, snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from liverec.state import State, StateConfig

DAY = 86400.0


class Ev(NamedTuple):
    offset: int
    user_id: str
    item_id: str
    type: str
    timestamp: float


#: Makes a state of the backend under test from a StateConfig (or None for the defaults).
StateFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> Iterator[StateFactory]:
    """The same contract for both backends: in-process State, RedisState (a real Redis, own key prefix)."""
    if request.param == "memory":
        yield lambda config=None: State(config)
        return
    from liverec.events.redis_log import redis_client
    from liverec.state.redis_store import RedisState

    prefix = request.getfixturevalue("redis_prefix")
    client = redis_client(request.getfixturevalue("redis_url"))
    yield lambda config=None: RedisState(client, prefix, config)
    client.close()


def events(rows: list[tuple[str, str, str, float]], start: int = 1) -> list[Ev]:
    return [Ev(start + i, *row) for i, row in enumerate(rows)]


def test_history_is_ordered_bounded_and_seen_is_complete(make_state: StateFactory) -> None:
    state = make_state(StateConfig(max_history=3))
    state.apply(events([("u", f"i{n}", "view", 1000.0 + n) for n in range(5)]))
    assert [state.item_ids[i] for i in state.history("u")] == ["i2", "i3", "i4"]
    assert sorted(state.item_ids[i] for i in state.seen("u")) == ["i0", "i1", "i2", "i3", "i4"]
    assert state.offset == 5 and state.n_events == 5
    assert len(state.history("nobody")) == 0 and len(state.seen("nobody")) == 0


def test_repeats_stay_in_the_history_once_in_seen_through_a_snapshot(tmp_path: Path) -> None:
    state = State(StateConfig(max_history=4))
    rows = [("u", item, "view", 1000.0 + n) for n, item in enumerate(["b", "a", "b", "c", "a", "d", "b"])]
    state.apply(events([*rows, ("v", "z", "view", 2000.0)]))
    names = state.item_ids
    assert [names[i] for i in state.history("u")] == ["c", "a", "d", "b"]  # the newest four, repeats kept
    assert state.seen("u").tolist() == sorted(state.seen("u").tolist())  # ascending, each item once
    assert sorted(names[i] for i in state.seen("u")) == ["a", "b", "c", "d"]
    state.snapshot(tmp_path / "state.npz")
    loaded = State.load(tmp_path / "state.npz", StateConfig(max_history=4))
    assert loaded is not None and loaded.fingerprint() == state.fingerprint()
    loaded.apply(events([("u", "e", "view", 3000.0), ("u", "a", "view", 3001.0)], start=9))
    assert [loaded.item_ids[i] for i in loaded.history("u")] == ["d", "b", "e", "a"]
    assert sorted(loaded.item_ids[i] for i in loaded.seen("u")) == ["a", "b", "c", "d", "e"]
    assert loaded.reset_users(["u"]) == 1 and not loaded.has_user("u") and loaded.has_user("v")


def test_the_catalogue_keeps_what_serving_reads_of_a_record() -> None:
    state = State()
    record = {"item_id": "i", "title": "Heat", "categories": ["Action"], "available": True, "attributes": None}
    index = state.put_item("i", {**record, "updated_at": 1.0, "deleted": False})
    assert state.catalogue.metadata[index] == {"title": "Heat", "categories": ("Action",)}
    assert state.catalogue.categories(index) == ["Action"]
    bare = state.put_item("j", {"item_id": "j", "title": None, "categories": [], "available": False})
    assert bare not in state.catalogue.metadata and not state.catalogue.available(state.n_items)[bare]


def test_popularity_halves_every_half_life_and_weights_types(make_state: StateFactory) -> None:
    state = make_state(StateConfig(half_life_days=1.0, event_weights={"view": 1.0, "purchase": 4.0, "impression": 0.0}))
    state.apply(events([("u", "a", "view", 0.0), ("v", "b", "purchase", 0.0), ("w", "c", "impression", 0.0)]))
    pop = state.popularity(now=DAY)
    a, b = state.item_index["a"], state.item_index["b"]
    assert pop[a] == pytest.approx(0.5) and pop[b] == pytest.approx(2.0)
    assert "c" not in state.item_index  # weight 0: stored in the log, not part of the state
    assert state.offset == 3 and state.n_events == 3


def test_out_of_order_event_adds_its_decayed_weight(make_state: StateFactory) -> None:
    state = make_state(StateConfig(half_life_days=1.0, event_weights={"view": 1.0}))
    state.apply(events([("u", "a", "view", 2 * DAY), ("v", "a", "view", DAY)]))
    assert state.popularity(now=2 * DAY)[state.item_index["a"]] == pytest.approx(1.5)
    assert state.clock == 2 * DAY


def test_redelivered_offsets_are_applied_once(make_state: StateFactory) -> None:
    state = make_state()
    batch = events([("u", "a", "view", 1.0), ("u", "b", "view", 2.0)])
    state.apply(batch)
    state.apply(batch)
    assert state.counts().tolist() == [1, 1] and len(state.history("u")) == 2


def test_snapshot_round_trip_and_settings_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    state = State(StateConfig(max_history=5))
    rows = [(f"u{rng.integers(20)}", f"i{rng.integers(50)}", "view", float(t)) for t in range(500)]
    state.apply(events(rows))
    state.put_item("i3", {"categories": ["x"], "available": True})
    state.snapshot(tmp_path / "state.npz")
    loaded = State.load(tmp_path / "state.npz", StateConfig(max_history=5))
    assert loaded is not None and loaded.fingerprint() == state.fingerprint()
    assert State.load(tmp_path / "state.npz", StateConfig(max_history=6)) is None


def test_catalogue_masks(make_state: StateFactory) -> None:
    state = make_state()
    state.apply(events([("u", "a", "view", 1.0), ("u", "b", "view", 2.0), ("u", "c", "view", 3.0)]))
    state.put_item("a", {"categories": ["drama", "crime"]})
    state.put_item("d", {"categories": ["drama"], "available": False})  # catalogue-only item
    n = state.n_items
    drama = state.catalogue.category_mask("drama", n)
    assert [state.item_ids[i] for i in np.flatnonzero(drama)] == ["a", "d"]
    available = state.catalogue.available(n)
    assert [state.item_ids[i] for i in np.flatnonzero(~available)] == ["d"]
    assert state.remove_item("b") and not state.catalogue.available(n)[state.item_index["b"]]
    assert not state.remove_item("zzz")


# -- the Redis state against the in-process one, and what only a shared state has to do ---------------------------
def redis_states(redis_url: str, prefix: str, n: int, config: StateConfig | None = None) -> list[Any]:
    """``n`` RedisState objects on one prefix: what ``n`` API replicas see."""
    from liverec.events.redis_log import redis_client
    from liverec.state.redis_store import RedisState

    return [RedisState(redis_client(redis_url), prefix, config) for _ in range(n)]


def random_rows(n: int, seed: int = 0) -> list[tuple[str, str, str, float]]:
    rng = np.random.default_rng(seed)
    kinds = ["view", "click", "purchase", "impression"]
    return [
        (f"u{rng.integers(30)}", f"i{rng.integers(80)}", kinds[rng.integers(4)], float(rng.integers(0, 30 * DAY)))
        for _ in range(n)
    ]


def test_redis_state_equals_the_in_process_state(redis_url: str, redis_prefix: str) -> None:
    config = StateConfig(max_history=7, event_weights={"view": 1.0, "click": 2.0, "purchase": 8.0})
    batch = events(random_rows(2_000))
    memory = State(config)
    memory.apply(batch)
    (shared,) = redis_states(redis_url, redis_prefix, 1, config)
    for start in range(0, len(batch), 300):  # applied in several script calls
        shared.apply(batch[start : start + 300])
    assert shared.fingerprint() == memory.fingerprint()
    assert shared.clock == memory.clock and shared.n_users == memory.n_users


def test_replicas_share_one_state_and_apply_each_event_once(redis_url: str, redis_prefix: str) -> None:
    a, b = redis_states(redis_url, redis_prefix, 2)
    batch = events(random_rows(1_000, seed=1))
    with ThreadPoolExecutor(4) as pool:  # the API replica and workers deliver the same events concurrently
        applied = list(pool.map(lambda part: [a, b][part % 2].apply(batch[part::4]), range(4)))
        again = list(pool.map(lambda part: [b, a][part % 2].apply(batch[part::4]), range(4)))
    assert sum(applied) == len(batch) and sum(again) == 0
    memory = State()
    memory.apply(batch)
    expected = memory.fingerprint()
    for replica in (a, b):
        got = replica.fingerprint()
        assert got["counts"] == expected["counts"] and got["seen"] == expected["seen"]
        assert got["popularity"] == expected["popularity"] and got["n_events"] == len(batch)
        # histories hold the same items; their order is the order of application (see RedisState)
        assert {u: sorted(h) for u, h in got["users"].items()} == {u: sorted(h) for u, h in expected["users"].items()}
    a.put_item("i3", {"categories": ["x"], "available": True})
    b.remove_item("i4")
    history, seen = b.user_view("u0")  # a request on replica b picks up the catalogue change made on a
    assert len(history) and len(seen)
    assert b.catalogue.category_mask("x", b.n_items)[b.item_index["i3"]]
    a.sync()
    assert not a.catalogue.available(a.n_items)[a.item_index["i4"]]


def test_clear_then_reapply_rebuilds_the_same_state(redis_url: str, redis_prefix: str) -> None:
    (shared,) = redis_states(redis_url, redis_prefix, 1)
    batch = events(random_rows(500, seed=2))
    shared.apply(batch)
    before = shared.fingerprint()
    shared.clear()
    assert shared.n_events == 0 and shared.n_users == 0
    shared.apply(batch)
    assert shared.fingerprint() == before
