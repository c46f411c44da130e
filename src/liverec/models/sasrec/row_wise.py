"""AdamW on the rows of a large item table that a step uses, and the closed form of the steps it skips.

A sampled-softmax step touches a few thousand rows of a table that may have a million; a dense AdamW step
still reads and writes every row, its gradient (zero outside the batch) and both moments. :func:`adamw_rows`
steps the used rows alone, with AdamW's exact arithmetic. Left at that (a "lazy" Adam, what online updates do),
a row stops moving when it leaves the batch, while the dense step keeps moving it on its momentum for the next
tens of steps: with ``betas=(0.9, 0.98)`` a row used once moves about eleven times as far under the dense step,
and a fit of rows used once an epoch (the long tail) learns far less (docs/results.md, "A row-wise fit").

:class:`SkippedSteps` restores the dense trajectory: it remembers the step at which each row was last stepped,
and when the row is next used (or when every row is brought up to date, :meth:`SkippedSteps.flush`), it applies
the ``k`` zero-gradient steps the row skipped in closed form. With a zero gradient the moments only decay,
``m_j = β1^j m`` and ``v_j = β2^j v``, so the skipped displacement is a geometric sum,

    Σ_{j=1..k} lr · β1^j m / sqrt(β2^j v) = lr · m / sqrt(v) · r (1 - r^k) / (1 - r),   r = β1 / sqrt(β2),

and the weights' moving average (:class:`~liverec.models.sasrec.model.WeightAverage`, decay ``d``) over those
steps has one too (:func:`skipped_steps`). Approximations, all small after the first few dozen steps: the
learning rate, the bias corrections and the average's decay of the current step stand for those of the skipped
steps, and ``eps`` is applied to the moment at the start of the gap. Decoupled weight decay is part of the closed
form (:func:`skipped_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: rows brought up to date per block in :meth:`SkippedSteps.flush` (bounds its temporaries)
FLUSH_ROWS = 65_536


def write_rows(table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``table[rows] = values`` for distinct ``rows`` (the rows a step used, ``torch.unique``'s output).

    On the CPU through NumPy's fancy assignment, which shares the tensors' memory: writing 3,700 rows of 64 floats
    into a table of 1.25M rows took 82 µs against 189 µs for ``index_copy_`` (and ``index_put_``), three writes
    per row-wise step (docs/results.md, "Session 25"). The same values land either way.
    """
    if table.device.type != "cpu" or values.device.type != "cpu":
        table.index_copy_(0, rows, values)
        return
    table.detach().numpy()[rows.numpy()] = values.detach().numpy()


@dataclass(frozen=True)
class AdamWSettings:
    """One AdamW parameter group's settings at the current step (``step``: the table's step count, from 1)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    step: int

    def bias_corrections(self) -> tuple[float, float]:
        """``1 - β1^step`` and ``sqrt(1 - β2^step)``."""
        return 1 - self.beta1**self.step, math.sqrt(1 - self.beta2**self.step)


def adamw_rows(
    param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, grad: torch.Tensor, settings: AdamWSettings
) -> None:
    """One AdamW step, in place, on gathered rows ``param`` and their moments given their gradient ``grad``:
    the arithmetic of ``torch.optim.AdamW`` (single-tensor) on each row."""
    s = settings
    exp_avg.lerp_(grad, 1 - s.beta1)
    exp_avg_sq.mul_(s.beta2).addcmul_(grad, grad, value=1 - s.beta2)
    if s.weight_decay != 0:
        param.mul_(1 - s.lr * s.weight_decay)
    bias1, bias2 = s.bias_corrections()
    denominator = (exp_avg_sq.sqrt() / bias2).add_(s.eps)
    param.addcdiv_(exp_avg, denominator, value=-s.lr / bias1)


def skipped_steps(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    skipped: torch.Tensor,
    settings: AdamWSettings,
    average: torch.Tensor | None = None,
    average_decay: float = 0.0,
) -> None:
    """Apply, in place, ``skipped[i]`` zero-gradient AdamW steps to row ``i`` of ``param`` ``[n, dim]`` and its
    moments (closed form, see the module docstring), and move ``average`` (the rows' moving average, decay
    ``average_decay`` per step), if given, as those steps would have. A row with ``skipped`` 0 is unchanged.

    With ``w = 1 - lr · weight_decay``, one step's move ``u`` at the gap's start and ``r = β1 / sqrt(β2)``, the
    row after ``j`` skipped steps is ``p_j = w^j p_0 - u · q / (1 - q) · (w^j - r^j)``, ``q = r / w``, and the
    average after ``k`` is ``d^k a_0 + (1 - d) Σ_j d^(k-j) p_j``, whose sums are :func:`_decayed_sum`'s."""
    s = settings
    k = skipped.to(torch.float64).unsqueeze(1)  # [n, 1]
    r = s.beta1 / math.sqrt(s.beta2)
    w = 1.0 - s.lr * s.weight_decay
    q = r / w
    if abs(1.0 - q) < 1e-9:
        raise ValueError(f"skipped_steps: β1 / sqrt(β2) equals 1 - lr · weight_decay ({w}); no closed form used here")
    bias1, bias2 = s.bias_corrections()
    move = (exp_avg / bias1) / ((exp_avg_sq.sqrt() / bias2).add_(s.eps)) * s.lr  # one step's displacement u
    w_k, r_k = w**k, r**k
    spread = q / (1 - q)
    if average is not None:
        d = average_decay
        to_weights = (1 - d) * _decayed_sum(w, d, k)  # Σ_j (1 - d) d^(k-j) w^j
        pulled = (1 - d) * spread * (_decayed_sum(w, d, k) - _decayed_sum(r, d, k))
        average.mul_((d**k).to(param.dtype)).add_(param * to_weights.to(param.dtype))
        average.sub_(move * pulled.to(param.dtype))
    param.mul_(w_k.to(param.dtype)).sub_(move * (spread * (w_k - r_k)).to(param.dtype))
    exp_avg.mul_((s.beta1**k).to(exp_avg.dtype))
    exp_avg_sq.mul_((s.beta2**k).to(exp_avg_sq.dtype))


def _decayed_sum(x: float, d: float, k: torch.Tensor) -> torch.Tensor:
    """``Σ_{j=1..k} d^(k-j) x^j`` for each ``k``: ``x (d^k - x^k) / (d - x)``, or ``k x^k`` where ``x = d``."""
    if abs(d - x) < 1e-12:
        return k * x**k
    return x * (d**k - x**k) / (d - x)


class SkippedSteps:
    """The step at which each row of an item table was last stepped, for a fit whose steps touch only the rows
    they use (:func:`adamw_rows`): :meth:`skipped` says how many steps a row missed since, :meth:`mark` records
    a step; :meth:`flush` brings every row up to the current step (before the weights are judged or kept)."""

    def __init__(self, n_rows: int) -> None:
        self.last = torch.zeros(n_rows, dtype=torch.int64)  # 0: never stepped (zero moments, nothing to catch up)

    def skipped(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """Steps before ``step`` that ``rows`` missed (0 for a row never stepped)."""
        last = self.last.index_select(0, rows)
        return torch.where(last > 0, step - 1 - last, 0)

    def mark(self, rows: torch.Tensor, step: int) -> None:
        self.last[rows] = step

    def flush(
        self,
        weight: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        settings: AdamWSettings,
        average: torch.Tensor | None = None,
        average_decay: float = 0.0,
    ) -> None:
        """Apply to every stepped row of ``weight`` (and its moments, and ``average``) the steps up to and including
        ``settings.step`` it missed, in blocks of :data:`FLUSH_ROWS` rows."""
        stale = torch.nonzero((self.last > 0) & (self.last < settings.step)).squeeze(1)
        with torch.no_grad():
            for start in range(0, len(stale), FLUSH_ROWS):
                rows = stale[start : start + FLUSH_ROWS]
                param, m, v = (t.index_select(0, rows) for t in (weight, exp_avg, exp_avg_sq))
                mean = None if average is None else average.index_select(0, rows)
                missed = settings.step - self.last.index_select(0, rows)
                skipped_steps(param, m, v, missed, settings, mean, average_decay)
                write_rows(weight, rows, param)
                write_rows(exp_avg, rows, m)
                write_rows(exp_avg_sq, rows, v)
                if average is not None and mean is not None:
                    write_rows(average, rows, mean)
        self.last[stale] = settings.step
