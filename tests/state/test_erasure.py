"""Dropping users from the live state (erasure) and rebuilding their sequences (retention), in both states."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from liverec.state import State, StateConfig

StateFactory = Callable[..., Any]
USER = "erase-me-7f3a9c"


class Ev(NamedTuple):
    offset: int
    user_id: str
    item_id: str
    type: str
    timestamp: float


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> Iterator[StateFactory]:
    if request.param == "memory":
        yield lambda config=None: State(config)
        return
    from liverec.events.redis_log import redis_client
    from liverec.state.redis_store import RedisState

    prefix = request.getfixturevalue("redis_prefix")
    client = redis_client(request.getfixturevalue("redis_url"))
    yield lambda config=None: RedisState(client, prefix, config)
    client.close()


def stream() -> list[Ev]:
    rows = [("a", "i1"), (USER, "i2"), ("b", "i1"), (USER, "i3"), ("a", "i3"), ("c", "i4"), (USER, "i2")]
    return [Ev(n, user, item, "view", 1000.0 + n) for n, (user, item) in enumerate(rows, start=1)]


def test_reset_without_events_forgets_the_user_and_keeps_the_others(make_state: StateFactory) -> None:
    state = make_state(StateConfig(max_history=2))
    state.apply(stream())
    before = state.fingerprint()
    assert state.reset_users([USER, "never-seen"]) == 1
    after = state.fingerprint()
    assert not state.has_user(USER) and len(state.history(USER)) == 0 and len(state.seen(USER)) == 0
    assert USER not in after["users"] and USER not in after["seen"] and state.n_users == 3
    for user in ("a", "b", "c"):
        assert after["users"][user] == before["users"][user] and after["seen"][user] == before["seen"][user]
    assert after["counts"] == before["counts"]  # item statistics stay aggregated
    assert state.reset_users([USER]) == 0  # idempotent


def test_reset_with_events_rebuilds_sequences_bounded_and_in_order(make_state: StateFactory) -> None:
    state = make_state(StateConfig(max_history=2))
    state.apply(stream())
    left = [e for e in stream() if e.offset > 3]  # retention dropped offsets 1-3
    assert state.reset_users([USER, "a", "b"], left) == 3
    names = state.item_ids
    assert [names[i] for i in state.history(USER).tolist()] == ["i3", "i2"]
    assert sorted(names[i] for i in state.seen(USER).tolist()) == ["i2", "i3"]
    assert [names[i] for i in state.history("a").tolist()] == ["i3"]
    assert not state.has_user("b") and state.has_user("c")


def test_the_snapshot_holds_no_erased_user_and_keeps_the_epoch(tmp_path: Path) -> None:
    state = State()
    state.apply(stream())
    state.reset_users([USER])
    state.erasure_epoch = 4
    state.snapshot(tmp_path / "state.npz")
    data = (tmp_path / "state.npz").read_bytes()
    for encoding in ("utf-8", "utf-32-le"):  # NumPy stores str arrays as UTF-32
        assert USER.encode(encoding) not in data
    loaded = State.load(tmp_path / "state.npz")
    assert loaded is not None and loaded.erasure_epoch == 4 and not loaded.has_user(USER)
    assert loaded.fingerprint() == state.fingerprint()


def test_the_moved_user_keeps_its_data_after_a_removal() -> None:
    state = State()
    state.apply([Ev(n, f"u{n}", f"i{n}", "view", float(n)) for n in range(1, 6)])
    state.reset_users(["u2"])
    assert state.user_ids.count("u5") == 1 and state.user_index["u5"] == state.user_ids.index("u5")
    np.testing.assert_array_equal(state.history("u5"), [state.item_index["i5"]])
