"""The row-wise AdamW of a large item table (:mod:`liverec.models.sasrec.row_wise`): a step on the rows a batch
uses, plus the closed form of the zero-gradient steps every other row skipped, follows the dense AdamW step over
the whole table — and the weights' moving average along with it."""

from __future__ import annotations

import pytest
import torch

from liverec.models.sasrec.row_wise import AdamWSettings, SkippedSteps, adamw_rows, skipped_steps

N_ROWS, DIM, START = 40, 8, 3_000  # started late: the bias corrections are 1 (the closed form's approximation)
BETAS, LR, EPS, DECAY = (0.9, 0.98), 1e-2, 1e-8, 0.99


def warm_state(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(N_ROWS, DIM, generator=generator)
    exp_avg = torch.randn(N_ROWS, DIM, generator=generator) * 0.01
    exp_avg_sq = torch.rand(N_ROWS, DIM, generator=generator) * 1e-3 + 1e-5
    return weight, exp_avg, exp_avg_sq


def run_both(weight_decay: float, n_steps: int = 60, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The same steps (each on a random fifth of the rows, gradient zero elsewhere) two ways: torch's AdamW over
    the whole table with a moving average updated every step, and row-wise steps with skipped steps caught up
    when a row is used and at the end. Returns [weight, exp_avg, exp_avg_sq, average] of each."""
    weight, exp_avg, exp_avg_sq = warm_state(seed)
    dense = torch.nn.Parameter(weight.clone())
    optimizer = torch.optim.AdamW([dense], lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay, foreach=False)
    optimizer.state[dense] = {
        "step": torch.tensor(float(START)),
        "exp_avg": exp_avg.clone(),
        "exp_avg_sq": exp_avg_sq.clone(),
    }
    dense_average = weight.clone()
    table, m, v, average = weight.clone(), exp_avg.clone(), exp_avg_sq.clone(), weight.clone()
    skipped = SkippedSteps(N_ROWS)
    skipped.mark(torch.arange(N_ROWS), START)
    generator = torch.Generator().manual_seed(seed + 1)
    for step in range(START + 1, START + 1 + n_steps):
        rows = torch.nonzero(torch.rand(N_ROWS, generator=generator) < 0.2).squeeze(1)
        grad = torch.randn(len(rows), DIM, generator=generator) * 0.01
        dense.grad = torch.zeros_like(dense).index_copy_(0, rows, grad)
        optimizer.step()
        dense_average.lerp_(dense.detach(), 1 - DECAY)
        settings = AdamWSettings(LR, *BETAS, EPS, weight_decay, step)
        param, rows_m, rows_v, rows_average = table[rows], m[rows], v[rows], average[rows]
        skipped_steps(param, rows_m, rows_v, skipped.skipped(rows, step), settings, rows_average, DECAY)
        skipped.mark(rows, step)
        adamw_rows(param, rows_m, rows_v, grad, settings)
        rows_average.lerp_(param, 1 - DECAY)
        for target, source in ((table, param), (m, rows_m), (v, rows_v), (average, rows_average)):
            target.index_copy_(0, rows, source)
    skipped.flush(table, m, v, AdamWSettings(LR, *BETAS, EPS, weight_decay, START + n_steps), average, DECAY)
    state = optimizer.state[dense]
    return [dense.detach(), state["exp_avg"], state["exp_avg_sq"], dense_average], [table, m, v, average]


def test_row_wise_steps_with_skipped_steps_caught_up_are_the_dense_adamw() -> None:
    (dense, dense_m, dense_v, dense_average), (table, m, v, average) = run_both(weight_decay=0.0)
    assert not torch.equal(dense, warm_state(0)[0])  # the steps moved the table
    torch.testing.assert_close(table, dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m, dense_m, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(v, dense_v, rtol=1e-5, atol=1e-11)
    torch.testing.assert_close(average, dense_average, rtol=1e-5, atol=1e-6)


def test_without_the_catch_up_a_row_falls_behind_the_dense_step() -> None:
    """What the closed form is for: a lazy step (moments and weights of unused rows left alone) moves a row
    only when it is used, and lands far from the dense step."""
    (dense, *_), _ = run_both(weight_decay=0.0)
    weight = warm_state(0)[0]
    lazy_gap = (weight - dense).abs().max()  # no step at all: the scale of the dense trajectory
    assert lazy_gap > 1e-2


def test_weight_decay_is_in_the_closed_form() -> None:
    """Decoupled weight decay shrinks the row at every skipped step, inside the closed form."""
    (dense, _, _, dense_average), (table, _, _, average) = run_both(weight_decay=0.05)
    torch.testing.assert_close(table, dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(average, dense_average, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 0.9, BETAS[0] / BETAS[1] ** 0.5])
def test_the_averages_closed_form_at_any_decay(decay: float) -> None:
    """The skipped steps' moving average equals the step-by-step one, also at a decay of 0 (the average is the
    weights) and at a decay equal to the displacement's ratio (the closed form's removable singularity)."""
    weight, exp_avg, exp_avg_sq = warm_state(3)
    settings = AdamWSettings(LR, *BETAS, EPS, 0.0, START)
    step_param, step_m, step_v, step_average = weight.clone(), exp_avg.clone(), exp_avg_sq.clone(), weight.clone() * 0.5
    closed_param, closed_m, closed_v = weight.clone(), exp_avg.clone(), exp_avg_sq.clone()
    closed_average = step_average.clone()
    k = 7
    for _ in range(k):
        skipped_steps(step_param, step_m, step_v, torch.ones(N_ROWS, dtype=torch.int64), settings, step_average, decay)
    skipped_steps(closed_param, closed_m, closed_v, torch.full((N_ROWS,), k), settings, closed_average, decay)
    torch.testing.assert_close(closed_param, step_param, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(closed_average, step_average, rtol=1e-5, atol=1e-7)
    if decay == 0.0:
        torch.testing.assert_close(closed_average, closed_param)


def test_a_row_never_stepped_or_not_behind_is_left_bit_for_bit() -> None:
    weight, exp_avg, exp_avg_sq = warm_state(1)
    param, m, v, average = weight.clone(), exp_avg.clone(), exp_avg_sq.clone(), weight.clone() + 1
    skipped_steps(
        param, m, v, torch.zeros(N_ROWS, dtype=torch.int64), AdamWSettings(LR, *BETAS, EPS, 0.01, 50), average, DECAY
    )
    assert torch.equal(param, weight) and torch.equal(m, exp_avg) and torch.equal(v, exp_avg_sq)
    assert torch.equal(average, weight + 1)
    tracker = SkippedSteps(N_ROWS)
    tracker.mark(torch.tensor([3]), 10)
    assert tracker.skipped(torch.tensor([3, 4]), 15).tolist() == [4, 0]  # row 4 never stepped: nothing to catch up
    table = weight.clone()
    tracker.flush(table, exp_avg.clone(), exp_avg_sq.clone(), AdamWSettings(LR, *BETAS, EPS, 0.0, 15))
    assert torch.equal(table[4], weight[4]) and not torch.equal(table[3], weight[3])
    assert tracker.last.tolist()[3:5] == [15, 0]
