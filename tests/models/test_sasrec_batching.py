"""How an epoch (or an update) is cut into batches: length buckets, and in an update the learned span."""

from __future__ import annotations

import numpy as np
import torch

from liverec.data.interactions import Histories
from liverec.models.sasrec import SASRecConfig
from liverec.models.sasrec.batching import learned_tail, plan_epoch


def histories_of(lengths: list[int]) -> Histories:
    rng = np.random.default_rng(0)
    return Histories.from_lists([list(rng.integers(0, 50, size=n)) for n in lengths])


def flags_of(histories: Histories, new_events: list[int | None]) -> Histories:
    """1 for each row's last ``new`` items (None: every item), 0 for the context before them."""
    flags = np.zeros(len(histories.items), dtype=np.int64)
    for row, new in enumerate(new_events):
        start, stop = histories.indptr[row], histories.indptr[row + 1]
        flags[start if new is None else stop - new : stop] = 1
    return Histories(histories.users, histories.indptr, flags)


def test_an_update_batches_windows_whose_new_events_are_last_apart_from_windows_learned_whole() -> None:
    """Sixteen windows of one length: eight rehearsed (every item learned), eight with two new events each. Each batch
    of eight holds one kind, so the final block of the new events' batch computes two columns, not twenty."""
    histories = histories_of([20] * 16)
    new_events: list[int | None] = [None, 2] * 8
    config = SASRecConfig(batch_size=8, max_len=50)
    for seed in range(5):
        plan = plan_epoch(histories, config, np.random.default_rng(seed), flags_of(histories, new_events))
        kinds = sorted(sorted({new_events[row] is None for row in rows}) for rows in plan.batches)
        assert kinds == [[False], [True]]
        tails = {
            learned_tail(learned, batch[:, :-1])
            for batch, _, learned in (plan.tensors(rows, torch.from_numpy) for rows in plan.batches)
        }
        assert tails == {2, None}  # the rehearsed batch learns from its first target on: every column


def test_a_plan_whose_every_item_is_learned_batches_as_one_without_flags() -> None:
    """The span key orders nothing when every item is learned (a fit has no flags): the same batches, same order."""
    histories = histories_of([3, 7, 7, 2, 9, 7, 3, 12, 7, 5, 7, 3])
    config = SASRecConfig(batch_size=3, max_len=50)
    everything = flags_of(histories, [None] * len(histories))
    for seed in range(5):
        plain = plan_epoch(histories, config, np.random.default_rng(seed))
        flagged = plan_epoch(histories, config, np.random.default_rng(seed), everything)
        assert [rows.tolist() for rows in plain.batches] == [rows.tolist() for rows in flagged.batches]


def test_the_learned_tail_is_the_columns_from_the_first_learned_position_on() -> None:
    inputs = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    learned = torch.zeros(2, 6, dtype=torch.bool)
    assert learned_tail(None, inputs) is None
    learned[0, 5] = learned[1, 4] = True
    assert learned_tail(learned, inputs) == 2
    learned[0, 1] = True  # a flag on padding is no position to learn
    assert learned_tail(learned, inputs) == 2
    learned[1, 0] = True
    assert learned_tail(learned, inputs) is None  # every column


def test_a_batch_takes_more_short_windows_until_it_holds_min_positions() -> None:
    """Windows of two items hold one position each: with ``min_positions`` 16 a batch takes sixteen of them; windows
    of twenty items fill sixteen positions in one: those batches keep ``batch_size`` windows. Every window once."""
    lengths = [2] * 48 + [20] * 16
    histories = histories_of(lengths)
    config = SASRecConfig(batch_size=8, max_len=50)
    plan = plan_epoch(histories, config, np.random.default_rng(0), min_positions=16)
    rows = np.concatenate(plan.batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    sizes = sorted((int(plan.lengths[batch].max()), len(batch)) for batch in plan.batches)
    assert sizes == [(2, 16), (2, 16), (2, 16), (20, 8), (20, 8)]
    plain = plan_epoch(histories, config, np.random.default_rng(0))
    assert sorted(len(batch) for batch in plain.batches) == [8] * 8
