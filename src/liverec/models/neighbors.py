"""Item-based neighbourhood models: ItemKNN (shrunk cosine) and EASE (closed-form linear autoencoder).

Both score a user from the items in their history, so they need no per-user parameters: a new
event changes the user's recommendations at once, and a user unknown at training time is served
from the history passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import ModelConfig, Recommender, register


def history_matrix(histories: Histories, n_items: int, max_len: int | None, recency_decay: float) -> sp.csr_matrix:
    """Weighted ``[batch, n_items]`` matrix of each row's most recent ``max_len`` items.

    The newest item weighs 1, the one before ``recency_decay``, then ``recency_decay**2``...; items
    outside the model's catalogue are dropped and repeated items keep their largest weight.
    """
    recent = histories if max_len is None else histories.last(max_len)
    lengths = recent.lengths()
    position_from_end = np.repeat(recent.indptr[1:], lengths) - 1 - np.arange(len(recent.items))
    weights = np.power(recency_decay, position_from_end).astype(np.float32)
    rows = np.repeat(np.arange(len(recent)), lengths)
    known = recent.items < n_items
    matrix = sp.coo_matrix((weights[known], (rows[known], recent.items[known])), shape=(len(recent), n_items))
    # max over duplicates: sort by weight so the largest is written last, then build via CSR assignment
    order = np.argsort(matrix.data, kind="stable")
    dense_index = matrix.row[order].astype(np.int64) * n_items + matrix.col[order]
    unique_keys, last = np.unique(dense_index[::-1], return_index=True)
    data = matrix.data[order][::-1][last]
    return sp.csr_matrix((data, (unique_keys // n_items, unique_keys % n_items)), shape=(len(recent), n_items))


@dataclass(frozen=True)
class ItemKNNConfig(ModelConfig):
    """ItemKNN hyperparameters.

    ``n_neighbors``: neighbours kept per item; ``shrinkage``: added to the cosine denominator so
    pairs seen together once do not look perfectly similar; ``history_length``: how many of the
    user's most recent items vote (``0`` = all); ``recency_decay``: weight ratio between consecutive
    history items (1 = all equal).
    """

    n_neighbors: int = 50
    shrinkage: float = 10.0
    history_length: int = 20
    recency_decay: float = 0.9


@register
class ItemKNN(Recommender):
    """``itemknn``: score(u, j) = sum over u's recent items i of sim(i, j).

    ``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|·|U_j|) + shrinkage)`` from the binary user-item matrix,
    pruned to each item's ``n_neighbors`` most similar items. ``partial_fit`` adds the new events to
    the stored user-item matrix and recomputes the similarities, so it equals a refit on all events.
    """

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig
    supports_partial_fit = True
    handles_new_items = True
    #: the user-item matrix (rows: users), kept so that ``partial_fit`` equals a refit
    keeps_user_parameters = True

    def __init__(self, config: ModelConfig | None = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.user_items = sp.csr_matrix((0, 0), dtype=np.float32)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, interactions: Interactions) -> None:
        self.user_items = interactions.to_csr()
        self.similarity = self._similarity(self.user_items)

    def _partial_fit(self, interactions: Interactions) -> None:
        old = self.user_items
        old.resize((interactions.n_users, interactions.n_items))
        merged = old + interactions.to_csr()
        merged.data[:] = 1.0
        self.user_items = merged.tocsr()
        self.similarity = self._similarity(self.user_items)

    def _forget_users(self, keep: np.ndarray) -> int:
        """Delete the users' rows of the user-item matrix and recompute the similarities without them (the
        model then equals one fitted on the other users' events)."""
        rows = keep[: self.user_items.shape[0]]
        self.user_items = sp.csr_matrix(self.user_items[np.flatnonzero(rows)])
        self.similarity = self._similarity(self.user_items)
        return int((~rows).sum())

    def _similarity(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        cfg = self.config
        if cfg.n_neighbors < 1:
            raise ValueError(f"n_neighbors: expected a positive integer, got {cfg.n_neighbors}")
        if cfg.shrinkage < 0:
            raise ValueError(f"shrinkage: expected a non-negative number, got {cfg.shrinkage}")
        item_users = user_items.T.tocsr()
        co = (item_users @ user_items).tocoo()
        norms = np.sqrt(np.asarray(user_items.sum(axis=0)).ravel())
        off_diagonal = co.row != co.col
        rows, cols = co.row[off_diagonal], co.col[off_diagonal]
        sims = co.data[off_diagonal] / (norms[rows] * norms[cols] + cfg.shrinkage)
        # keep each row's n_neighbors largest similarities (ties towards the lower item id)
        order = np.lexsort((cols, -sims, rows))
        rows, cols, sims = rows[order], cols[order], sims[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        keep = rank < cfg.n_neighbors
        n_items = user_items.shape[1]
        return sp.csr_matrix((sims[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n_items, n_items))

    def _score(self, histories: Histories) -> np.ndarray:
        cfg = self.config
        weights = history_matrix(histories, self.n_items, cfg.history_length or None, cfg.recency_decay)
        return np.asarray((weights @ self.similarity).toarray(), dtype=np.float32)

    def _get_state(self) -> dict[str, np.ndarray]:
        ui, sim = self.user_items, self.similarity
        return {
            "user_items_indptr": ui.indptr,
            "user_items_indices": ui.indices,
            "user_items_shape": np.array(ui.shape),
            "sim_indptr": sim.indptr,
            "sim_indices": sim.indices,
            "sim_data": sim.data,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n_users, n_items = (int(x) for x in state["user_items_shape"])
        indices = state["user_items_indices"]
        self.user_items = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, state["user_items_indptr"]), shape=(n_users, n_items)
        )
        self.similarity = sp.csr_matrix(
            (state["sim_data"], state["sim_indices"], state["sim_indptr"]), shape=(n_items, n_items)
        )


@dataclass(frozen=True)
class EASEConfig(ModelConfig):
    """EASE hyperparameters: ``l2`` regularisation of the item-item weights; ``max_items`` guards memory
    (the closed form inverts a dense ``[n_items, n_items]`` matrix)."""

    l2: float = 100.0
    max_items: int = 30_000


@register
class EASE(Recommender):
    """``ease``: Steck's Embarrassingly Shallow Autoencoder (WWW 2019), closed form.

    ``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + l2·I)⁻¹`` has a zero diagonal, so no item
    predicts itself; ``score(u) = x_u B`` from the user's history row ``x_u``.
    """

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.weights = np.zeros((0, 0), dtype=np.float32)

    def _fit(self, interactions: Interactions) -> None:
        cfg = self.config
        if interactions.n_items > cfg.max_items:
            raise ValueError(
                f"ease: {interactions.n_items} items exceed max_items={cfg.max_items} (a dense "
                f"{interactions.n_items}² matrix); raise max_items if memory allows"
            )
        if cfg.l2 <= 0:
            raise ValueError(f"l2: expected a positive number, got {cfg.l2}")
        user_items = interactions.to_csr()
        gram = np.asarray((user_items.T @ user_items).toarray(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += cfg.l2
        precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        weights = -precision / np.diag(precision)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)

    def _score(self, histories: Histories) -> np.ndarray:
        rows = history_matrix(histories, self.n_items, None, 1.0)
        return np.asarray(rows @ self.weights, dtype=np.float32)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"].astype(np.float32)
