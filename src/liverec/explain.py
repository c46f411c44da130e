"""Why an item was recommended: which history items drove its score, faithful to the model that ranked it.

An :class:`Attribution` gives, for some recommended items and one history, the contribution (``weight``) of
each distinct history item to each item's score. How it is computed depends on the model:

* **exact** where the score is a sum over history items. ItemKNN: ``score(i) = Σ_h w_h · sim(h, i)`` with
  ``w_h`` the recency weight of history item ``h`` (``recency_decay`` to the power of its distance from the
  newest item; 0 outside the ``history_length`` most recent items), so ``h``'s weight is ``w_h · sim(h, i)``;
  EASE: ``score(i) = Σ_h B[h, i]``, so ``h``'s weight is ``B[h, i]``. The weights of all history items sum
  to the item's score (up to float32 rounding).
* **occlusion** for every other model (SASRec, MF folded in from the history, fusion, ...): ``h``'s weight
  is the item's score minus its score with every occurrence of ``h`` removed from the history. The full
  history and the ``n`` occluded ones are scored in one batched pass (``n + 1`` rows); a model that
  ``provides_vectors`` scores only the items asked for (``user_vectors @ item_vectors[items].T``, which is its
  score by the protocol). Items older than the model's ``context_length`` are not occluded: removing one
  leaves the window the model reads unchanged, so their weight is exactly 0.

A model whose scores do not depend on the history (``needs_user_history`` False: the popularity models; MF
for a user it has factors for) has nothing to attribute: every weight is 0.

:func:`describe` turns an item's top weights into the JSON the API serves: ``kind``, ``because`` (the
:data:`MAX_BECAUSE` history items with the largest positive weights, largest first) and ``text``.
:func:`faithfulness` measures whether the attribution is right: removing the top attributed items must hurt
the item's rank more than removing as many random history items (``liverec explain-check``).

No I/O; serving and the command line call the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from liverec.data.interactions import Histories
from liverec.models.base import Recommender
from liverec.models.neighbors import EASE, ItemKNN, history_matrix

__all__ = [
    "EXPLANATION_KINDS",
    "MAX_BECAUSE",
    "Attribution",
    "FaithfulnessReport",
    "attribute",
    "describe",
    "distinct_recent",
    "faithfulness",
    "occlusion",
]

#: How many history items an explanation names at most.
MAX_BECAUSE = 3

#: What an explanation's ``kind`` may be: ranked from the history; ranked by a model that reads no history
#: (popularity) or put in by the popularity fill; the whole answer fell back to popularity; an item the
#: serving model does not know yet; an item the exploration policy put in a slot the greedy list gave another.
EXPLANATION_KINDS = ("history", "popular", "fallback", "new_item", "explore")


@dataclass(frozen=True)
class Attribution:
    """Contributions of history items to the scores of some items.

    ``history``: ``[n_history]`` distinct model item ids of the history, ordered by their latest occurrence
    (oldest first); ``weights``: ``[n_items, n_history]`` float64, ``weights[j, h]`` the contribution of
    ``history[h]`` to the score of the ``j``-th item asked about; ``method``: ``"exact"`` or ``"occlusion"``.
    """

    history: np.ndarray
    weights: np.ndarray
    method: str

    def top(self, row: int, n: int = MAX_BECAUSE) -> list[tuple[int, float]]:
        """The ``n`` history items with the largest positive weights for item ``row``, largest first (ties: the
        more recent item first), as ``(model item id, weight)``."""
        weights = self.weights[row]
        recency = np.arange(len(weights))
        order = np.lexsort((-recency, -weights))
        return [(int(self.history[h]), float(weights[h])) for h in order[:n] if weights[h] > 0]


def distinct_recent(history: np.ndarray) -> np.ndarray:
    """The distinct items of ``history`` (oldest first) ordered by their latest occurrence, oldest first."""
    history = np.asarray(history, dtype=np.int64)
    reversed_items, first = np.unique(history[::-1], return_index=True)
    return reversed_items[np.argsort(-first, kind="stable")]


def _knn_weights(model: Recommender, history: np.ndarray, items: np.ndarray, user: int) -> np.ndarray:
    if not isinstance(model, ItemKNN):
        raise TypeError(f"model: expected an ItemKNN, got {type(model).__name__}")
    cfg = model.config
    recency = history_matrix(_batch([history], user), model.n_items, cfg.history_length or None, cfg.recency_decay)
    distinct = distinct_recent(history)
    known = distinct < model.n_items
    votes = np.zeros(len(distinct))
    votes[known] = recency[0, distinct[known]].toarray().ravel()
    sims = np.zeros((len(distinct), len(items)))
    sims[known] = model.similarity[distinct[known]][:, items].toarray()
    return (votes[:, None] * sims).T


def _ease_weights(model: Recommender, history: np.ndarray, items: np.ndarray, user: int) -> np.ndarray:
    if not isinstance(model, EASE):
        raise TypeError(f"model: expected an EASE, got {type(model).__name__}")
    distinct = distinct_recent(history)
    known = distinct < model.n_items
    weights = np.zeros((len(distinct), len(items)))
    weights[known] = model.weights[np.ix_(distinct[known], items)]
    return weights.T


#: The models whose scores are sums over history items: attributed exactly (name -> weights function).
EXACT: dict[str, Callable[[Recommender, np.ndarray, np.ndarray, int], np.ndarray]] = {
    ItemKNN.name: _knn_weights,
    EASE.name: _ease_weights,
}


def attribute(model: Recommender, history: np.ndarray, items: np.ndarray, user: int = -1) -> Attribution:
    """Contributions of ``history`` (model item ids, oldest first) to ``model``'s scores of ``items`` for the
    user ``user`` (internal id, -1 for one the model has never seen): exact for the models in :data:`EXACT`,
    else by :func:`occlusion`."""
    history = np.asarray(history, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    exact = EXACT.get(model.name)
    if exact is not None:
        return Attribution(distinct_recent(history), exact(model, history, items, user), "exact")
    return occlusion(model, history, items, user)


def _scores(model: Recommender, batch: Histories, items: np.ndarray) -> np.ndarray:
    """``model``'s scores ``[len(batch), len(items)]``: only the items asked for where the model provides vectors."""
    if model.provides_vectors:
        users = model.user_vectors(batch)
        return np.asarray(users @ model.item_vectors()[items].T, dtype=np.float64)
    return np.asarray(model.score(batch, items), dtype=np.float64)


def _batch(rows: Sequence[np.ndarray], user: int) -> Histories:
    """One user's histories ``rows`` as a batch (every row the same user)."""
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    items = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return Histories(np.full(len(rows), user), np.concatenate([[0], np.cumsum(lengths)]), items)


def occlusion(model: Recommender, history: np.ndarray, items: np.ndarray, user: int = -1) -> Attribution:
    """Weights by occlusion: an item's score minus its score with each distinct history item removed (every
    occurrence), the full and the occluded histories scored in one batched pass."""
    history = np.asarray(history, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    distinct = distinct_recent(history)
    weights = np.zeros((len(items), len(distinct)))
    if not model.needs_user_history and user >= 0:
        return Attribution(distinct, weights, "occlusion")  # scores that do not read the history
    context = model.context_length()
    window = history if context is None else history[-context:]
    occluded = np.flatnonzero(np.isin(distinct, window))  # the others leave the window unchanged: weight 0
    rows = [history] + [history[history != distinct[h]] for h in occluded]
    scores = _scores(model, _batch(rows, user), items)
    weights[:, occluded] = scores[0][:, None] - scores[1:].T
    return Attribution(distinct, weights, "occlusion")


def describe(
    kind: str,
    because: Sequence[tuple[str, str | None, float]] = (),
    *,
    anchor: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:
    """An item's explanation as served: ``kind`` (one of :data:`EXPLANATION_KINDS`), ``because`` (history items
    as ``(item_id, title or None, weight)``, largest weight first) and ``text``, built from the titles (the
    item id where an item has none). ``anchor``: the one history item is the item of a similar-items request.
    ``reason``: why the answer fell back to popularity."""
    if kind not in EXPLANATION_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(EXPLANATION_KINDS)}, got {kind!r}")
    names = [title or item_id for item_id, title, _ in because]
    if kind == "history" and names:
        text = f"Similar to {names[0]}" if anchor else f"Because you interacted with {_join(names)}"
    elif kind == "history":
        text = "Ranked from your recent activity"
    elif kind == "fallback":
        text = "Popular right now" + (f" ({reason})" if reason else "")
    else:
        text = {"popular": "Popular right now", "new_item": "New in the catalogue", "explore": "Something new to try"}[
            kind
        ]
    return {
        "kind": kind,
        "because": [
            {"item_id": item_id, **({"title": title} if title else {}), "weight": weight}
            for item_id, title, weight in because
        ],
        "text": text,
    }


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# ---------------------------------------------------------------------------------------------- faithfulness
@dataclass(frozen=True)
class FaithfulnessReport:
    """What removing the top attributed history items does to a recommended item, against removing as many
    random ones (per (user, item) pair; ranks from 1 among the items not in the user's full history)."""

    n_users: int
    n_pairs: int
    n_removed: int
    attributed_rank_drop: np.ndarray  # [n_pairs] rank after removal minus rank before
    random_rank_drop: np.ndarray
    attributed_score_drop: np.ndarray  # [n_pairs] score before minus score after
    random_score_drop: np.ndarray

    def summary(self) -> dict[str, Any]:
        attributed_hurts_more = (self.attributed_rank_drop > self.random_rank_drop) | (
            (self.attributed_rank_drop == self.random_rank_drop) & (self.attributed_score_drop > self.random_score_drop)
        )
        mean_attributed = float(self.attributed_rank_drop.mean()) if self.n_pairs else float("nan")
        mean_random = float(self.random_rank_drop.mean()) if self.n_pairs else float("nan")
        return {
            "users": self.n_users,
            "pairs": self.n_pairs,
            "removed_per_pair": self.n_removed,
            "attributed": {
                "mean_rank_drop": mean_attributed,
                "median_rank_drop": float(np.median(self.attributed_rank_drop)) if self.n_pairs else float("nan"),
                "mean_score_drop": float(self.attributed_score_drop.mean()) if self.n_pairs else float("nan"),
            },
            "random": {
                "mean_rank_drop": mean_random,
                "median_rank_drop": float(np.median(self.random_rank_drop)) if self.n_pairs else float("nan"),
                "mean_score_drop": float(self.random_score_drop.mean()) if self.n_pairs else float("nan"),
            },
            # rank drop larger, or equal and score drop larger
            "share_attributed_hurts_more": float(attributed_hurts_more.mean()) if self.n_pairs else float("nan"),
            "share_rank_drop_larger": float((self.attributed_rank_drop > self.random_rank_drop).mean())
            if self.n_pairs
            else float("nan"),
            "rank_drop_ratio": mean_attributed / mean_random if mean_random > 0 else None,
        }


def faithfulness(
    model: Recommender, histories: Histories, k: int = 10, n_removed: int = 3, seed: int = 0
) -> FaithfulnessReport:
    """For each row of ``histories`` (users with more than ``n_removed`` distinct history items) and each of
    its top-``k`` items (its history excluded): the item's rank and score once the ``n_removed`` history items
    with the largest attributed weights are removed (every occurrence), and once ``n_removed`` distinct history
    items drawn at random (``seed``) are. The candidate set stays the items outside the full history, so a
    removed item never enters the ranking; a rank counts the candidates scored above the item (ties: those
    with a lower id), plus one."""
    rng = np.random.default_rng(seed)
    drops: list[list[float]] = [[], [], [], []]
    users = 0
    for row in range(len(histories)):
        history = histories.row(row)
        user = int(histories.users[row])
        distinct = distinct_recent(history)
        if len(distinct) <= n_removed:
            continue
        users += 1
        one = histories.select(np.array([row]))
        items, _ = model.recommend(one, k)
        items = items[0][items[0] >= 0]
        attribution = attribute(model, history, items, user)
        histories_after: list[np.ndarray] = []
        for j in range(len(items)):
            order = np.lexsort((-np.arange(len(distinct)), -attribution.weights[j]))
            attributed = attribution.history[order[:n_removed]]
            drawn = rng.choice(distinct, size=n_removed, replace=False)
            histories_after += [history[~np.isin(history, attributed)], history[~np.isin(history, drawn)]]
        scores = np.asarray(model.score(_batch([history, *histories_after], user)), dtype=np.float64)
        candidates = np.ones(scores.shape[1], dtype=bool)
        candidates[history[history < scores.shape[1]]] = False
        ranks = _ranks(scores, items, candidates)  # [1 + 2 * len(items)], pair by pair after the full history
        for j, item in enumerate(items):
            before, after_attributed, after_random = ranks[0, j], ranks[1 + 2 * j, j], ranks[2 + 2 * j, j]
            drops[0].append(after_attributed - before)
            drops[1].append(after_random - before)
            drops[2].append(scores[0, item] - scores[1 + 2 * j, item])
            drops[3].append(scores[0, item] - scores[2 + 2 * j, item])
    arrays = [np.asarray(values, dtype=np.float64) for values in drops]
    return FaithfulnessReport(users, len(arrays[0]), n_removed, arrays[0], arrays[1], arrays[2], arrays[3])


def _ranks(scores: np.ndarray, items: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``[n_rows, len(items)]``: each item's rank in each row among ``candidates`` (1 = best; ties to the lower id)."""
    masked = np.where(candidates[None, :], scores, -np.inf)
    target = scores[:, items]  # [n_rows, n_items]
    above = (masked[:, None, :] > target[:, :, None]).sum(axis=2)
    ids = np.arange(scores.shape[1])
    tied = ((masked[:, None, :] == target[:, :, None]) & (ids[None, None, :] < items[None, :, None])).sum(axis=2)
    return (above + tied + 1).astype(np.float64)
