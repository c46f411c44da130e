"""SASRec's training losses: full softmax (with seen-item exclusion and a window of next items, its
gradients formed in the forward pass chunk by chunk), sampled softmax (log-Q corrected, its gradients
formed in the forward pass too) and BCE."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from liverec.models.sasrec.config import SASRecConfig

#: logits per chunk of the full-softmax loss (2M: 8 MB in float32). One ``[positions, n_items]`` matrix
#: per batch is a large fresh allocation, page-faulted in on every step; chunks of this size are reused
#: from the allocator and make a step markedly faster (docs/results.md, "Epoch speed")
SOFTMAX_CHUNK_LOGITS = 1 << 21


class SeenItems(NamedTuple):
    """The items each training position has seen, without a ``[positions, seq_len]`` copy per position.

    Position ``i`` is column ``column[i]`` of row ``row[i]`` of ``sequences`` ``[batch, seq_len]``
    (network rows, left-padded with 0): it has seen that row's items at columns ``<= column[i]``.
    """

    sequences: torch.Tensor
    row: torch.Tensor
    column: torch.Tensor

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """``[stop - start, seq_len]``: positions ``start:stop``'s seen items (network rows), 0 after them."""
        seen = self.sequences[self.row[start:stop]]
        later = torch.arange(seen.shape[1], device=seen.device)[None, :] > self.column[start:stop, None]
        return seen.masked_fill(later, 0)


class _SoftmaxWindowLoss(torch.autograd.Function):
    """The full-softmax window loss with its gradients computed in the forward pass, chunk by chunk.

    Inputs: ``hidden`` ``[n, dim]``, ``items`` ``[n_items, dim]``, ``future`` ``[n, k]`` network rows of
    each position's targets (0 = none; column 0 is always an item), ``seen`` (:class:`SeenItems` or
    None) and the logits dtype. Returns the mean over positions of the mean cross-entropy of each
    position's targets, seen items out of every denominator but each term's own target (a repeat).

    The loss is the last node of the graph, so its gradients can be formed while each chunk's logits
    are at hand: one ``[rows, n_items + 1]`` buffer per chunk becomes the logits, then, in place, the
    masked exponentials, then the gradient of the logits; autograd's version makes a masked copy, a
    log-sum-exp and their backward passes, a large share of an epoch (docs/results.md). Column 0 of the
    buffer stands for the padding row, so the seen items (network rows, 0 after a position's prefix)
    are scattered as ``-inf`` straight into it, with no boolean mask. ``backward`` scales the stored
    gradients by the incoming one (a distributed rank's loss weight).

    Per chunk, with ``m`` a row's largest unmasked logit or target logit, ``S = Σ_unseen exp(l - m)`` and,
    for term ``j`` with target ``t`` and weight ``w_j`` (``1 / (n · targets of the row)``),
    ``Z_j = S + [t seen] exp(l_t - m)``: the loss adds ``w_j (log Z_j + m - l_t)``; the gradient of an
    unseen logit is ``exp(l - m) Σ_j w_j / Z_j``, and each target's gets ``w_j ([t seen] exp(l_t - m) / Z_j - 1)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        future: torch.Tensor,
        seen: SeenItems | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        n, dim = hidden.shape
        table = torch.cat([items.new_zeros(1, dim), items]).to(dtype)  # row 0: padding
        inputs = hidden.to(dtype)
        exists = future > 0
        weights = exists / (exists.sum(1, keepdim=True) * max(n, 1))  # [n, k] float32
        grad_hidden = torch.empty(n, dim, dtype=torch.float32)
        grad_table = torch.zeros(len(table), dim, dtype=torch.float32)
        rows = max(1, SOFTMAX_CHUNK_LOGITS // len(table))
        # one logits buffer for every chunk, written by the matmul itself: a fresh [rows, n_items + 1]
        # result per chunk costs the allocation and its page faults again (about a third of the
        # matmul at 12k items; docs/results.md, "Amazon Beauty")
        buffer = torch.empty(min(rows, n), len(table), dtype=dtype)
        total = torch.zeros((), dtype=torch.float64)
        minus_inf = float("-inf")
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            targets, weight = future[start:stop], weights[start:stop]
            logits = torch.mm(inputs[start:stop], table.T, out=buffer[: stop - start])  # [rows, n_items + 1]
            target_logits = logits.gather(1, targets).float().masked_fill(~exists[start:stop], minus_inf)
            repeat = torch.zeros_like(targets, dtype=torch.bool)  # a target among the seen items
            if seen is not None:
                logits.scatter_(1, seen.rows(start, stop), minus_inf)
                repeat = (logits.gather(1, targets) == minus_inf) & exists[start:stop]
            logits[:, 0] = minus_inf
            peak = torch.maximum(logits.amax(1).float(), target_logits.amax(1))[:, None]  # [rows, 1]
            exps = logits.sub_(peak.to(dtype)).exp_()  # 0 at seen items and padding
            own = (target_logits - peak).exp()  # [rows, k], 0 where no target
            normaliser = exps.sum(1, keepdim=True, dtype=torch.float32) + torch.where(repeat, own, 0.0)
            terms = normaliser.log() + peak - target_logits.masked_fill(weight == 0, 0.0)
            total += (terms * weight).sum(dtype=torch.float64)
            grad = exps.mul_((weight / normaliser).sum(1, keepdim=True).to(dtype))
            target_grad = torch.where(repeat, own / normaliser, 0.0) - 1.0
            grad.scatter_add_(1, targets, (weight * target_grad).to(dtype))
            if dtype == torch.float32:
                torch.mm(grad, table, out=grad_hidden[start:stop])
            else:  # the bfloat16 product, cast into the float32 gradient
                grad_hidden[start:stop] = grad @ table
            grad_table.addmm_(grad.T.float() if dtype != torch.float32 else grad.T, hidden[start:stop])
        ctx.save_for_backward(grad_hidden, grad_table[1:])
        return total.float()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_output, grad_items * grad_output, None, None, None


def loss_context(
    config: SASRecConfig, batch: torch.Tensor, tied: torch.Tensor | None = None
) -> tuple[SeenItems | None, torch.Tensor | None]:
    """What ``loss_exclude_seen`` / ``future_window`` add to a batch ``[batch, width]`` (inputs and
    targets shifted by one), at the non-padding input positions in row-major order: the items
    seen up to each position (or None), and ``[n, future_window]`` network rows of the next items
    (0 past a row's end; None for the plain next-item loss). ``tied`` ``[batch, width]``: whether
    each item has the timestamp of the item before it; given, an item after the next is a target
    only while every item from the next one to it is tied in time to the one before (``window_gap_s``)."""
    window = config.window
    if not config.excludes_seen and window == 1:
        return None, None
    inputs = batch[:, :-1]
    is_item = inputs > 0
    seen = None
    if config.excludes_seen:
        row, column = is_item.nonzero(as_tuple=True)
        seen = SeenItems(inputs, row, column)
    future = None
    if window > 1:
        k, width = window, inputs.shape[1]
        ahead = F.pad(batch, (0, k - 1))  # [batch, width + k - 1]
        columns = [ahead[:, j : j + width] for j in range(1, k + 1)]
        if tied is not None:
            ahead_tied = F.pad(tied, (0, k - 1))
            together = torch.ones_like(is_item)
            for j in range(2, k + 1):  # target j counts while items 1..j after the position are tied
                together = together & ahead_tied[:, j : j + width]
                columns[j - 1] = columns[j - 1] * together
        future = torch.stack(columns, dim=-1)[is_item]
    return seen, future


#: catalogues from this many items draw negatives in sorted key order (:meth:`NegativeSampling.draw`)
_SORTED_DRAW_ITEMS = 1 << 16


class NegativeSampling:
    """The sampled softmax's negative distribution over ``[n_items]`` items, from its log-probabilities.

    Made once per distribution (a fit, an update), not per step: at a million items, exponentiating,
    normalising and summing up the distribution for every draw, as ``rng.choice(p=...)`` does, cost
    more than the step's network (docs/results.md, "Online updates at a million items"). :meth:`draw`
    gives the same items as ``rng.choice(n_items, size, p=...)`` from the same generator state.
    """

    def __init__(self, log_q: np.ndarray) -> None:
        #: ``[n_items]`` float64 log-probabilities
        self.log_q = log_q
        #: ``[n_items]`` the same as a float32 tensor (the logit correction)
        self.log_q_tensor = torch.from_numpy(log_q).to(torch.float32)
        probabilities = np.exp(log_q)
        cumulative = (probabilities / probabilities.sum()).cumsum()
        self._cumulative = cumulative / cumulative[-1] if len(cumulative) else cumulative

    def __len__(self) -> int:
        return len(self.log_q)

    def draw(self, rng: np.random.Generator, n_negatives: int) -> np.ndarray:
        """``[min(n_negatives, n_items)]`` items drawn with replacement."""
        size = min(n_negatives, len(self.log_q))
        keys = rng.random(size)
        if len(self._cumulative) < _SORTED_DRAW_ITEMS:
            return self._cumulative.searchsorted(keys, side="right").astype(np.int64)
        # in key order each binary search starts where the one before ended, so the searches share their path
        # through the catalogue-sized array (2,048 draws over 1M items: 0.57 -> 0.33 ms); the same items back in
        # the order drawn
        order = np.argsort(keys)
        items = np.empty(size, dtype=np.int64)
        items[order] = self._cumulative.searchsorted(keys[order], side="right")
        return items


def sequence_loss(
    config: SASRecConfig,
    sampling: NegativeSampling,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    rng: np.random.Generator,
    items: torch.Tensor,
    seen: SeenItems | None = None,
    future: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss ``config.loss`` of a batch's positions.

    ``sampling``: the ``sampled-softmax``'s negative distribution and correction; ``hidden``: ``[n, dim]``
    at non-padding positions; ``targets``: ``[n]`` network rows of the next items; ``rng``: where
    negatives are drawn from; ``items``: ``[n_items, dim]`` the output item table; ``seen`` / ``future``:
    see :func:`loss_context` (full softmax only)."""
    if config.loss == "softmax":
        dtype = torch.bfloat16 if config.logits_dtype == "bfloat16" else hidden.dtype
        window = targets[:, None] if future is None else future
        loss: torch.Tensor = _SoftmaxWindowLoss.apply(hidden, items, window, seen, dtype)
        return loss
    if config.loss == "sampled-softmax":
        negatives = torch.from_numpy(sampling.draw(rng, config.n_negatives))
        return sampled_softmax_loss(sampling.log_q_tensor, hidden, targets, negatives, items)
    if config.loss == "bce":
        return _bce_loss(hidden, targets, rng, items)
    raise ValueError(f"loss: {config.loss!r} is chosen per catalogue; resolve it with SASRecConfig.training_loss first")


def sampled_softmax_loss(
    log_q: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    items: torch.Tensor,
    copies: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over each target and the ``negatives`` ``[n_negatives]`` shared by the batch (rows of
    ``items`` ``[n_items, dim]``), every logit less its log-probability ``log_q`` ``[n_items]`` (log-Q
    correction), a negative that is the position's own target left out; ``targets``: ``[n]`` network rows
    (row ``r`` is ``items[r - 1]``). The mean over positions, its gradients formed in the forward pass
    (:class:`_SampledSoftmaxLoss`).

    The negatives are drawn with replacement, so an item can come up several times (on Amazon Beauty 2,048
    draws name about 1,690 items; over a million long-tailed items about 1,380). Its ``c`` copies add
    ``c · exp(l - log Q)`` to each denominator, which one column with the logit ``l - log Q + log c`` adds too:
    the loss is scored on the distinct items alone, the same function of the weights with fewer columns in its
    three products. ``copies``: given, ``negatives`` are already distinct and sorted, and drawn this many times
    each."""
    if copies is None:
        negatives, copies = torch.unique(negatives, return_counts=True)  # sorted
    loss: torch.Tensor = _SampledSoftmaxLoss.apply(
        hidden, items, log_q.to(hidden.dtype), targets - 1, negatives, copies.to(hidden.dtype).log_()
    )
    return loss


_MINUS_INFINITY = torch.tensor(float("-inf"))


def _matches(rows: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(position, column)`` pairs where ``negatives[column] == rows[position]``, for ``negatives`` sorted and
    without repeats (:func:`sampled_softmax_loss` counts its draws' copies): the True entries of the
    ``[len(rows), len(negatives)]`` equality matrix, found by binary search rather than by forming the matrix (the
    loss's forward pass at Beauty's shapes 0.6–1.0 ms sooner at two threads, docs/results.md, "Session 27")."""
    if len(negatives) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    columns = torch.searchsorted(negatives, rows).clamp_(max=len(negatives) - 1)
    positions = (negatives.index_select(0, columns) == rows).nonzero().squeeze(1)
    return positions, columns.index_select(0, positions)


class _SampledSoftmaxLoss(torch.autograd.Function):
    """:func:`sampled_softmax_loss` with its gradients computed in the forward pass, as
    :class:`_SoftmaxWindowLoss` does for the full softmax.

    Autograd's version builds the ``[n, n_negatives]`` logits, a masked copy, their concatenation with the
    positive logits, a log-softmax and the backward pass of each (about a fifth of a Beauty training step,
    docs/results.md). Here one ``[n, n_negatives]`` buffer becomes the logits, then in place the
    exponentials, then the gradient of the logits. With ``m`` a row's largest logit (positive included),
    ``Z = exp(l⁺ - m) + Σ exp(l⁻ - m)``: the loss is ``mean(log Z + m - l⁺)``, a negative logit's gradient
    ``exp(l⁻ - m) / (n Z)`` and the positive one's ``(exp(l⁺ - m) / Z - 1) / n``. ``backward`` scales the
    stored gradients by the incoming one (a distributed rank's loss weight). ``negatives``: the distinct items
    drawn, sorted; ``log_copies``: the log of how many times each was drawn, added to its logit."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        log_q: torch.Tensor,
        rows: torch.Tensor,
        negatives: torch.Tensor,
        log_copies: torch.Tensor,
    ) -> torch.Tensor:
        n = len(hidden)
        # index_select: a tensor index (items[rows]) costs about five times as much per row
        positive_items, negative_items = items.index_select(0, rows), items.index_select(0, negatives)
        positive = torch.einsum("nd,nd->n", hidden, positive_items) - log_q.index_select(0, rows)
        correction = log_q.index_select(0, negatives).sub_(log_copies)[None, :]
        logits = torch.addmm(correction, hidden, negative_items.T, beta=-1.0)  # less log Q, plus log copies
        logits.index_put_(_matches(rows, negatives), _MINUS_INFINITY)  # a target is not its negative
        top = torch.maximum(logits.amax(dim=1), positive)
        exp_positive = (positive - top).exp_()
        logits.sub_(top[:, None]).exp_()
        total = logits.sum(dim=1).add_(exp_positive)
        loss = (total.log() + top - positive).mean()
        scale = total.reciprocal_().mul_(1.0 / n)
        gradient = logits.mul_(scale[:, None])  # d loss / d negative logits, in the logits' buffer
        d_positive = exp_positive.mul_(scale).sub_(1.0 / n)
        weighted_positive = hidden * d_positive[:, None]
        grad_hidden = torch.addmm(positive_items.mul_(d_positive[:, None]), gradient, negative_items)
        grad_items = torch.zeros_like(items)
        grad_items.index_add_(0, negatives, gradient.T @ hidden)
        grad_items.index_add_(0, rows, weighted_positive)
        ctx.save_for_backward(grad_hidden, grad_items)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad, grad_items * grad, None, None, None, None


def _bce_loss(
    hidden: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator, items: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of each target against one uniformly drawn negative (the paper's loss)."""
    negatives_t = torch.from_numpy(rng.integers(0, items.shape[0], size=len(targets)))
    positive = (hidden * items[targets - 1]).sum(-1)
    negative = (hidden * items[negatives_t]).sum(-1)
    positive_loss = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive))
    return positive_loss + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))
