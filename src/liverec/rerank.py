"""Re-ranking after retrieval: trade a little relevance for diversity, calibration or long-tail exposure.

A re-ranker takes one user's candidate list (item ids best first and the model's scores, *already filtered*:
seen and excluded items are not in it) and returns the ``k`` items to show, in order. It can only pick from the
candidates it is given, so every filter and exclusion applied before it still holds after it. Pure NumPy and
SciPy, no I/O: the offline evaluation (``liverec evaluate --rerank``) calls it on the top-N of a full ranking,
and serving can call the same code on its candidates.

One knob per re-ranker, the strength ``λ`` (:data:`RERANKERS`, by name):

* ``mmr`` (:class:`MMR`, λ in [0, 1]): maximal marginal relevance (Carbonell & Goldstein, 1998). Greedy: the
  next item maximises ``(1 - λ) ŝ(i) - λ max_{j chosen} sim(i, j)``. ``sim`` is the cosine of the model's item
  vectors when the catalogue has them (a model that ``provides_vectors``: SASRec), else the Jaccard index of the
  items' category sets (genres); :attr:`MMR.similarity` says which.
* ``calibration`` (:class:`Calibration`, λ in [0, 1]): Steck's calibrated recommendations (RecSys 2018). Greedy:
  the list ``S`` grows by the item maximising ``(1 - λ) sum_{i in S} π(i) - λ KL(p || q̃(S))`` where ``p`` is the
  category mix of the user's history, ``q(S)`` that of the list and ``q̃ = (1 - α) q + α p`` with α = 0.01
  (:func:`liverec.evaluation.metrics.calibration_kl`, the same definition the group metrics report). Relevance
  here is ``π``, the softmax of the model's scores over the candidates: Steck sums predicted probabilities, and
  for a model trained with a softmax loss (SASRec) that is what its scores give; for other models it is a
  monotone transform of arbitrary scale. Useful λ are then small (0.01-0.05 on ml-100k).
* ``popularity`` (:class:`PopularityPenalty`, λ >= 0): the candidates sorted by ``ŝ(i) - λ pop(i)`` with
  ``pop(i) = log(1 + n_i) / log(1 + max_j n_j)`` in [0, 1], ``n_i`` the item's training interactions.
* ``long-tail`` (:class:`LongTailQuota`, λ in [0, 1]): at least ``ceil(λ k)`` of the ``k`` items come from
  outside the head (the ``head_fraction`` = 20 % most popular items, as the ``long_tail@k`` metric counts), when
  the candidates hold that many: the lowest-ranked head items of the top ``k`` give way to the best-ranked tail
  candidates below it; the list keeps the candidates' order.

``ŝ`` (mmr, popularity) is the model's score min-max normalised over the user's candidates (to [0, 1]; all 1
when they tie), so that λ means the same for models whose scores live on different scales.

λ = 0 is no re-ranking, exactly and by construction: the first ``k`` candidates as given. An item outside the
catalogue the re-ranker was built with (one added since, e.g. by ``partial_fit``) has no category, no vector
and no interactions (tail).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from liverec.data.interactions import Histories
from liverec.evaluation.metrics import CALIBRATION_ALPHA, calibration_kl, category_weights
from liverec.models.base import Recommender

__all__ = [
    "MMR",
    "RERANKERS",
    "Calibration",
    "LongTailQuota",
    "PopularityPenalty",
    "RerankCatalogue",
    "Reranker",
    "create_reranker",
    "parse_rerank",
    "rerank_lists",
]


@dataclass(frozen=True)
class RerankCatalogue:
    """What the re-rankers know about the catalogue, each aligned with internal item ids (any may be None).

    ``categories``: binary ``[n_items, n_categories]`` (genres); ``popularity``: ``[n_items]`` training
    interactions per item; ``vectors``: ``[n_items, dim]`` item vectors; ``head_fraction``: the share of the
    most popular items that is the head (the rest is the long tail).
    """

    categories: sp.csr_matrix | None = None
    popularity: np.ndarray | None = None
    vectors: np.ndarray | None = None
    head_fraction: float = 0.2
    # derived once, read by every list
    weights: sp.csr_matrix | None = field(init=False, default=None, repr=False)  # p(g | i)
    log_popularity: np.ndarray | None = field(init=False, default=None, repr=False)  # [n_items] in [0, 1]
    head: np.ndarray | None = field(init=False, default=None, repr=False)  # [n_items] bool
    unit_vectors: np.ndarray | None = field(init=False, default=None, repr=False)  # [n_items, dim]

    def __post_init__(self) -> None:
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ValueError(f"head_fraction: expected a share in [0, 1], got {self.head_fraction!r}")
        if self.categories is not None:
            object.__setattr__(self, "categories", sp.csr_matrix(self.categories))
            object.__setattr__(self, "weights", category_weights(self.categories))
        if self.popularity is not None:
            popularity = np.asarray(self.popularity, dtype=np.float64)
            if popularity.ndim != 1 or (popularity < 0).any():
                raise ValueError("popularity: expected one non-negative count per item")
            top = float(np.log1p(popularity.max(initial=0.0)))
            object.__setattr__(self, "popularity", popularity)
            object.__setattr__(self, "log_popularity", np.log1p(popularity) / top if top > 0 else popularity * 0.0)
            head = np.zeros(len(popularity), dtype=bool)
            head[np.argsort(-popularity, kind="stable")[: int(np.ceil(self.head_fraction * len(popularity)))]] = True
            object.__setattr__(self, "head", head)
        if self.vectors is not None:
            vectors = np.asarray(self.vectors, dtype=np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            object.__setattr__(
                self, "unit_vectors", np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
            )

    @classmethod
    def for_model(
        cls,
        model: Recommender | None,
        categories: sp.spmatrix | None = None,
        popularity: np.ndarray | None = None,
        head_fraction: float = 0.2,
    ) -> RerankCatalogue:
        """The catalogue with ``model``'s item vectors when it ``provides_vectors`` (else none)."""
        vectors = model.item_vectors() if model is not None and model.provides_vectors else None
        return cls(categories, popularity, vectors, head_fraction)


def _take(values: np.ndarray, items: np.ndarray, fill: float | bool) -> np.ndarray:
    """``values[items]``, with ``fill`` for ids outside ``values`` (items newer than the catalogue)."""
    inside = items < len(values)
    out = np.full(len(items), fill, dtype=values.dtype)
    out[inside] = values[items[inside]]
    return out


def _rows(matrix: np.ndarray | sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """Dense rows ``[len(items), width]`` of ``matrix``, zero for ids outside it."""
    inside = items < matrix.shape[0]
    out = np.zeros((len(items), matrix.shape[1]), dtype=np.float64)
    rows = matrix[items[inside]]
    out[inside] = rows.toarray() if sp.issparse(rows) else rows
    return out


def normalised_scores(scores: np.ndarray) -> np.ndarray:
    """``ŝ``: ``scores`` min-max scaled to [0, 1] (all 1 when they are all equal)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low) if high > low else np.ones_like(scores)


class Reranker(ABC):
    """Picks ``k`` of one user's candidates; ``strength`` (λ) 0 returns the first ``k`` as given."""

    name: ClassVar[str]
    #: the closed range of λ that means something for this re-ranker
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, strength: float, catalogue: RerankCatalogue) -> None:
        self.check_strength(strength)
        self.strength = float(strength)
        self.catalogue = catalogue

    @classmethod
    def check_strength(cls, strength: float) -> None:
        """ValueError (one line) unless ``strength`` lies in :attr:`bounds`."""
        low, high = cls.bounds
        if not (math.isfinite(strength) and low <= strength <= high):
            expected = f"a number in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number >= {low:g}"
            raise ValueError(f"{cls.name}: λ expected {expected}, got {strength!r}")

    def describe(self) -> dict[str, object]:
        """What a report records about this re-ranker."""
        return {"name": self.name, "strength": self.strength}

    def select(self, items: np.ndarray, scores: np.ndarray, k: int, history: np.ndarray | None = None) -> np.ndarray:
        """Positions (into ``items``) of the ``min(k, n_valid)`` items to show, in order.

        ``items`` ``[n]`` ids best first and ``scores`` ``[n]`` the model's; entries with a negative id or a
        non-finite score (the padding of a short list) are never picked. ``history``: the user's items (the
        calibration target; the others ignore it).
        """
        items = np.asarray(items, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        if items.shape != scores.shape or items.ndim != 1:
            raise ValueError(f"items and scores: expected two [n] arrays, got {items.shape} and {scores.shape}")
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        valid = np.flatnonzero((items >= 0) & np.isfinite(scores))
        if self.strength == 0.0 or len(valid) == 0:
            return valid[:k]
        history = np.zeros(0, dtype=np.int64) if history is None else np.asarray(history, dtype=np.int64)
        chosen = self._select(items[valid], self.relevance(scores[valid]), min(k, len(valid)), history)
        return valid[chosen]

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """What the re-ranker trades against its goal, from the valid candidates' scores: ŝ (min-max)."""
        return normalised_scores(scores)

    def rerank(
        self, items: np.ndarray, scores: np.ndarray, k: int, history: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The shown ``items`` and their model ``scores`` (see :meth:`select`)."""
        positions = self.select(items, scores, k, history)
        return np.asarray(items, dtype=np.int64)[positions], np.asarray(scores)[positions]

    @abstractmethod
    def _select(self, items: np.ndarray, relevance: np.ndarray, k: int, history: np.ndarray) -> np.ndarray:
        """Positions of ``k`` (<= len(items)) of the valid candidates; ``relevance`` from :meth:`relevance`."""


class MMR(Reranker):
    """Maximal marginal relevance: ``argmax (1 - λ) ŝ(i) - λ max_{j chosen} sim(i, j)``, one item at a time."""

    name = "mmr"

    def __init__(self, strength: float, catalogue: RerankCatalogue) -> None:
        super().__init__(strength, catalogue)
        if catalogue.unit_vectors is None and catalogue.categories is None:
            raise ValueError("mmr: needs item vectors (a model that provides them) or item categories (genres)")
        self._vectors = catalogue.unit_vectors
        self._categories = catalogue.categories
        #: which similarity it uses: "cosine of item vectors" or "Jaccard of categories"
        self.similarity = "cosine of item vectors" if self._vectors is not None else "Jaccard of categories"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "similarity": self.similarity}

    def similarities(self, items: np.ndarray) -> np.ndarray:
        """``[n, n]`` pairwise similarity of ``items``."""
        if self._vectors is not None:
            vectors = _rows(self._vectors, items)
            return vectors @ vectors.T
        member = _rows(self._categories, items) > 0
        member_f = member.astype(np.float64)
        shared = member_f @ member_f.T
        sizes = member_f.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - shared
        return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)

    def _select(self, items: np.ndarray, relevance: np.ndarray, k: int, history: np.ndarray) -> np.ndarray:
        similarity = self.similarities(items)
        chosen = np.empty(k, dtype=np.int64)
        taken = np.zeros(len(items), dtype=bool)
        redundancy = np.zeros(len(items))  # max similarity to the chosen items (0 before the first)
        for step in range(k):
            gain = (1.0 - self.strength) * relevance - self.strength * redundancy
            gain[taken] = -np.inf
            best = int(np.argmax(gain))  # ties: the earlier candidate
            chosen[step], taken[best] = best, True
            column = similarity[:, best]
            redundancy = column if step == 0 else np.maximum(redundancy, column)
        return chosen


class Calibration(Reranker):
    """Steck's greedy calibration: ``argmax_S (1 - λ) sum_{i in S} π(i) - λ KL(p || q̃(S))``, growing ``S``,
    ``π`` the softmax of the scores over the candidates (see the module docstring).

    A user whose history has no categorised item has nothing to calibrate to: their first ``k`` candidates.
    """

    name = "calibration"

    def __init__(self, strength: float, catalogue: RerankCatalogue, alpha: float = CALIBRATION_ALPHA) -> None:
        super().__init__(strength, catalogue)
        if catalogue.weights is None:
            raise ValueError("calibration: needs item categories (genres); this data set has none")
        self._weights: sp.csr_matrix = catalogue.weights
        self.alpha = alpha

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """``π``: the softmax of ``scores`` over the candidates (Steck's predicted probabilities)."""
        shifted = np.exp(np.asarray(scores, dtype=np.float64) - np.max(scores))
        return shifted / shifted.sum()

    def _select(self, items: np.ndarray, relevance: np.ndarray, k: int, history: np.ndarray) -> np.ndarray:
        target = _rows(self._weights, history).sum(axis=0)
        if target.sum() <= 0:
            return np.arange(k)
        target /= target.sum()
        weights = _rows(self._weights, items)  # [n, n_categories]
        chosen = np.empty(k, dtype=np.int64)
        taken = np.zeros(len(items), dtype=bool)
        mass = np.zeros(weights.shape[1])  # sum of p(g | i) over the chosen items
        for step in range(k):
            grown = mass + weights
            totals = grown.sum(axis=1, keepdims=True)
            mix = np.divide(grown, totals, out=np.zeros_like(grown), where=totals > 0)
            gain = (1.0 - self.strength) * relevance - self.strength * calibration_kl(target, mix, self.alpha)
            gain[taken] = -np.inf
            best = int(np.argmax(gain))
            chosen[step], taken[best] = best, True
            mass += weights[best]
        return chosen


class PopularityPenalty(Reranker):
    """The candidates sorted by ``ŝ(i) - λ log(1 + n_i) / log(1 + max n)`` (stable: ties keep their order)."""

    name = "popularity"
    bounds = (0.0, math.inf)

    def __init__(self, strength: float, catalogue: RerankCatalogue) -> None:
        super().__init__(strength, catalogue)
        if catalogue.log_popularity is None:
            raise ValueError("popularity: needs the items' training interaction counts")
        self._log_popularity: np.ndarray = catalogue.log_popularity

    def _select(self, items: np.ndarray, relevance: np.ndarray, k: int, history: np.ndarray) -> np.ndarray:
        adjusted = relevance - self.strength * _take(self._log_popularity, items, 0.0)
        return np.argsort(-adjusted, kind="stable")[:k]


class LongTailQuota(Reranker):
    """At least ``ceil(λ k)`` long-tail items in the list when the candidates hold them; candidate order kept."""

    name = "long-tail"

    def __init__(self, strength: float, catalogue: RerankCatalogue) -> None:
        super().__init__(strength, catalogue)
        if catalogue.head is None:
            raise ValueError("long-tail: needs the items' training interaction counts")
        self._head: np.ndarray = catalogue.head

    def _select(self, items: np.ndarray, relevance: np.ndarray, k: int, history: np.ndarray) -> np.ndarray:
        tail = ~_take(self._head, items, False)
        quota = math.ceil(round(self.strength * k, 9))  # round: 0.3 * 10 is 3.0000000000000004
        chosen = np.arange(k)
        missing = quota - int(tail[:k].sum())
        if missing <= 0:
            return chosen
        incoming = (np.flatnonzero(tail[k:]) + k)[:missing]
        leaving = np.flatnonzero(~tail[:k])[::-1][: len(incoming)]  # the lowest-ranked head items
        return np.sort(np.concatenate([np.setdiff1d(chosen, leaving), incoming]))


#: The re-rankers by name (``liverec evaluate --rerank NAME=λ``).
RERANKERS: dict[str, type[Reranker]] = {cls.name: cls for cls in (MMR, Calibration, PopularityPenalty, LongTailQuota)}


def create_reranker(name: str, strength: float, catalogue: RerankCatalogue) -> Reranker:
    """The re-ranker ``name`` at ``strength``; ValueError (one line) for an unknown name or strength."""
    if name not in RERANKERS:
        raise ValueError(f"unknown re-ranker {name!r}; expected one of {', '.join(sorted(RERANKERS))}")
    return RERANKERS[name](strength, catalogue)


def parse_rerank(text: str) -> tuple[str, float]:
    """``"mmr=0.3"`` -> ``("mmr", 0.3)``; ValueError (one line) naming what was expected."""
    name, sign, value = text.partition("=")
    name = name.strip()
    if not sign or name not in RERANKERS:
        raise ValueError(f"expected NAME=λ with NAME one of {', '.join(sorted(RERANKERS))}, got {text!r}")
    try:
        strength = float(value)
    except ValueError:
        raise ValueError(f"expected NAME=λ with λ a number, got {text!r}") from None
    RERANKERS[name].check_strength(strength)
    return name, strength


def rerank_lists(
    reranker: Reranker, items: np.ndarray, scores: np.ndarray, histories: Histories | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank every row of ``items`` / ``scores`` ``[n_rows, n_candidates]`` (rows of ``histories``).

    Returns ``[n_rows, k]`` ids and model scores, padded with -1 / -inf when a row has fewer than ``k``
    valid candidates.
    """
    items = np.asarray(items, dtype=np.int64)
    n_rows = len(items)
    if histories is not None and len(histories) != n_rows:
        raise ValueError(f"histories: expected {n_rows} rows like items, got {len(histories)}")
    out_items = np.full((n_rows, k), -1, dtype=np.int64)
    out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for row in range(n_rows):
        history = histories.row(row) if histories is not None else None
        positions = reranker.select(items[row], scores[row], k, history)
        out_items[row, : len(positions)] = items[row, positions]
        out_scores[row, : len(positions)] = scores[row, positions]
    return out_items, out_scores
