"""Ranking, sampled-ranking and beyond-accuracy metrics, vectorised over users.

Conventions (binary relevance; ``R`` = a user's held-out target items, ``k`` = cut-off):

- ``hr@k``        1 if any target is in the top-k
- ``recall@k``    hits / |R|
- ``precision@k`` hits / k
- ``ndcg@k``      DCG / ideal DCG, discount 1/log2(rank+1), ideal over min(|R|, k) hits
- ``mrr@k``       1 / rank of the first hit (0 when none)
- ``map@k``       sum over hit ranks r of precision@r, divided by |R| (as ``ranx`` and ``trec_eval``)

Each is averaged over evaluated users (users with at least one target). Ranked lists are
``[n_users, k]`` arrays of internal item ids padded with -1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from liverec.data.interactions import Histories

RANKING_METRICS = ("hr", "recall", "precision", "ndcg", "mrr", "map")


def hit_matrix(ranked: np.ndarray, targets: Histories) -> np.ndarray:
    """Bool ``[n_users, k]``: whether ``ranked[u, j]`` is one of row u's targets."""
    n_rows, _k = ranked.shape
    if len(targets) != n_rows:
        raise ValueError(f"targets: expected {n_rows} rows like ranked, got {len(targets)}")
    width = int(max(ranked.max(initial=-1), targets.items.max(initial=-1))) + 2
    target_rows = np.repeat(np.arange(n_rows, dtype=np.int64), targets.lengths())
    target_keys = target_rows * width + targets.items
    ranked_keys = np.arange(n_rows, dtype=np.int64)[:, None] * width + ranked
    hits = np.isin(ranked_keys, target_keys)
    return hits & (ranked >= 0)


def per_user_ranking_metrics(ranked: np.ndarray, targets: Histories, k: int) -> dict[str, np.ndarray]:
    """Per-user values ``[n_users]`` of every metric in :data:`RANKING_METRICS` at cut-off ``k``."""
    if k < 1 or k > ranked.shape[1]:
        raise ValueError(f"k: expected 1..{ranked.shape[1]} (the ranked list length), got {k}")
    n_targets = targets.lengths().astype(np.float64)
    if (n_targets == 0).any():
        raise ValueError("targets: every evaluated user needs at least one target item")
    hits = hit_matrix(ranked[:, :k], targets).astype(np.float64)
    n_hits = hits.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(n_targets, k).astype(np.int64) - 1]
    first_hit = hits.argmax(axis=1)
    mrr = np.zeros(len(hits))
    np.divide(1.0, first_hit + 1.0, out=mrr, where=n_hits > 0)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    average_precision = (precision_at * hits).sum(axis=1) / n_targets
    return {
        "hr": (n_hits > 0).astype(np.float64),
        "recall": n_hits / n_targets,
        "precision": n_hits / k,
        "ndcg": dcg / ideal,
        "mrr": mrr,
        "map": average_precision,
    }


def ranking_metrics(ranked: np.ndarray, targets: Histories, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """Mean of each ranking metric over users, keyed like ``ndcg@10``."""
    out: dict[str, float] = {}
    for k in ks:
        for name, values in per_user_ranking_metrics(ranked, targets, k).items():
            out[f"{name}@{k}"] = float(values.mean()) if len(values) else 0.0
    return out


# ---------------------------------------------------------------------------------- one target per row
def single_target_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of row r's one target ``target[r]`` in ``scores[r]`` (the number of items scoring higher).

    Excluded items must already be -inf in ``scores``. A target outside the scored columns (an item the
    model has never seen, or a negative id) gets rank -1: a miss at every cut-off.
    """
    target = np.asarray(target, dtype=np.int64)
    known = (target >= 0) & (target < scores.shape[1])
    target_scores = scores[np.arange(len(target)), np.where(known, target, 0)]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    return np.where(known, ranks, -1)


def ndcg_at_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k ``[n]`` of one relevant item at 0-based ``ranks`` (ideal DCG is 1); a negative rank is a miss."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = (ranks >= 0) & (ranks < k)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0.0) + 2.0), 0.0)


def single_target_ndcg(scores: np.ndarray, target: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k when row r has one target ``target[r]`` (see :func:`single_target_ranks`).

    Models use it for early stopping and weight search; the online gate and the sampled protocol use the
    same two functions it is made of.
    """
    return float(ndcg_at_ranks(single_target_ranks(scores, target), k).mean()) if len(target) else 0.0


def sampled_metrics(target_ranks: np.ndarray, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """HR@k and NDCG@k of the SASRec paper's sampled protocol from 0-based ranks among target + negatives."""
    ranks = np.asarray(target_ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = float((ranks < k).mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(ndcg_at_ranks(ranks, k).mean()) if len(ranks) else 0.0
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean()) if len(ranks) else 0.0
    return out


# ---------------------------------------------------------------------------------- beyond accuracy
def gini(values: np.ndarray) -> float:
    """Gini index of non-negative ``values`` (0 = perfectly even, → 1 = all mass on one entry)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float(((2 * index - n - 1) * x).sum() / (n * x.sum()))


def beyond_accuracy_metrics(
    ranked: np.ndarray,
    item_popularity: np.ndarray,
    n_train_users: int,
    k: int = 10,
    head_fraction: float = 0.2,
) -> dict[str, float]:
    """Catalogue and popularity-bias metrics of the top-``k`` lists ``ranked`` ``[n_users, >=k]``.

    - ``coverage@k``: share of the catalogue recommended to at least one user.
    - ``gini@k``: Gini index of how often each catalogue item is recommended (exposure inequality).
    - ``arp@k``: average recommended popularity (training events per recommended item).
    - ``long_tail@k``: share of recommendations outside the head, the ``head_fraction`` most popular items.
    - ``novelty@k``: mean self-information ``-log2(p_i)`` of recommended items, with
      ``p_i = (users who interacted with i + 1) / (n_train_users + 1)``; ``item_popularity`` counts users
      when interactions are one per (user, item), as in MovieLens.
    """
    top = ranked[:, :k]
    valid = top >= 0
    items = top[valid]
    n_items = len(item_popularity)
    if len(items) == 0:
        return {f"{m}@{k}": 0.0 for m in ("coverage", "gini", "arp", "long_tail", "novelty")}
    exposure = np.bincount(items, minlength=n_items)
    popularity = np.asarray(item_popularity, dtype=np.float64)
    n_head = int(np.ceil(head_fraction * n_items))
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-popularity, kind="stable")[:n_head]] = True
    probability = np.minimum(popularity + 1.0, n_train_users + 1.0) / (n_train_users + 1.0)
    return {
        f"coverage@{k}": float((exposure > 0).sum() / n_items),
        f"gini@{k}": gini(exposure),
        f"arp@{k}": float(popularity[items].mean()),
        f"long_tail@{k}": float((~head[items]).mean()),
        f"novelty@{k}": float((-np.log2(probability[items])).mean()),
    }


# ---------------------------------------------------------------------------------- calibration
#: Steck's smoothing of the list's category distribution: q̃ = (1 - α) q + α p keeps KL(p || q̃) finite.
CALIBRATION_ALPHA = 0.01


def category_weights(categories: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """``p(g | i)`` ``[n_items, n_categories]``: each item's categories share its unit mass equally.

    ``categories`` is the binary item -> category matrix (e.g. :meth:`ItemMetadata.genre_matrix`); an item
    with no category gets an all-zero row (it adds nothing to any category distribution).
    """
    matrix = sp.csr_matrix(categories, dtype=np.float64)
    matrix.data[:] = 1.0
    counts = np.diff(matrix.indptr)
    matrix.data /= np.repeat(np.maximum(counts, 1), counts)
    return matrix


def category_distributions(lists: sp.spmatrix, weights: sp.csr_matrix) -> np.ndarray:
    """Rows of ``lists`` ``[n_rows, n_items]`` (item counts) as category distributions ``[n_rows, n_categories]``.

    Row r is ``sum_i lists[r, i] p(g | i)`` normalised to sum 1 (Steck's ``p(g|u)`` for a history, ``q(g|u)``
    for a list, each item weighted by how often it occurs); a row with no categorised item is all zero.
    """
    mass = np.asarray((sp.csr_matrix(lists, dtype=np.float64) @ weights).todense())
    totals = mass.sum(axis=1, keepdims=True)
    return np.divide(mass, totals, out=np.zeros_like(mass), where=totals > 0)


def calibration_kl(p: np.ndarray, q: np.ndarray, alpha: float = CALIBRATION_ALPHA) -> np.ndarray:
    """Steck's miscalibration ``KL(p || q̃) = sum_g p(g) log(p(g) / q̃(g))`` per row, natural log, with
    ``q̃ = (1 - alpha) q + alpha p`` (RecSys 2018, eq. 5; alpha = 0.01 there and here).

    ``p``, ``q``: ``[..., n_categories]`` distributions (the history's and the list's; broadcast). Terms with
    ``p(g) = 0`` are 0; since ``q̃(g) >= alpha p(g)``, each row is at most ``log(1 / alpha)`` (4.6 for 0.01).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in (0, 1], got {alpha!r}")
    p, q = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    smoothed = (1.0 - alpha) * q + alpha * p
    ratio = np.divide(p, smoothed, out=np.ones_like(p, dtype=np.float64), where=p > 0)
    return (np.where(p > 0, p, 0.0) * np.log(ratio)).sum(axis=-1)
