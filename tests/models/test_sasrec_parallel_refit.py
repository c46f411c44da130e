"""SASRec's refit in a second process beside the selection: the same model as the refit after it, the child's
bookkeeping of the selection's verdicts, and the fallback when the process cannot deliver."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from liverec.data.splits import leave_one_out
from liverec.models.sasrec import SASRec, parallel_refit
from liverec.models.sasrec.parallel_refit import Verdicts

from .test_sasrec import SMALL, cycle_data

CONFIG = {**SMALL, "max_epochs": 12, "patience": 3, "dropout": 0.2, "parallel_refit_from_s": 0.0}


def _fits(**overrides: object) -> tuple[SASRec, SASRec]:
    """The same fit with the refit beside the selection (two threads: one each) and after it (one thread)."""
    validation, test = leave_one_out(cycle_data(n_users=60))
    config = {**CONFIG, **overrides}
    beside = SASRec(**{**config, "n_threads": 2}).fit(test.train, validation=validation)
    after = SASRec(**{**config, "n_threads": 1}).fit(test.train, validation=validation)
    return beside, after


def _assert_same(beside: SASRec, after: SASRec, selection: bool = True) -> None:
    """The same refit (and, with ``selection``, the same selection record)."""
    assert beside.best_epoch == after.best_epoch > 0
    assert beside.refit_epochs == after.refit_epochs == after.best_epoch
    if selection:
        assert [e.get("val_ndcg@10") for e in beside.history] == [e.get("val_ndcg@10") for e in after.history]
    for name, value in after._net().state_dict().items():
        torch.testing.assert_close(beside._net().state_dict()[name], value, rtol=0, atol=0)
    # the optimiser goes on from the refit's moments (online updates continue from them)
    assert beside._steps == after._steps
    ours, theirs = beside._optimizer().state_dict()["state"], after._optimizer().state_dict()["state"]
    assert ours.keys() == theirs.keys()
    for key in theirs:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(ours[key][name], theirs[key][name], rtol=0, atol=0)
    np.testing.assert_array_equal(beside.item_log_q, after.item_log_q)
    assert (beside.n_users, beside.n_items) == (after.n_users, after.n_items)


@pytest.mark.parametrize("loss", ["softmax", "sampled-softmax"])
def test_the_refit_beside_the_selection_is_the_refit_after_it(loss: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="liverec.models.sasrec.model"):
        beside, after = _fits(loss=loss, n_negatives=10)
    assert "refitting in a second process beside the selection (1 + 1 threads)" in caplog.text
    assert "instead" not in caplog.text  # no fallback
    _assert_same(beside, after)


def test_a_selection_that_runs_to_max_epochs_and_judges_every_other_epoch(caplog: pytest.LogCaptureFixture) -> None:
    # with no patience left to stop it, the selection's verdict on its last epoch comes before its choice
    with caplog.at_level(logging.INFO, logger="liverec.models.sasrec.model"):
        beside, after = _fits(max_epochs=5, patience=50, eval_every=2)
    assert "beside the selection" in caplog.text and "instead" not in caplog.text
    assert [e["epoch"] for e in after.history if "val_ndcg@10" in e] == [2, 4, 5]
    _assert_same(beside, after)


def test_a_refit_process_that_fails_leaves_the_refit_to_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing = "import sys; sys.stderr.write('no refit today'); sys.exit(3)"
    monkeypatch.setattr(parallel_refit, "COMMAND", [sys.executable, "-c", failing])
    validation, test = leave_one_out(cycle_data(n_users=60))
    with caplog.at_level(logging.INFO, logger="liverec.models.sasrec.model"):
        fallen_back = SASRec(**{**CONFIG, "n_threads": 2}).fit(test.train, validation=validation)
    assert "the refit process failed: " in caplog.text and "its last output: no refit today" in caplog.text
    assert "refitting in this process instead" in caplog.text
    # the selection ran at one thread, the refit after it at both: the serial fit's refit at two threads
    serial = SASRec(**{**CONFIG, "n_threads": 2, "parallel_refit_from_s": None}).fit(test.train, validation=validation)
    _assert_same(fallen_back, serial, selection=False)


def test_the_refit_stays_after_the_selection_where_it_does_not_apply(caplog: pytest.LogCaptureFixture) -> None:
    validation, test = leave_one_out(cycle_data(n_users=40))
    for overrides in (
        {"n_threads": 1},
        {"n_threads": 2, "parallel_refit_from_s": None},
        {"n_threads": 2, "parallel_refit_from_s": 60.0},  # a first epoch shorter than that: not worth a process
        {"n_threads": 2, "refit_scale": 1.5},
    ):
        with caplog.at_level(logging.INFO, logger="liverec.models.sasrec.model"):
            model = SASRec(**{**CONFIG, "max_epochs": 3, **overrides}).fit(test.train, validation=validation)
        assert model.refit_epochs > 0
        assert "beside the selection" not in caplog.text, overrides


def _verdicts(*messages: tuple[object, ...]) -> Verdicts:
    return Verdicts(iter(messages))


def test_the_child_keeps_the_best_epoch_so_far_and_stops_at_the_chosen_one() -> None:
    verdicts = _verdicts(("judged", 1, True), ("judged", 2, True), ("judged", 3, False), ("stop", 2))
    assert [verdicts.keep(1), verdicts.done(1)] == [True, False]
    assert [verdicts.keep(2), verdicts.done(2)] == [True, False]
    assert [verdicts.keep(3), verdicts.done(3)] == [False, False]
    # the selection stopped while the child trained epoch 4: epoch 2's weights, kept before, are the answer
    assert [verdicts.keep(4), verdicts.done(4)] == [False, True]
    assert verdicts.choice() == 2


def test_a_child_behind_the_selection_trains_on_to_the_chosen_epoch_without_waiting() -> None:
    # the child reads no further than the verdict it needs: epoch 3 is kept, and it does not know yet it is the last
    verdicts = _verdicts(("judged", 1, True), ("judged", 2, False), ("judged", 3, True), ("stop", 3))
    assert [verdicts.keep(1), verdicts.keep(2), verdicts.keep(3), verdicts.done(3)] == [True, False, True, False]
    assert verdicts.choice() == 3 and verdicts.done(3)
    # a child that reads the stop before it got to the chosen epoch keeps that epoch alone, and stops after it
    behind = _verdicts(("judged", 1, True), ("stop", 3))
    assert [behind.keep(1), behind.keep(2), behind.done(2), behind.keep(3), behind.done(3)] == [
        True,
        False,
        False,
        True,
        True,
    ]


def test_an_unexpected_message_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected message"):
        _verdicts(("bogus", 1)).keep(1)


def test_the_threshold_is_checked() -> None:
    with pytest.raises(ValueError, match="parallel_refit_from_s: expected seconds >= 0 or None, got -1"):
        SASRec(parallel_refit_from_s=-1)
