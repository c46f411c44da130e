"""The live state: sequences, seen sets, decayed popularity, catalogue masks, snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

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


def events(rows: list[tuple[str, str, str, float]], start: int = 1) -> list[Ev]:
    return [Ev(start + i, *row) for i, row in enumerate(rows)]


def test_history_is_ordered_bounded_and_seen_is_complete() -> None:
    state = State(StateConfig(max_history=3))
    state.apply(events([("u", f"i{n}", "view", 1000.0 + n) for n in range(5)]))
    assert [state.item_ids[i] for i in state.history("u")] == ["i2", "i3", "i4"]
    assert sorted(state.item_ids[i] for i in state.seen("u")) == ["i0", "i1", "i2", "i3", "i4"]
    assert state.offset == 5 and state.n_events == 5
    assert len(state.history("nobody")) == 0 and len(state.seen("nobody")) == 0


def test_popularity_halves_every_half_life_and_weights_types() -> None:
    state = State(StateConfig(half_life_days=1.0, event_weights={"view": 1.0, "purchase": 4.0, "impression": 0.0}))
    state.apply(events([("u", "a", "view", 0.0), ("v", "b", "purchase", 0.0), ("w", "c", "impression", 0.0)]))
    pop = state.popularity(now=DAY)
    a, b = state.item_index["a"], state.item_index["b"]
    assert pop[a] == pytest.approx(0.5) and pop[b] == pytest.approx(2.0)
    assert "c" not in state.item_index  # weight 0: stored in the log, not part of the state
    assert state.offset == 3 and state.n_events == 3


def test_out_of_order_event_adds_its_decayed_weight() -> None:
    state = State(StateConfig(half_life_days=1.0, event_weights={"view": 1.0}))
    state.apply(events([("u", "a", "view", 2 * DAY), ("v", "a", "view", DAY)]))
    assert state.popularity(now=2 * DAY)[state.item_index["a"]] == pytest.approx(1.5)
    assert state.clock == 2 * DAY


def test_redelivered_offsets_are_applied_once() -> None:
    state = State()
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


def test_catalogue_masks() -> None:
    state = State()
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
