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
from liverec.rerank import Reranker, rerank_lists

#: How many of the full ranking's top items a re-ranker chooses from (``liverec evaluate --rerank``).
RERANK_CANDIDATES = 100


@dataclass
class RankingResult:
    """Everything one evaluation produced; ``ranked``/``scores`` are ``[n_users, max(ks)]``.

    With a re-ranker, ``ranked``/``scores``/``metrics`` are the re-ranked lists' and ``baseline_ranked`` /
    ``baseline_metrics`` the model's own top-``max(ks)`` (the first items of the same candidates).
    """

    metrics: dict[str, float]
    sampled: dict[str, float] | None
    ranked: np.ndarray
    scores: np.ndarray
    users: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] | None = None
    baseline_ranked: np.ndarray | None = None


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
    reranker: Reranker | None = None,
    n_candidates: int = RERANK_CANDIDATES,
) -> RankingResult:
    """Rank the whole catalogue for each evaluated user of ``split`` with an already fitted ``model``.

    ``reranker``: the top ``max(n_candidates, max(ks))`` of that full ranking (seen items excluded as above)
    are the candidates it picks the ``max(ks)`` shown items from, per user (given the user's history).
    """
    if reranker is not None and sampled_negatives:
        raise ValueError("sampled_negatives: the sampled protocol ranks model scores; it has no re-ranked form")
    started = time.perf_counter()
    k_max = max(ks)
    depth = max(k_max, n_candidates) if reranker is not None else k_max
    ranked, top_scores = full_ranking(model, split.history, depth, exclude_seen, progress)
    item_users = item_interactions(split)
    baseline_metrics = baseline_ranked = None
    if reranker is not None:
        baseline_ranked = ranked[:, :k_max]
        baseline_metrics = _list_metrics(baseline_ranked, split, ks, item_users)
        ranked, top_scores = rerank_lists(reranker, ranked, top_scores, split.history, k_max)
    metrics = _list_metrics(ranked, split, ks, item_users)
    seconds = {"ranking": time.perf_counter() - started}
    sampled = None
    if sampled_negatives:
        started = time.perf_counter()
        ranks = sampled_target_ranks(model, split.history, split.targets, sampled_negatives, seed, progress)
        sampled = sampled_metrics(ranks, ks)
        seconds["sampled"] = time.perf_counter() - started
    return RankingResult(
        metrics, sampled, ranked, top_scores, split.history.users, seconds, baseline_metrics, baseline_ranked
    )


def full_ranking(
    model: Recommender, history: Histories, k: int, exclude_seen: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ids and scores ``[len(history), k]`` over the whole catalogue, in user batches."""
    n = len(history)
    ranked = np.full((n, k), -1, dtype=np.int64)
    top_scores = np.full((n, k), -np.inf, dtype=np.float32)
    step = _batch_size(model.n_items)
    for start in _batches(n, step, "ranking", progress):
        rows = np.arange(start, min(n, start + step))
        ids, scores = model.recommend(history.select(rows), k, exclude_seen=exclude_seen)
        ranked[rows], top_scores[rows] = ids, scores
    return ranked, top_scores


def item_interactions(split: RankingSplit) -> np.ndarray:
    """``[n_items]`` training users per item (distinct user-item pairs: the interactions of MovieLens), the
    popularity every bias metric counts."""
    return np.asarray(split.train.to_csr().sum(axis=0)).ravel()


def _list_metrics(
    ranked: np.ndarray, split: RankingSplit, ks: tuple[int, ...], item_users: np.ndarray
) -> dict[str, float]:
    metrics = ranking_metrics(ranked, split.targets, ks)
    for k in ks:
        metrics.update(beyond_accuracy_metrics(ranked, item_users, split.train.n_users, k))
    return metrics


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
