"""Matrix-factorisation recommenders: one bilinear network, three losses.

Every model here scores a (user, item) pair as

    x_ui = global_bias + user_bias[u] + item_bias[i] + user_factors[u] · item_factors[i]

and differs only in what it is trained to do with that score:

* ``mf-bpr`` (:class:`BPRMF`) — implicit feedback, Bayesian personalised ranking: the pairwise loss
  ``-log σ(x_ui - x_uj)`` for a consumed item ``i`` against uniformly sampled items ``j``.
* ``mf-bce`` (:class:`BCEMF`) — implicit feedback, binary cross-entropy: the consumed item is a
  positive (label 1) and ``n_negatives`` sampled items are negatives (label 0).
* ``mf-mse`` (:class:`MSEMF`) — explicit ratings (``Interactions.values``), mean squared error; it
  also predicts ratings (:meth:`MSEMF.predict`).

Training details shared by all three:

* **Optimiser: lazy (sparse) Adam** (``torch.optim.SparseAdam``). Every parameter, the global bias
  included, is an ``nn.Embedding(sparse=True)``, so one step touches only the rows in the mini-batch:
  the cost of a step does not grow with the catalogue or the user base, which keeps full training
  and the frequent small ``partial_fit`` calls of the online updater cheap. Adam's per-row step sizes
  also make the learning rate far less sensitive than plain SGD's on the long-tailed item
  frequencies of recommendation data. Regularisation is an L2 penalty on the rows in the batch
  (``l2`` times the mean squared norm per example), not Adam's ``weight_decay``, which would need
  dense updates.
* **Mini-batches** are built once per epoch with numpy, vectorised: a permutation of the training
  pairs plus all negatives of the epoch drawn in one call (uniform over the catalogue; with
  ``reject_positives`` the few draws that hit an item of the user's training data are redrawn, in
  vectorised rounds).
* **Reproducibility**: ``fit`` starts from scratch; the initial weights come from a
  ``torch.Generator`` seeded with ``seed`` and all sampling from ``numpy.random.default_rng(seed)``;
  the torch thread count is set from ``n_threads`` for the duration of ``fit``/``partial_fit`` only.
  The same data, config and thread count give bit-identical weights.
* **Scoring** (``needs_user_history = False``): a row whose user is a known internal id (in the
  table and trained on at least one event) is scored with that user's own factors and bias. Any
  other row (id -1, an id beyond the table, or a user row that never saw an event) is *folded in*:
  its user vector is the mean of the item factors of the items in that row's history (items beyond
  the catalogue are ignored; a zero vector for an empty history) and its user bias is 0.
* **partial_fit** continues from the current weights for ``partial_fit_epochs`` epochs on the new
  data only, with a fresh optimiser. User and item tables grow to the new id spaces first: existing
  rows are kept unchanged, new factor rows are drawn from ``N(0, init_std²)`` and new biases are 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import ModelConfig, Recommender, register

#: Rounds of vectorised redraws used to reject negatives that are training positives of the user.
_REJECTION_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class MFConfig(ModelConfig):
    """Hyperparameters shared by the matrix-factorisation models (subclasses change the defaults).

    ``l2`` weighs the squared norm of the factor (and bias) rows used by each example, averaged over
    the batch; ``init_std`` is the standard deviation of the initial factors; ``use_bias`` adds the
    user, item and global biases to the dot product.
    """

    n_factors: int = 64
    n_epochs: int = 30
    learning_rate: float = 0.005
    l2: float = 0.0
    batch_size: int = 1024
    init_std: float = 0.1
    use_bias: bool = True
    partial_fit_epochs: int = 3
    n_threads: int = 1

    def __post_init__(self) -> None:
        positive_ints = ("n_factors", "batch_size", "n_threads")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("n_epochs", "partial_fit_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, got {self.learning_rate!r}")
        if not self.l2 >= 0:
            raise ValueError(f"l2: expected a non-negative number, got {self.l2!r}")
        if not self.init_std >= 0:
            raise ValueError(f"init_std: expected a non-negative number, got {self.init_std!r}")


@dataclasses.dataclass(frozen=True)
class ImplicitMFConfig(MFConfig):
    """Implicit-feedback models: ``n_negatives`` sampled items per positive, uniform over the catalogue;
    ``reject_positives`` redraws a negative that is one of the user's training items."""

    n_negatives: int = 1
    reject_positives: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.n_negatives, int) or self.n_negatives < 1:
            raise ValueError(f"n_negatives: expected a positive integer, got {self.n_negatives!r}")


class MFNetwork(nn.Module):
    """The bilinear scorer: ``x_ui = g + b_u + b_i + p_u · q_i``.

    All parameters are sparse embeddings (the global bias is a ``[1, 1]`` table) so that lazy Adam
    updates only the rows of a batch.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int) -> None:
        super().__init__()
        self.user_factors = nn.Embedding(n_users, n_factors, sparse=True)  # [n_users, n_factors]
        self.item_factors = nn.Embedding(n_items, n_factors, sparse=True)  # [n_items, n_factors]
        self.user_bias = nn.Embedding(n_users, 1, sparse=True)  # [n_users, 1]
        self.item_bias = nn.Embedding(n_items, 1, sparse=True)  # [n_items, 1]
        self.global_bias = nn.Embedding(1, 1, sparse=True)  # [1, 1]

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MFNetwork:
        """A network holding copies of ``arrays`` (keys as in :meth:`to_arrays`)."""
        user_factors = np.asarray(arrays["user_factors"], dtype=np.float32)
        item_factors = np.asarray(arrays["item_factors"], dtype=np.float32)
        network = cls(user_factors.shape[0], item_factors.shape[0], user_factors.shape[1])
        with torch.no_grad():
            network.user_factors.weight.copy_(torch.from_numpy(user_factors))
            network.item_factors.weight.copy_(torch.from_numpy(item_factors))
            network.user_bias.weight.copy_(torch.from_numpy(np.asarray(arrays["user_bias"], np.float32)[:, None]))
            network.item_bias.weight.copy_(torch.from_numpy(np.asarray(arrays["item_bias"], np.float32)[:, None]))
            network.global_bias.weight.fill_(float(np.asarray(arrays["global_bias"]).reshape(-1)[0]))
        return network

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the weights: factors ``[n, n_factors]``, biases ``[n]``, global bias ``[1]``."""
        return {
            "user_factors": self.user_factors.weight.detach().numpy().copy(),
            "item_factors": self.item_factors.weight.detach().numpy().copy(),
            "user_bias": self.user_bias.weight.detach().numpy()[:, 0].copy(),
            "item_bias": self.item_bias.weight.detach().numpy()[:, 0].copy(),
            "global_bias": self.global_bias.weight.detach().numpy().reshape(1).copy(),
        }

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor, use_bias: bool) -> torch.Tensor:
        """Scores of users ``[batch]`` against items ``[batch]`` or ``[batch, n]``: same shape as ``items``."""
        user_vectors = self.user_factors(users)  # [batch, n_factors]
        item_vectors = self.item_factors(items)  # [batch, (n,) n_factors]
        if items.dim() == 2:
            scores = torch.einsum("bf,bnf->bn", user_vectors, item_vectors)
        else:
            scores = (user_vectors * item_vectors).sum(dim=-1)
        if use_bias:
            user_bias = self.user_bias(users)[:, 0]  # [batch]
            if items.dim() == 2:
                user_bias = user_bias[:, None]
            global_bias = self.global_bias(torch.zeros_like(users))[:, 0]  # [batch]; a lookup keeps grads sparse
            if items.dim() == 2:
                global_bias = global_bias[:, None]
            scores = scores + global_bias + user_bias + self.item_bias(items)[..., 0]
        return scores

    def penalty(self, users: torch.Tensor, items: torch.Tensor, use_bias: bool) -> torch.Tensor:
        """Squared norms of the rows used by each example, summed per example ``[batch]``.

        ``items`` is ``[batch, n]``: the norms of the ``n`` items of an example are averaged so that
        the user and each item column carry the same weight whatever the number of negatives.
        """
        norms = self.user_factors(users).pow(2).sum(-1) + self.item_factors(items).pow(2).sum(-1).sum(-1)
        if use_bias:
            norms = norms + self.user_bias(users)[:, 0].pow(2) + self.item_bias(items)[..., 0].pow(2).sum(-1)
        return norms


class _MatrixFactorization(Recommender):
    """Shared estimator: data preparation, the training loop, growth, scoring and persistence.

    Subclasses set ``name``/``Config`` and write :meth:`_loss`; implicit-feedback models also draw
    negatives (:meth:`_epoch_negatives`).
    """

    Config: ClassVar[type[ModelConfig]] = MFConfig
    supports_partial_fit: ClassVar[bool] = True
    needs_user_history: ClassVar[bool] = False
    handles_new_items: ClassVar[bool] = True

    config: MFConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._network: MFNetwork | None = None
        #: ``[n_users]`` bool: user rows trained on at least one event (others are folded in).
        self._user_trained = np.zeros(0, dtype=bool)
        self._n_partial_fits = 0
        #: mean training loss of each epoch of the last ``fit``/``partial_fit`` call.
        self.epoch_losses: list[float] = []

    # ----------------------------------------------------------------- training
    def _fit(self, interactions: Interactions) -> None:
        config = self.config
        generator = torch.Generator().manual_seed(config.seed)
        n_users, n_items, n_factors = interactions.n_users, interactions.n_items, config.n_factors
        self._network = MFNetwork.from_arrays(
            {
                "user_factors": _normal(generator, (n_users, n_factors), config.init_std),
                "item_factors": _normal(generator, (n_items, n_factors), config.init_std),
                "user_bias": np.zeros(n_users, dtype=np.float32),
                "item_bias": np.zeros(n_items, dtype=np.float32),
                "global_bias": np.array([self._initial_global_bias(interactions)], dtype=np.float32),
            }
        )
        self._user_trained = np.zeros(n_users, dtype=bool)
        self._n_partial_fits = 0
        self._train(interactions, config.n_epochs, np.random.default_rng(config.seed))

    def _partial_fit(self, interactions: Interactions) -> None:
        network = self._require_network()
        config = self.config
        self._n_partial_fits += 1
        # one stream of randomness per partial_fit call, so a replayed sequence of calls is reproducible
        generator = torch.Generator().manual_seed(_mix_seed(config.seed, self._n_partial_fits))
        arrays = network.to_arrays()
        n_new_users = interactions.n_users - arrays["user_factors"].shape[0]
        n_new_items = interactions.n_items - arrays["item_factors"].shape[0]
        if n_new_users > 0 or n_new_items > 0:
            arrays = _grown(arrays, max(n_new_users, 0), max(n_new_items, 0), generator, config.init_std)
            self._network = MFNetwork.from_arrays(arrays)
            self._user_trained = np.concatenate([self._user_trained, np.zeros(max(n_new_users, 0), dtype=bool)])
        rng = np.random.default_rng([config.seed, self._n_partial_fits])
        self._train(interactions, config.partial_fit_epochs, rng)

    def _initial_global_bias(self, interactions: Interactions) -> float:
        return 0.0

    def _training_pairs(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training examples: users ``[n]``, items ``[n]``, targets ``[n]`` float32.

        Implicit models train on each distinct (user, item) pair once (target 1).
        """
        keys = np.unique(interactions.user_ids * np.int64(interactions.n_items) + interactions.item_ids)
        users, items = np.divmod(keys, np.int64(interactions.n_items))
        return users, items, np.ones(len(keys), dtype=np.float32)

    def _train(self, interactions: Interactions, n_epochs: int, rng: np.random.Generator) -> None:
        network = self._require_network()
        config = self.config
        users, items, targets = self._training_pairs(interactions)
        self._user_trained[np.unique(users)] = True
        self.epoch_losses = []
        if n_epochs == 0 or len(users) == 0:
            return
        positive_keys = np.unique(users * np.int64(interactions.n_items) + items)
        optimizer = torch.optim.SparseAdam(list(network.parameters()), lr=config.learning_rate)
        n_examples = len(users)
        with _torch_threads(config.n_threads):
            network.train()
            for _ in range(n_epochs):
                order = rng.permutation(n_examples)
                epoch_users = torch.from_numpy(users[order])
                epoch_items = torch.from_numpy(items[order])
                epoch_targets = torch.from_numpy(targets[order])
                negatives = self._epoch_negatives(users[order], positive_keys, interactions.n_items, rng)
                epoch_negatives = None if negatives is None else torch.from_numpy(negatives)
                total = 0.0
                for start in range(0, n_examples, config.batch_size):
                    batch = slice(start, start + config.batch_size)
                    loss = self._loss(
                        network,
                        epoch_users[batch],
                        epoch_items[batch],
                        epoch_targets[batch],
                        None if epoch_negatives is None else epoch_negatives[batch],
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(epoch_users[batch])
                self.epoch_losses.append(total / n_examples)
            network.eval()

    def _epoch_negatives(
        self, users: np.ndarray, positive_keys: np.ndarray, n_items: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Negative items ``[len(users), n_negatives]`` for the examples of an epoch; None when unused."""
        return None

    def _loss(
        self,
        network: MFNetwork,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean loss of a batch: users/items/targets ``[batch]``, negatives ``[batch, n_negatives]``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- scoring
    def _user_vectors(self, histories: Histories) -> tuple[np.ndarray, np.ndarray]:
        """User factors ``[batch, n_factors]`` and user biases ``[batch]`` of each row (see module doc)."""
        arrays = self._arrays()
        item_factors = arrays["item_factors"]
        n_table_items = item_factors.shape[0]
        users = histories.users
        known = (users >= 0) & (users < len(self._user_trained))
        known[known] = self._user_trained[users[known]]
        vectors = np.zeros((len(histories), item_factors.shape[1]), dtype=np.float32)
        biases = np.zeros(len(histories), dtype=np.float32)
        vectors[known] = arrays["user_factors"][users[known]]
        biases[known] = arrays["user_bias"][users[known]]
        unknown = np.flatnonzero(~known)
        if len(unknown):
            folded = histories.select(unknown)
            rows = np.repeat(np.arange(len(folded)), folded.lengths())
            inside = (folded.items >= 0) & (folded.items < n_table_items)
            rows, items = rows[inside], folded.items[inside]
            counts = np.bincount(rows, minlength=len(folded)).astype(np.float32)
            weights = 1.0 / counts[rows]
            mean_of_items = sp.csr_matrix((weights, (rows, items)), shape=(len(folded), n_table_items))
            vectors[unknown] = np.asarray(mean_of_items @ item_factors, dtype=np.float32)
        return vectors, biases

    def _score(self, histories: Histories) -> np.ndarray:
        arrays = self._arrays()
        vectors, user_bias = self._user_vectors(histories)
        scores = vectors @ arrays["item_factors"].T  # [batch, n_items]
        if self.config.use_bias:
            scores += arrays["item_bias"][None, :] + user_bias[:, None] + arrays["global_bias"][0]
        return scores.astype(np.float32, copy=False)

    # ----------------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        state = self._require_network().to_arrays()
        state["user_trained"] = self._user_trained.copy()
        state["n_partial_fits"] = np.array([self._n_partial_fits], dtype=np.int64)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._network = MFNetwork.from_arrays(state)
        self._user_trained = np.asarray(state["user_trained"], dtype=bool).copy()
        self._n_partial_fits = int(np.asarray(state["n_partial_fits"]).reshape(-1)[0])

    # ----------------------------------------------------------------- helpers
    def _require_network(self) -> MFNetwork:
        if self._network is None:
            raise RuntimeError(f"model {self.name!r} is not fitted: call fit first")
        return self._network

    def _arrays(self) -> dict[str, np.ndarray]:
        """Read-only numpy views of the current weights (no copy)."""
        network = self._require_network()
        return {
            "user_factors": network.user_factors.weight.detach().numpy(),
            "item_factors": network.item_factors.weight.detach().numpy(),
            "user_bias": network.user_bias.weight.detach().numpy()[:, 0],
            "item_bias": network.item_bias.weight.detach().numpy()[:, 0],
            "global_bias": network.global_bias.weight.detach().numpy().reshape(1),
        }


class _ImplicitMatrixFactorization(_MatrixFactorization):
    """Implicit feedback: each distinct (user, item) pair is a positive, negatives are sampled."""

    Config: ClassVar[type[ModelConfig]] = ImplicitMFConfig
    config: ImplicitMFConfig

    def _epoch_negatives(
        self, users: np.ndarray, positive_keys: np.ndarray, n_items: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Negative item ids ``[len(users), n_negatives]``, uniform over ``[0, n_items)``.

        With ``reject_positives``, draws that are a training positive of their user are redrawn, all
        at once, for up to a fixed number of rounds (a user who has consumed nearly the whole
        catalogue may keep a few positives as negatives).
        """
        negatives = rng.integers(0, n_items, size=(len(users), self.config.n_negatives), dtype=np.int64)
        if not self.config.reject_positives or len(positive_keys) == 0:
            return negatives
        row_users = np.broadcast_to(users[:, None], negatives.shape) * np.int64(n_items)
        for _ in range(_REJECTION_ROUNDS):
            hits = np.flatnonzero(_contains(positive_keys, (row_users + negatives).ravel()))
            if len(hits) == 0:
                break
            negatives.ravel()[hits] = rng.integers(0, n_items, size=len(hits), dtype=np.int64)
        return negatives

    def _loss(
        self,
        network: MFNetwork,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
    ) -> torch.Tensor:
        if negatives is None:
            raise RuntimeError(f"model {self.name!r}: training batch without negatives")
        use_bias = self.config.use_bias
        positive = network.pair_scores(users, items, use_bias)  # [batch]
        negative = network.pair_scores(users, negatives, use_bias)  # [batch, n_negatives]
        loss = self._implicit_loss(positive, negative).mean()
        if self.config.l2 > 0:
            loss = loss + self.config.l2 * _implicit_penalty(network, users, items, negatives, use_bias).mean()
        return loss

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Loss per example ``[batch]`` from positive scores ``[batch]`` and negative ``[batch, n_negatives]``."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class BPRMFConfig(ImplicitMFConfig):
    """Defaults tuned on MovieLens-100K leave-one-out validation items (see the class docstring)."""

    n_factors: int = 64
    n_epochs: int = 30
    learning_rate: float = 0.005
    l2: float = 0.0
    n_negatives: int = 1


@register
class BPRMF(_ImplicitMatrixFactorization):
    """Matrix factorisation trained with the BPR pairwise loss on implicit feedback.

    Loss per positive ``(u, i)`` with sampled negatives ``j_1..j_n``:
    ``mean_k -log σ(x_ui - x_uj_k) + l2 · (‖p_u‖² + ‖q_i‖² + mean_k ‖q_jk‖² + biases²)``.
    The user and global biases cancel in the difference, so only the item bias is learned.
    """

    name = "mf-bpr"
    Config = BPRMFConfig

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(positive[:, None] - negative).mean(dim=1)


@dataclasses.dataclass(frozen=True)
class BCEMFConfig(ImplicitMFConfig):
    """Defaults tuned on MovieLens-100K leave-one-out validation items."""

    n_factors: int = 64
    n_epochs: int = 30
    learning_rate: float = 0.005
    l2: float = 0.0
    n_negatives: int = 4


@register
class BCEMF(_ImplicitMatrixFactorization):
    """Matrix factorisation trained with binary cross-entropy on implicit feedback.

    Each positive ``(u, i)`` has label 1 and its ``n_negatives`` sampled items label 0; the loss is
    ``BCE(σ(x_ui), 1) + mean_k BCE(σ(x_uj_k), 0)`` plus the same L2 penalty as :class:`BPRMF`.
    Scores are the logits ``x_ui``.
    """

    name = "mf-bce"
    Config = BCEMFConfig

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(positive) - F.logsigmoid(-negative).mean(dim=1)


@dataclasses.dataclass(frozen=True)
class MSEMFConfig(MFConfig):
    """Defaults tuned on MovieLens-100K ratings."""

    n_factors: int = 32
    n_epochs: int = 30
    learning_rate: float = 0.005
    l2: float = 0.05


@register
class MSEMF(_MatrixFactorization):
    """Biased matrix factorisation for explicit ratings, trained with mean squared error.

    ``r̂_ui = μ + b_u + b_i + p_u · q_i`` where μ starts at the mean training rating (and is trained
    with the rest). The loss per rating is ``(r̂_ui - r_ui)² + l2 · (‖p_u‖² + ‖q_i‖² + b_u² + b_i²)``.
    When a (user, item) pair was rated more than once, the latest rating (by timestamp) is used.
    :meth:`predict` returns ratings; :meth:`score` ranks items by predicted rating.
    """

    name = "mf-mse"
    Config = MSEMFConfig

    def _initial_global_bias(self, interactions: Interactions) -> float:
        return float(np.mean(interactions.values, dtype=np.float64))

    def _training_pairs(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ordered = interactions.sorted()  # by user then time: the last row of each pair is its latest
        keys = ordered.user_ids * np.int64(interactions.n_items) + ordered.item_ids
        reversed_keys = keys[::-1]
        _, first_in_reversed = np.unique(reversed_keys, return_index=True)
        latest = len(keys) - 1 - first_in_reversed
        return ordered.user_ids[latest], ordered.item_ids[latest], ordered.values[latest]

    def _loss(
        self,
        network: MFNetwork,
        users: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
    ) -> torch.Tensor:
        use_bias = self.config.use_bias
        predictions = network.pair_scores(users, items, use_bias)  # [batch]
        loss = (predictions - targets).pow(2).mean()
        if self.config.l2 > 0:
            loss = loss + self.config.l2 * network.penalty(users, items[:, None], use_bias).mean()
        return loss

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings ``[n]`` float32 for the pairs ``(user_ids[k], item_ids[k])``.

        A user or item outside the tables (or a user never trained on) contributes no factors and no
        bias, so an unknown user gets ``μ + b_i`` and an unknown item ``μ + b_u``.
        """
        self._check_fitted()
        user_ids = np.asarray(user_ids, dtype=np.int64).ravel()
        item_ids = np.asarray(item_ids, dtype=np.int64).ravel()
        if len(user_ids) != len(item_ids):
            raise ValueError(f"item_ids: expected {len(user_ids)} ids like user_ids, got {len(item_ids)}")
        arrays = self._arrays()
        n_items = arrays["item_factors"].shape[0]
        known_users = (user_ids >= 0) & (user_ids < len(self._user_trained))
        known_users[known_users] = self._user_trained[user_ids[known_users]]
        known_items = (item_ids >= 0) & (item_ids < n_items)
        safe_users = np.where(known_users, user_ids, 0)
        safe_items = np.where(known_items, item_ids, 0)
        user_vectors = np.where(known_users[:, None], arrays["user_factors"][safe_users], 0.0)
        item_vectors = np.where(known_items[:, None], arrays["item_factors"][safe_items], 0.0)
        predictions = (user_vectors * item_vectors).sum(axis=1)
        if self.config.use_bias:
            predictions += arrays["global_bias"][0]
            predictions += np.where(known_users, arrays["user_bias"][safe_users], 0.0)
            predictions += np.where(known_items, arrays["item_bias"][safe_items], 0.0)
        return predictions.astype(np.float32)


# --------------------------------------------------------------------- helpers
def _implicit_penalty(
    network: MFNetwork, users: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor, use_bias: bool
) -> torch.Tensor:
    """Per-example L2 penalty ``[batch]``: user + positive item + mean over the negatives."""
    user_and_positive = network.penalty(users, items[:, None], use_bias)
    negative_items = network.item_factors(negatives).pow(2).sum(-1)  # [batch, n_negatives]
    if use_bias:
        negative_items = negative_items + network.item_bias(negatives)[..., 0].pow(2)
    return user_and_positive + negative_items.mean(dim=1)


def _normal(generator: torch.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    return (torch.randn(shape, generator=generator) * std).numpy().astype(np.float32)


def _grown(
    arrays: dict[str, np.ndarray], n_new_users: int, n_new_items: int, generator: torch.Generator, std: float
) -> dict[str, np.ndarray]:
    """``arrays`` with ``n_new_users``/``n_new_items`` rows appended: factors ``N(0, std²)``, biases 0."""
    n_factors = arrays["user_factors"].shape[1]
    return {
        "user_factors": np.concatenate([arrays["user_factors"], _normal(generator, (n_new_users, n_factors), std)]),
        "item_factors": np.concatenate([arrays["item_factors"], _normal(generator, (n_new_items, n_factors), std)]),
        "user_bias": np.concatenate([arrays["user_bias"], np.zeros(n_new_users, dtype=np.float32)]),
        "item_bias": np.concatenate([arrays["item_bias"], np.zeros(n_new_items, dtype=np.float32)]),
        "global_bias": arrays["global_bias"],
    }


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``keys`` occur in the sorted unique array ``sorted_keys``."""
    positions = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[positions] == keys


def _mix_seed(seed: int, counter: int) -> int:
    """A 63-bit seed derived from ``seed`` and a call counter (independent torch streams per call)."""
    return int(np.random.SeedSequence([seed, counter]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@contextmanager
def _torch_threads(n_threads: int) -> Iterator[None]:
    """Run the body with ``n_threads`` torch intra-op threads, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
