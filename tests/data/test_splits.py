"""Splits: leave-one-out, global temporal and per-user temporal, on hand-made events."""

from __future__ import annotations

import numpy as np
import pytest

from liverec.data.interactions import Interactions
from liverec.data.splits import leave_one_out, temporal_split, user_temporal_split
from liverec.errors import UsageError


@pytest.fixture
def events() -> Interactions:
    # user 0: items 0,1,2,3 at t=1..4; user 1: items 4,5 at t=2,5 (too short for LOO); user 2: 1,2,6 at t=3,6,7
    # rows deliberately out of order; user 0 has a tie at t=4 resolved by row order (item 3 after item 7)
    return Interactions.from_arrays(
        user_ids=[2, 0, 1, 0, 0, 2, 1, 0, 2, 0],
        item_ids=[1, 0, 4, 1, 2, 2, 5, 7, 6, 3],
        timestamps=[3, 1, 2, 2, 3, 6, 5, 4, 7, 4],
    )


def test_leave_one_out(events: Interactions) -> None:
    validation, test = leave_one_out(events)
    np.testing.assert_array_equal(test.history.users, [0, 2])
    np.testing.assert_array_equal(test.targets.items, [3, 6])  # tie at t=4: the later row is last
    np.testing.assert_array_equal(validation.targets.items, [7, 2])
    assert list(validation.history.row(0)) == [0, 1, 2]
    assert list(test.history.row(0)) == [0, 1, 2, 7]  # test history includes the validation item
    assert list(test.history.row(1)) == [1, 2]
    # user 1 (2 events) trains entirely; targets never appear in train
    train_pairs = set(zip(test.train.user_ids.tolist(), test.train.item_ids.tolist(), strict=True))
    assert (1, 4) in train_pairs and (1, 5) in train_pairs
    assert (0, 3) not in train_pairs and (0, 7) not in train_pairs and (2, 6) not in train_pairs
    assert len(test.train) == len(events) - 4
    assert test.test_events is not None and len(test.test_events) == 2


def test_temporal_split_by_fraction(events: Interactions) -> None:
    split = temporal_split(events, test_fraction=0.3)
    # 10 events, 7 train: the 7 earliest in time are t=1,2,2,3,3,4,4; test is t=5,6,7
    assert len(split.train) == 7
    assert split.train.timestamps.max() <= 4 and split.info["cut_time"] == 5
    assert split.info["test_events"] == 3
    np.testing.assert_array_equal(split.history.users, [1, 2])
    assert list(split.targets.row(0)) == [5] and list(split.targets.row(1)) == [2, 6]
    assert split.info["test_items_unseen_in_train"] == 2  # items 5 and 6 appear only after the cut


def test_temporal_split_by_time_reports_unseen_users() -> None:
    events = Interactions.from_arrays(user_ids=[0, 0, 1, 2], item_ids=[0, 1, 1, 0], timestamps=[1, 5, 6, 7])
    split = temporal_split(events, cut_time=5.5)
    assert split.info["test_users"] == 2 and split.info["test_users_unseen_in_train"] == 2
    assert split.info["evaluated_users"] == 0


def test_temporal_split_drops_repeats_unless_asked() -> None:
    events = Interactions.from_arrays(user_ids=[0, 0, 0], item_ids=[0, 1, 0], timestamps=[1, 2, 3])
    assert temporal_split(events, cut_time=2.5).info["evaluated_users"] == 0
    assert list(temporal_split(events, cut_time=2.5, repeat=True).targets.row(0)) == [0]


def test_user_temporal_split(events: Interactions) -> None:
    split = user_temporal_split(events, test_fraction=0.5)
    np.testing.assert_array_equal(split.history.users, [0, 1, 2])
    assert sorted(split.targets.row(0)) == [3, 7]
    assert list(split.targets.row(1)) == [5]
    assert list(split.targets.row(2)) == [6]


def test_bad_fraction(events: Interactions) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        temporal_split(events, test_fraction=1.5)


def test_order_without_time_splits_per_user_and_refuses_a_global_cut() -> None:
    """Positions in a sequence (``timed`` False): leave-one-out and the per-user split work on the order;
    a global cut by time has no clock to cut at."""
    untimed = Interactions.from_arrays([0, 0, 0, 1, 1, 1], [3, 1, 2, 0, 4, 2], [0, 1, 2, 0, 1, 2], timed=False)
    validation, test = leave_one_out(untimed)
    np.testing.assert_array_equal(test.targets.items, [2, 2])
    np.testing.assert_array_equal(validation.targets.items, [1, 4])
    assert test.train.timed is False and test.history.timestamps is None
    assert user_temporal_split(untimed, test_fraction=0.4).train.timed is False
    with pytest.raises(UsageError, match="temporal split: the data has each user's order but no time"):
        temporal_split(untimed)
