"""Exact top-``k`` over a full score vector with an allowed-item mask (the serving path of score-vector models).

Every filter the engine applies (seen items, unavailable items, category rules) arrives here as one boolean
``allowed`` mask, so this module is the single place that enforces the result rules: no disallowed item is
ever returned, exactly ``k`` items come back when ``k`` are eligible, the tail is padded with id -1 and
score -inf otherwise, and ties go to the lower item id (the rule of :func:`liverec.models.base.top_k`, which
does the final ordering here too).

Speed: ``np.argpartition`` over a large score vector costs about a whole request's budget on its own. So
the k-th best score is first bounded from below with a strided sample:
the k-th largest *eligible* sample value ``t`` is a value of at least ``k`` eligible items, hence the true
k-th best is ``>= t`` and every item of the true top-k (boundary ties included) scores ``>= t``. One
vectorised comparison keeps those few hundred candidates, and ``top_k`` orders them. The sample only decides
how many candidates survive, never whether the answer is right, so an unlucky sample (heavy ties, few
eligible items in it) costs time, not correctness; ``benchmarks/bench_retrieval.py`` measures the gain.
"""

from __future__ import annotations

import math

import numpy as np

from liverec.models.base import top_k

__all__ = ["top_k_allowed", "top_k_candidates"]


def top_k_allowed(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item ids (int64) and scores (float32), best first, among the allowed items.

    ``scores`` is ``[n]`` (one request) or ``[b, n]`` (a batch); results have shape ``[k]`` or ``[b, k]``.
    ``allowed`` is a boolean ``[n]`` mask shared by all rows, a ``[b, n]`` mask, or None (everything
    allowed; the scores are then not copied). Items scored -inf or NaN count as ineligible, as in
    :func:`liverec.models.base.top_k` (models mark excluded items with -inf).
    """
    if k < 1:
        raise ValueError(f"k: expected a positive integer, got {k}")
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores: expected shape [n] or [batch, n], got {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise TypeError(f"scores: expected real numbers, got dtype {scores.dtype}")
    # integer scores (counts) are compared as floats; float32/float64 pass through without a copy
    scores = np.asarray(scores, dtype=np.result_type(scores.dtype, np.float32))
    single = scores.ndim == 1
    rows = scores[None, :] if single else scores
    mask = None
    if allowed is not None:
        mask = np.asarray(allowed)
        if mask.dtype != np.bool_:
            raise TypeError(f"allowed: expected a boolean mask, got dtype {mask.dtype}")
        if mask.shape not in ((rows.shape[1],), scores.shape):
            raise ValueError(f"allowed: expected shape ({rows.shape[1]},) or {scores.shape}, got {mask.shape}")
        mask = mask[None, :] if mask.ndim == 1 else mask
    ids, top_scores = _top_k_rows(rows, k, mask)
    return (ids[0], top_scores[0]) if single else (ids, top_scores)


def top_k_candidates(candidate_ids: np.ndarray, candidate_scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of per-row candidate lists ``[b, c]`` (ids, scores), mapped back to item ids.

    Within a row the real candidates must be in ascending id order, so ``top_k``'s lower-column tie rule is
    the lower-id rule; padding entries (any id, score -inf) may sit anywhere and are never returned.
    """
    columns, top_scores = top_k(candidate_scores, k)
    ids = np.take_along_axis(candidate_ids, np.maximum(columns, 0), axis=1)
    return np.where(columns >= 0, ids, -1).astype(np.int64), top_scores


def _top_k_rows(scores: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_allowed` on ``[b, n]`` scores with a ``[1 | b, n]`` mask or None."""
    n_rows, n_cols = scores.shape
    # sample size ~4·sqrt(n·k) balances the O(sample) partition against the ~sqrt(n·k)/4 candidates it leaves
    step = n_cols // (4 * math.isqrt(n_cols * k)) if n_cols else 0
    if step < 2 or n_rows == 0:
        # small rows: masking a copy and selecting directly is cheaper than sampling
        eligible = ~np.isnan(scores) if allowed is None else allowed & ~np.isnan(scores)
        return top_k(np.where(eligible, scores, -np.inf), k)
    sample = scores[:, ::step]
    eligible = ~np.isnan(sample) if allowed is None else allowed[:, ::step] & ~np.isnan(sample)
    sample = np.where(eligible, sample, -np.inf)
    # the k-th largest eligible sample value per row (-inf when the sample holds fewer than k eligible items,
    # which keeps every eligible item as a candidate)
    threshold = np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k, None]
    candidates = scores >= threshold  # NaN compares False, so it never becomes a candidate
    if allowed is not None:
        candidates &= allowed
    # flat indices are row-major, so ids ascend within each row; 2-D np.nonzero is ~8x slower here
    rows, cols = np.divmod(np.flatnonzero(candidates), n_cols)
    counts = np.bincount(rows, minlength=n_rows)
    position = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    width = max(int(counts.max()), 1)
    candidate_ids = np.full((n_rows, width), -1, dtype=np.int64)
    candidate_scores = np.full((n_rows, width), -np.inf, dtype=scores.dtype)
    candidate_ids[rows, position] = cols
    candidate_scores[rows, position] = scores[rows, cols]
    return top_k_candidates(candidate_ids, candidate_scores, k)
