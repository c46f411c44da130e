"""The model protocol every LiveRec recommender follows (see docs/architecture.md).

A model is configured by one frozen dataclass (its ``Config``), trained with :meth:`Recommender.fit`
(from scratch, reproducible for a given ``seed``) or :meth:`Recommender.partial_fit` (continues from
the current parameters, growing the id spaces), and queried batch-first: :meth:`score` gives a
``[batch, n_items]`` score matrix for a batch of :class:`~liverec.data.Histories`, :meth:`recommend`
the top-``k`` item ids with the excluded items filtered out. Models are saved as ``config.json`` plus
``state.npz`` (loaded with ``allow_pickle=False``); nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import RankingSplit

#: name -> model class; filled by :func:`register`.
MODEL_REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model available by its ``name`` (CLI, registry, loading)."""
    if cls.name in MODEL_REGISTRY:
        raise ValueError(f"model name {cls.name!r} registered twice")
    MODEL_REGISTRY[cls.name] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class UpdateOptions:
    """How one :meth:`Recommender.partial_fit` call trains, where the caller (the online learner) wants it to
    differ from the model's own settings: ``lr_multiplier`` scales the model's learning rate,
    ``epochs`` replaces its ``partial_fit_epochs``, ``batch_size`` its training batch (None: the model's own).
    A model without such a setting rejects the option (:meth:`Recommender.check_update_options`)."""

    lr_multiplier: float = 1.0
    epochs: int | None = None
    batch_size: int | None = None


#: UpdateOptions field -> the model config field it replaces during ``partial_fit``.
_UPDATE_FIELDS = {
    "lr_multiplier": "learning_rate",
    "epochs": "partial_fit_epochs",
    "batch_size": "batch_size",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of every model's hyperparameters; ``seed`` drives all randomness in ``fit``."""

    seed: int = 0


class Recommender(ABC):
    """Base class: public methods validate and delegate to the ``_``-prefixed ones subclasses write."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    # Capabilities: what callers may ask of a model. Class attributes; a model whose capabilities follow
    # from its configuration (fusion: from its components) sets them per instance in ``__init__``.
    #: True when :meth:`partial_fit` continues training (else it raises).
    supports_partial_fit: bool = False
    #: True when scores depend on the history passed in (not on per-user parameters only).
    needs_user_history: bool = True
    #: True when items unseen at ``fit`` time can be scored after ``partial_fit``.
    handles_new_items: bool = False
    #: True when ``fit`` uses a validation split (early stopping, learned weights) when one is given.
    uses_validation: bool = False
    #: True when ``partial_fit(..., learn=mask)`` reads the events outside the mask as context for the new
    #: ones (a sequence model); other models are given the new events only.
    learns_in_context: bool = False
    #: True when scores are dot products of :meth:`user_vectors` and :meth:`item_vectors`, so serving can
    #: retrieve through a vector index instead of scoring every item.
    provides_vectors: bool = False
    #: True when the model takes item side features (:meth:`set_item_features`, e.g. categories).
    takes_item_features: bool = False
    #: True when the model keeps something per user (rows indexed by internal user id: MF's user factors,
    #: ItemKNN's user-item matrix): :meth:`forget_users` deletes it. False: only aggregates over users.
    keeps_user_parameters: bool = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        if not isinstance(base, self.Config):
            raise TypeError(f"config: expected {self.Config.__name__}, got {type(base).__name__}")
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.n_users = 0
        self.n_items = 0
        self._fitted = False
        #: show progress bars during long fits (the CLI turns this on for terminals)
        self.progress = False

    # ----------------------------------------------------------------- training
    def fit(self, interactions: Interactions, validation: RankingSplit | None = None) -> Self:
        """Train from scratch on ``interactions``; the same data and seed give the same model.

        ``validation`` (history and held-out targets, e.g. the leave-one-out validation split) is used
        by models with ``uses_validation`` for early stopping or weight learning, and ignored by others.
        """
        if len(interactions) == 0:
            raise ValueError("interactions: expected at least one event to fit on, got none")
        self.n_users, self.n_items = interactions.n_users, interactions.n_items
        if self.uses_validation:
            self._fit(interactions, validation)  # type: ignore[call-arg]
        else:
            self._fit(interactions)
        self._fitted = True
        return self

    def refit_on(self, interactions: Interactions) -> Self:
        """Train the final model on ``interactions`` (training plus validation events) with what ``fit``'s
        validation chose: models that choose nothing there simply fit (SASRec keeps its epoch count)."""
        return self.fit(interactions)

    def partial_fit(
        self, interactions: Interactions, learn: np.ndarray | None = None, options: UpdateOptions | None = None
    ) -> Self:
        """Continue training on new ``interactions`` (ids may exceed the current id spaces).

        ``learn``: ``[len(interactions)]`` bools, the events to learn; the others were learned before
        and are context only: a model that ``learns_in_context`` reads them as the sequence before
        the new events (no loss on predicting them), the others are given the new events alone.
        None: learn every event. ``options``: this call's learning rate, epochs and batch size where they
        should differ from the model's settings (the settings themselves are unchanged afterwards).
        """
        if not self.supports_partial_fit:
            raise NotImplementedError(f"model {self.name!r} does not support partial_fit; call fit")
        overrides = self.check_update_options(options) if options is not None else {}
        if not overrides:
            return self._partial_fit_checked(interactions, learn)
        # the models read these settings from their config at every step: swap it for the call, then restore
        original = self.config
        self.config = dataclasses.replace(original, **overrides)
        try:
            return self._partial_fit_checked(interactions, learn)
        finally:
            self.config = original

    def check_update_options(self, options: UpdateOptions) -> dict[str, Any]:
        """The config fields ``options`` change (name -> value); ValueError naming an option the model lacks."""
        fields = {field.name for field in dataclasses.fields(self.config)}
        overrides: dict[str, Any] = {}
        for option, field in _UPDATE_FIELDS.items():
            value = getattr(options, option)
            if value is None or (option == "lr_multiplier" and value == 1.0):
                continue
            if field not in fields:
                raise ValueError(f"{option}: model {self.name!r} has no {field}")
            overrides[field] = getattr(self.config, field) * value if option == "lr_multiplier" else value
        return overrides

    def context_length(self) -> int | None:
        """How many of a user's most recent items the model reads (None: all of them)."""
        return None

    def _partial_fit_checked(self, interactions: Interactions, learn: np.ndarray | None) -> Self:
        if learn is not None:
            learn = np.asarray(learn)
            if learn.dtype != np.bool_ or learn.shape != (len(interactions),):
                raise ValueError(
                    f"learn: expected {len(interactions)} bools (one per event), got {learn.dtype} {learn.shape}"
                )
            if learn.all():
                learn = None
            elif not self.learns_in_context or not self._fitted:
                interactions, learn = interactions.subset(np.flatnonzero(learn)), None
        if not self._fitted:
            return self.fit(interactions)
        if interactions.n_users < self.n_users or interactions.n_items < self.n_items:
            interactions = interactions.with_sizes(
                max(self.n_users, interactions.n_users), max(self.n_items, interactions.n_items)
            )
        if learn is None:
            self._partial_fit(interactions)
        else:
            self._partial_fit_in_context(interactions, learn)
        self.n_users, self.n_items = interactions.n_users, interactions.n_items
        return self

    @abstractmethod
    def _fit(self, interactions: Interactions) -> None: ...

    def _partial_fit(self, interactions: Interactions) -> None:
        raise NotImplementedError

    def _partial_fit_in_context(self, interactions: Interactions, learn: np.ndarray) -> None:
        """``partial_fit`` of a model that ``learns_in_context``: ``learn`` has a False (context) event."""
        raise NotImplementedError

    # ----------------------------------------------------------------- scoring
    def score(self, histories: Histories, items: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[len(histories), n_items]`` (or ``[len(histories), len(items)]`` for ``items``)."""
        self._check_fitted()
        scores = self._score(histories)
        return scores if items is None else scores[:, np.asarray(items, dtype=np.int64)]

    @abstractmethod
    def _score(self, histories: Histories) -> np.ndarray:
        """Float32 scores ``[batch, n_items]``; higher is better."""

    def recommend(
        self,
        histories: Histories,
        k: int,
        exclude: sp.csr_matrix | None = None,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids and scores per row, best first: two ``[len(histories), k]`` arrays.

        Excluded items are the row's history (``exclude_seen``) plus ``exclude`` (``[batch, n_items]``
        CSR). When fewer than ``k`` items are eligible, the tail is padded with id -1 and score -inf.
        Ties are broken towards the lower item id, so results are deterministic.
        """
        self._check_fitted()
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        if exclude is not None and exclude.shape[0] != len(histories):
            raise ValueError(f"exclude: expected {len(histories)} rows, got {exclude.shape[0]}")
        n = len(histories)
        ids = np.full((n, k), -1, dtype=np.int64)
        top_scores = np.full((n, k), -np.inf, dtype=np.float32)
        step = batch_size or max(1, min(4096, (1 << 24) // max(self.n_items, 1)))
        for start in range(0, n, step):
            rows = np.arange(start, min(n, start + step))
            batch = histories.select(rows)
            scores = np.array(self._score(batch), dtype=np.float32, copy=True)
            mask = sp.csr_matrix(scores.shape, dtype=np.float32)
            if exclude_seen:
                mask = mask + _clip_csr(batch.to_csr(max(self.n_items, _max_item(batch) + 1)), scores.shape[1])
            if exclude is not None:
                mask = mask + _clip_csr(exclude[rows], scores.shape[1])
            mask = mask.tocoo()
            scores[mask.row, mask.col] = -np.inf
            batch_ids, batch_scores = top_k(scores, k)
            ids[rows] = batch_ids
            top_scores[rows] = batch_scores
        return ids, top_scores

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``state.npz`` to ``directory`` (created if missing)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "config": dataclasses.asdict(self.config),
            "n_users": self.n_users,
            "n_items": self.n_items,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        state: dict[str, Any] = self._get_state()
        np.savez(directory / "state.npz", **state)

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; on the base class, dispatches on the saved name."""
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        model_cls = MODEL_REGISTRY.get(meta["model"])
        if model_cls is None:
            raise ValueError(f"{directory}: unknown model {meta['model']!r}; known: {sorted(MODEL_REGISTRY)}")
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{directory}: holds a {meta['model']!r} model, not {cls.name!r}")
        model = model_cls(model_cls.Config(**meta["config"]))
        model.n_users, model.n_items = int(meta["n_users"]), int(meta["n_items"])
        with np.load(directory / "state.npz", allow_pickle=False) as state:
            model._set_state({key: state[key] for key in state.files})
        model._fitted = True
        return model

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None: ...

    # ----------------------------------------------------------------- erasure
    def forget_users(self, users: Sequence[int] | np.ndarray) -> int:
        """Remove the internal user ids ``users`` from the model's user id space (a user's erasure).

        What the model keeps per user (``keeps_user_parameters``) is deleted and the remaining users are
        renumbered in order, so the caller drops the same positions from its list of external user ids.
        Returns how many per-user rows were deleted (0 for a model that keeps none: only ``n_users`` shrinks).
        Aggregates the users contributed to (item factors, similarities, network weights) are not unlearned.
        """
        self._check_fitted()
        ids = np.unique(np.asarray(users, dtype=np.int64))
        if len(ids) and (ids[0] < 0 or ids[-1] >= self.n_users):
            raise ValueError(f"users: expected internal user ids in [0, {self.n_users}), got {ids.tolist()}")
        keep = np.ones(self.n_users, dtype=bool)
        keep[ids] = False
        removed = self._forget_users(keep)
        self.n_users = int(keep.sum())
        return removed

    def _forget_users(self, keep: np.ndarray) -> int:
        """Keep only the users where ``keep`` (``[n_users]`` bools) is True; returns the rows deleted.
        Models that keep nothing per user need not write it."""
        return 0

    # ----------------------------------------------------------------- optional capabilities
    def user_vectors(self, histories: Histories) -> np.ndarray:
        """``[batch, dim]`` user vectors whose dot products with :meth:`item_vectors` are the scores
        (models that declare ``provides_vectors``)."""
        raise NotImplementedError(f"model {self.name!r} does not provide vectors (provides_vectors is False)")

    def item_vectors(self) -> np.ndarray:
        """``[n_items, dim]`` item vectors (models that declare ``provides_vectors``)."""
        raise NotImplementedError(f"model {self.name!r} does not provide vectors (provides_vectors is False)")

    def set_item_features(self, features: sp.spmatrix | np.ndarray | None, names: Sequence[str] | None = None) -> Self:
        """Binary ``[n_described_items, n_features]`` item side features for the next ``fit`` (models that
        declare ``takes_item_features``); ``names`` label the columns."""
        raise NotImplementedError(f"model {self.name!r} takes no item features (takes_item_features is False)")

    def has_item_features(self) -> bool:
        """True when item side features shape the model's scores, so that items joining online should be
        described (their features given) before the update that adds them."""
        return False

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"model {self.name!r} is not fitted: call fit first")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``k`` of ``scores`` ``[batch, n]``: ids and scores, best first.

    Ties break towards the lower column; entries equal to -inf are returned as id -1.
    """
    n_rows, n_cols = scores.shape
    kk = min(k, n_cols)
    if kk < n_cols:
        # partition on a key that orders ties by column id, so the result is deterministic
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        # candidates: everything at or above the k-th best score, so boundary ties are all seen and
        # the final order (score desc, then item id asc) does not depend on the partition algorithm
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        rows, cols = np.nonzero(scores >= kth)
        order = np.lexsort((cols, -scores[rows, cols], rows))
        rows, cols = rows[order], cols[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows]
        keep = rank < kk
        ids = np.full((n_rows, kk), -1, dtype=np.int64)
        ids[rows[keep], rank[keep]] = cols[keep]
    else:
        cols = np.broadcast_to(np.arange(n_cols), scores.shape)
        order = np.lexsort((cols, -scores), axis=1) if scores.size else np.empty_like(cols)
        ids = np.asarray(order, dtype=np.int64)
    out_scores = np.take_along_axis(scores, np.maximum(ids, 0), axis=1).astype(np.float32)
    ids = np.where(np.isneginf(out_scores) | (ids < 0), -1, ids)
    out_scores = np.where(ids < 0, -np.inf, out_scores).astype(np.float32)
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return ids, out_scores


def _max_item(batch: Histories) -> int:
    return int(batch.items.max()) if len(batch.items) else -1


def _clip_csr(matrix: sp.csr_matrix, n_cols: int) -> sp.csr_matrix:
    """``matrix`` resized to ``n_cols`` columns (items outside the model's catalogue dropped)."""
    matrix = sp.csr_matrix(matrix)
    if matrix.shape[1] == n_cols:
        return matrix
    matrix = matrix.tocoo()
    keep = matrix.col < n_cols
    return sp.csr_matrix((matrix.data[keep], (matrix.row[keep], matrix.col[keep])), shape=(matrix.shape[0], n_cols))
