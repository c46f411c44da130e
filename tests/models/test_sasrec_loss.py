"""SASRec's full-softmax loss: computed in chunks it equals one cross-entropy, its gradients (formed in the
forward pass) equal autograd's of a dense reference; bfloat16 logits stay close. The sampled softmax's
gradients (formed in the forward pass too) equal autograd's of the masked cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from liverec.data.interactions import Interactions
from liverec.data.splits import leave_one_out
from liverec.models.sasrec import SASRec
from liverec.models.sasrec import loss as sasrec_loss


def loss_and_grads(model: SASRec, seed: int = 0) -> tuple[float, torch.Tensor, torch.Tensor, float]:
    """The model's loss on random inputs, its gradients, and the reference: one ``F.cross_entropy``."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(300, 8, generator=generator, requires_grad=True)
    items = torch.randn(37, 8, generator=generator, requires_grad=True)
    targets = torch.randint(0, 37, (300,), generator=generator)
    loss = model._loss(hidden, targets + 1, np.random.default_rng(0), items)  # network rows: item + 1
    loss.backward()
    assert hidden.grad is not None and items.grad is not None
    grads = hidden.grad.clone(), items.grad.clone()
    reference = F.cross_entropy(hidden.detach() @ items.detach().T, targets)
    return float(loss.detach()), *grads, float(reference)


def test_chunked_softmax_loss_equals_one_cross_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    whole_loss, whole_hidden, whole_items, reference = loss_and_grads(SASRec())
    monkeypatch.setattr(sasrec_loss, "SOFTMAX_CHUNK_LOGITS", 37 * 64)  # chunks of 64 rows: 5 chunks for 300 rows
    chunked_loss, chunked_hidden, chunked_items, _ = loss_and_grads(SASRec())
    assert whole_loss == pytest.approx(reference, rel=1e-6)
    assert chunked_loss == pytest.approx(reference, rel=1e-6)
    torch.testing.assert_close(chunked_hidden, whole_hidden, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(chunked_items, whole_items, rtol=1e-5, atol=1e-7)


def test_bfloat16_logits_stay_close_to_float32() -> None:
    loss, hidden_grad, items_grad, reference = loss_and_grads(SASRec(logits_dtype="bfloat16"))
    _, hidden_ref, items_ref, _ = loss_and_grads(SASRec())
    assert loss == pytest.approx(reference, rel=2e-2)
    assert float((hidden_grad - hidden_ref).norm() / hidden_ref.norm()) < 2e-2
    assert float((items_grad - items_ref).norm() / items_ref.norm()) < 2e-2


def test_bfloat16_logits_learn_a_planted_successor() -> None:
    rng = np.random.default_rng(0)
    n_users, length, n_items = 120, 12, 30
    items = (rng.integers(0, n_items, n_users)[:, None] + np.arange(length)[None, :]) % n_items  # next = item + 1
    data = Interactions.from_arrays(
        np.repeat(np.arange(n_users), length), items.ravel(), np.tile(np.arange(length, dtype=float), n_users)
    )
    validation, test = leave_one_out(data)
    model = SASRec(
        logits_dtype="bfloat16", dim=32, max_len=16, batch_size=32, learning_rate=5e-3, warmup_steps=0,
        max_epochs=60, patience=60, n_threads=1, dropout=0.0,
    ).fit(test.train, validation=validation)  # fmt: skip
    ids, _ = model.recommend(test.history, k=1)
    expected = (test.history.items[test.history.indptr[1:] - 1] + 1) % n_items
    assert (ids[:, 0] == expected).mean() > 0.9


def test_bad_logits_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="logits_dtype: expected 'float32' or 'bfloat16', got 'float16'"):
        SASRec(logits_dtype="float16")


def dense_window_loss(
    hidden: torch.Tensor, items: torch.Tensor, future: torch.Tensor, seen: list[set[int]]
) -> torch.Tensor:
    """The window loss written plainly, one position and one term at a time (network rows in ``future``)."""
    logits = hidden @ items.T
    per_position = []
    for p, row in enumerate(future.tolist()):
        terms = []
        for target in (t - 1 for t in row if t > 0):
            keep = torch.tensor([i == target or i + 1 not in seen[p] for i in range(items.shape[0])])
            terms.append(torch.logsumexp(logits[p][keep], 0) - logits[p, target])
        per_position.append(torch.stack(terms).mean())
    return torch.stack(per_position).mean()


@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("chunk_rows", [64, 3])
def test_window_loss_gradients_equal_autograd_of_a_dense_reference(
    exclude_seen: bool, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sasrec_loss, "SOFTMAX_CHUNK_LOGITS", 13 * chunk_rows)  # 12 items + the padding column
    generator = torch.Generator().manual_seed(3)
    # row 0 repeats item row 3 (a target already seen) and has a short window at its end
    batch = torch.tensor([[0, 0, 3, 5, 3, 2, 3], [4, 1, 2, 5, 6, 12, 1], [0, 0, 0, 0, 0, 7, 8]])
    model = SASRec(loss_exclude_seen=exclude_seen, future_window=3)
    seen, future = model._loss_context(batch)
    inputs = batch[:, :-1]
    n = int((inputs > 0).sum())
    hidden = torch.randn(n, 6, generator=generator, requires_grad=True)
    items = torch.randn(12, 6, generator=generator, requires_grad=True)
    loss = model._loss(hidden, batch[:, 1:][inputs > 0], np.random.default_rng(0), items, seen, future)
    (2.5 * loss).backward()  # a scaled loss (a distributed rank's weight) scales the gradients
    assert future is not None and hidden.grad is not None and items.grad is not None
    positions = zip(*(inputs > 0).nonzero(as_tuple=True), strict=True)
    prefixes = [set(inputs[r, : c + 1].tolist()) - {0} for r, c in positions]
    hidden_ref = hidden.detach().clone().requires_grad_()
    items_ref = items.detach().clone().requires_grad_()
    reference = dense_window_loss(hidden_ref, items_ref, future, prefixes if exclude_seen else [set()] * n)
    (2.5 * reference).backward()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    torch.testing.assert_close(hidden.grad, hidden_ref.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(items.grad, items_ref.grad, rtol=1e-5, atol=1e-7)


def _sampled_reference(
    log_q: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """The sampled softmax as autograd computes it: a masked ``[n, 1 + n_negatives]`` cross-entropy."""
    positive = (hidden * items[targets - 1]).sum(-1, keepdim=True) - log_q[targets - 1, None]
    negative = hidden @ items[negatives].T - log_q[negatives][None, :]
    negative = negative.masked_fill(negatives[None, :] == (targets[:, None] - 1), float("-inf"))
    return F.cross_entropy(torch.cat([positive, negative], dim=1), torch.zeros(len(hidden), dtype=torch.long))


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_sampled_softmax_gradients_equal_autograd_of_the_masked_cross_entropy(weight: float) -> None:
    generator = torch.Generator().manual_seed(3)
    log_q = torch.log_softmax(torch.randn(50, generator=generator), 0)
    targets = torch.randint(1, 51, (120,), generator=generator)  # network rows
    negatives = torch.randint(0, 50, (40,), generator=generator)
    negatives[:4] = targets[:4] - 1  # some positions' own targets among the shared negatives: left out for them
    negatives[4:8] = negatives[0]  # drawn with replacement: copies, the loss scores each item once with its count
    assert len(negatives.unique()) < len(negatives)
    results = []
    for loss_function in (sasrec_loss.sampled_softmax_loss, _sampled_reference):
        hidden = (3 * torch.randn(120, 8, generator=torch.Generator().manual_seed(4))).requires_grad_()
        items = torch.randn(50, 8, generator=torch.Generator().manual_seed(5)).requires_grad_()
        loss = loss_function(log_q, hidden, targets, negatives, items)
        (loss * weight).backward()  # a distributed rank's weight scales the stored gradients
        assert hidden.grad is not None and items.grad is not None
        results.append((loss.detach(), hidden.grad, items.grad))
    (fused, *fused_grads), (reference, *reference_grads) = results
    torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-7)
    for got, expected in zip(fused_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.integers(0, 9), max_size=30),
    negatives=st.lists(st.integers(0, 9), max_size=30),
)
def test_the_targets_among_the_negatives_are_the_true_entries_of_the_equality_matrix(
    rows: list[int], negatives: list[int]
) -> None:
    """The sampled softmax leaves a position's own target out of its (distinct, sorted) negatives: the pairs it
    finds by binary search are exactly the True entries of ``negatives[None, :] == rows[:, None]``."""
    rows_t, negatives_t = torch.tensor(rows, dtype=torch.int64), torch.tensor(sorted(set(negatives)), dtype=torch.int64)
    positions, columns = sasrec_loss._matches(rows_t, negatives_t)
    found = sorted(zip(positions.tolist(), columns.tolist(), strict=True))
    expected = sorted(map(tuple, (negatives_t[None, :] == rows_t[:, None]).nonzero().tolist()))
    assert found == expected
