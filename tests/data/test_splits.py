"""Splits: leave-one-out, global temporal and per-user temporal, on hand-made events."""

from __future__ import annotations

import numpy as np
import pytest

from liverec.data.interactions import Interactions
from liverec.data.splits import (
    hold_out_last,
    last_event_split,
    leave_one_out,
    sample_validation,
    temporal_split,
    user_temporal_split,
)
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


def test_last_event_split_is_hold_out_last_with_its_events(events: Interactions) -> None:
    split = last_event_split(events)
    train, (history, targets) = hold_out_last(events)
    np.testing.assert_array_equal(split.history.users, [0, 2])
    np.testing.assert_array_equal(split.targets.items, [3, 6])
    np.testing.assert_array_equal(split.history.items, history.items)
    np.testing.assert_array_equal(split.targets.items, targets.items)
    np.testing.assert_array_equal(split.train.item_ids, train.item_ids)
    assert split.test_events is not None
    np.testing.assert_array_equal(split.test_events.item_ids, [3, 6])


def _pairs(data: Interactions) -> list[tuple[int, int]]:
    return sorted(zip(data.user_ids.tolist(), data.item_ids.tolist(), strict=True))


def test_sample_validation_keeps_a_seeded_sample_and_trains_the_rest() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 6)
    data = Interactions.from_arrays(users, rng.integers(0, 40, len(users)), np.tile(np.arange(6.0), 50))
    validation, test = leave_one_out(data)
    train, sample = sample_validation(test.train, validation, 12, seed=3)
    assert len(sample.history) == len(sample.targets) == 12 and sample.info["evaluated_users"] == 12
    kept = sample.history.users
    assert np.all(np.diff(kept) > 0) and set(kept) <= set(validation.history.users)
    # the sample's rows are the validation split's rows of those users
    rows = np.searchsorted(validation.history.users, kept)
    np.testing.assert_array_equal(sample.targets.items, validation.targets.items[rows])
    assert sample.test_events is not None and validation.test_events is not None
    np.testing.assert_array_equal(sample.test_events.user_ids, kept)
    # nothing lost, nothing twice: the training events plus the sample's held-out ones are all of them
    assert _pairs(Interactions.concat([train, sample.test_events])) == _pairs(
        Interactions.concat([test.train, validation.test_events])
    )
    assert not set(kept) & set(train.user_ids[len(test.train) :].tolist())  # the sample's targets stay out
    assert sample.train is train
    # seeded: the same seed picks the same users, another seed others
    np.testing.assert_array_equal(sample_validation(test.train, validation, 12, seed=3)[1].history.users, kept)
    assert not np.array_equal(sample_validation(test.train, validation, 12, seed=4)[1].history.users, kept)
    # no more rows than asked for: unchanged
    unchanged = sample_validation(test.train, validation, 50, seed=3)
    assert unchanged[0] is test.train and unchanged[1] is validation
    with pytest.raises(ValueError, match="n_users"):
        sample_validation(test.train, validation, 0, seed=3)


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
