"""Offline evaluation protocols: full-catalogue ranking and the SASRec paper's sampled ranking.

Full ranking is the measure LiveRec reports: every catalogue item is scored, the user's
already-seen items are excluded (unless ``exclude_seen=False``), and the held-out targets are looked
for in the top-K. The sampled protocol (target + N uniform negatives the user never interacted with)
exists only to set LiveRec beside papers that use it; its numbers are always labelled "sampled".
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from liverec.data.interactions import Histories
from liverec.data.splits import RankingSplit
from liverec.evaluation.metrics import beyond_accuracy_metrics, ranking_metrics, sampled_metrics
from liverec.models.base import Recommender


@dataclass
class RankingResult:
    """Everything one evaluation produced; ``ranked``/``scores`` are ``[n_users, max(ks)]``."""

    metrics: dict[str, float]
    sampled: dict[str, float] | None
    ranked: np.ndarray
    scores: np.ndarray
    users: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def _batches(n: int, batch_size: int, label: str, progress: bool) -> tqdm:
    starts = range(0, n, batch_size)
    disable = not progress or not sys.stderr.isatty()
    return tqdm(starts, desc=label, unit="batch", disable=disable, leave=False)


def _batch_size(n_items: int) -> int:
    return max(1, min(4096, (1 << 23) // max(n_items, 1)))


def evaluate_ranking(
    model: Recommender,
    split: RankingSplit,
    ks: tuple[int, ...] = (10,),
    exclude_seen: bool = True,
    sampled_negatives: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RankingResult:
    """Rank the whole catalogue for each evaluated user of ``split`` with an already fitted ``model``."""
    started = time.perf_counter()
    k_max = max(ks)
    n = len(split.history)
    ranked = np.full((n, k_max), -1, dtype=np.int64)
    top_scores = np.full((n, k_max), -np.inf, dtype=np.float32)
    step = _batch_size(model.n_items)
    for start in _batches(n, step, "ranking", progress):
        rows = np.arange(start, min(n, start + step))
        ids, scores = model.recommend(split.history.select(rows), k_max, exclude_seen=exclude_seen)
        ranked[rows], top_scores[rows] = ids, scores
    metrics = ranking_metrics(ranked, split.targets, ks)
    item_users = np.asarray(split.train.to_csr().sum(axis=0)).ravel()
    for k in ks:
        metrics.update(beyond_accuracy_metrics(ranked, item_users, split.train.n_users, k))
    seconds = {"ranking": time.perf_counter() - started}
    sampled = None
    if sampled_negatives:
        started = time.perf_counter()
        ranks = sampled_target_ranks(model, split.history, split.targets, sampled_negatives, seed, progress)
        sampled = sampled_metrics(ranks, ks)
        seconds["sampled"] = time.perf_counter() - started
    return RankingResult(metrics, sampled, ranked, top_scores, split.history.users, seconds)


def sampled_target_ranks(
    model: Recommender,
    history: Histories,
    targets: Histories,
    n_negatives: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """0-based rank of each row's (first) target among itself and ``n_negatives`` sampled negatives.

    Negatives are drawn uniformly without replacement from the items the user never interacted with
    (neither in ``history`` nor among ``targets``), as in the SASRec paper. A negative scoring exactly
    like the target counts as above it when its item id is lower (the same tie rule as full ranking).
    """
    if (targets.lengths() < 1).any():
        raise ValueError("targets: every row needs a target item")
    n_items = model.n_items
    rng = np.random.default_rng(seed)
    n = len(history)
    ranks = np.empty(n, dtype=np.int64)
    first_target = targets.items[targets.indptr[:-1]]
    step = _batch_size(n_items)
    for start in _batches(n, step, "sampled", progress):
        rows = np.arange(start, min(n, start + step))
        batch = history.select(rows)
        seen = batch.to_csr(max(n_items, int(batch.items.max(initial=-1)) + 1))[:, :n_items].toarray() > 0
        seen |= targets.select(rows).to_csr(n_items).toarray() > 0
        n_free = (~seen).sum(axis=1)
        if (n_free < n_negatives).any():
            raise ValueError(
                f"sampled_negatives: {n_negatives} negatives requested but a user has only "
                f"{int(n_free.min())} unseen items"
            )
        keys = rng.random((len(rows), n_items))
        keys[seen] = np.inf
        negatives = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]
        scores = model.score(batch)
        target = first_target[rows]
        target_score = scores[np.arange(len(rows)), target][:, None]
        negative_score = np.take_along_axis(scores, negatives, axis=1)
        above = (negative_score > target_score) | ((negative_score == target_score) & (negatives < target[:, None]))
        ranks[rows] = above.sum(axis=1)
    return ranks
