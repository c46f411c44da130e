"""Matrix-factorisation recommenders: one bilinear network, three losses.

Every model here scores a (user, item) pair as

    x_ui = μ + b_u + b_i + p_u · q_i      (μ: global bias, b: user/item biases, p/q: user/item factors)

and differs only in what it is trained to do with that score:

* ``mf-bpr`` (:class:`BPRMF`) — implicit feedback, Bayesian personalised ranking: the pairwise loss
  ``-log σ(x_ui - x_uj)`` for a consumed item ``i`` against uniformly sampled items ``j``.
* ``mf-bce`` (:class:`BCEMF`) — implicit feedback, binary cross-entropy: the consumed item is a
  positive (label 1) and ``n_negatives`` sampled items are negatives (label 0).
* ``mf-mse`` (:class:`MSEMF`) — explicit ratings (``Interactions.values``), mean squared error; it
  also predicts ratings (:meth:`MSEMF.predict`).

Training details shared by all three:

* **Optimiser: lazy (sparse) Adam** (``torch.optim.SparseAdam``). The parameters are two
  ``nn.Embedding(sparse=True)`` tables (user rows ``[p_u, b_u]``, item rows ``[q_i, b_i]``; the
  global bias is a constant), so one step touches only the rows in the mini-batch:
  the cost of a step does not grow with the catalogue or the user base, which keeps full training
  and the frequent small ``partial_fit`` calls of the online updater cheap. Adam's per-row step sizes
  also make the learning rate far less sensitive than plain SGD's on the long-tailed item
  frequencies of recommendation data, and mini-batches keep the Python overhead per example low.
  Regularisation is an L2 penalty on the rows in the batch (``l2`` times the mean squared norm per
  example), not Adam's ``weight_decay``, which would need dense updates. The learning rate decays
  geometrically over the epochs of a call (``final_lr_ratio``).
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
  data only, with a fresh optimiser and the same learning-rate schedule. User and item tables grow
  to the new id spaces first: existing rows are kept unchanged, new factor rows are drawn from
  ``N(0, init_std²)`` and new biases are 0. Its randomness comes from ``seed`` and the number of
  ``partial_fit`` calls so far (saved with the model), so a replayed sequence of calls is reproducible.

``mf-mse`` ranks by predicted rating, which ignores what users choose to rate, so it is a poor
top-K ranker; it is there for rating prediction (:meth:`MSEMF.predict`). The three models' figures on
ml-100k, ranking and rating, are in docs/results.md ("Baselines", "Rating prediction").
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import ModelConfig, Recommender, register
from liverec.models.torch_utils import torch_threads

#: Rounds of vectorised redraws used to reject negatives that are training positives of the user.
_REJECTION_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class MFConfig(ModelConfig):
    """Hyperparameters shared by the matrix-factorisation models (each model's config sets its defaults).

    * ``n_factors`` — width of the user and item factor vectors.
    * ``n_epochs`` — passes over the training pairs in ``fit``; ``partial_fit_epochs`` in ``partial_fit``.
    * ``learning_rate`` — Adam's step size at the first epoch of a call; it decays geometrically to
      ``learning_rate * final_lr_ratio`` at the last epoch (1.0: constant). The decay removes most of
      the epoch-to-epoch jitter of the ranking quality.
    * ``l2`` — weight of the squared norm of the user and item rows (factors and biases) each example
      uses, averaged over the batch.
    * ``batch_size`` — training examples (positives or ratings) per optimiser step.
    * ``init_std`` — standard deviation of the initial factors (biases start at 0).
    * ``use_bias`` — add ``μ + b_u + b_i`` to the dot product.
    * ``n_threads`` — torch intra-op threads while training. 1 by default: steps are small sparse
      updates dominated by per-operation overhead, and on a shared 2-core machine a second thread
      was measured to slow training down many times over (threads spin while waiting for a core).
    """

    n_factors: int = 64
    n_epochs: int = 30
    learning_rate: float = 0.01
    final_lr_ratio: float = 1.0
    l2: float = 0.0
    batch_size: int = 1024
    init_std: float = 0.1
    use_bias: bool = True
    partial_fit_epochs: int = 3
    n_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("n_factors", "batch_size", "n_threads"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("n_epochs", "partial_fit_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, got {self.learning_rate!r}")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio: expected a number in (0, 1], got {self.final_lr_ratio!r}")
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
    """The bilinear scorer ``x_ui = μ + b_u + b_i + p_u · q_i``.

    A user row holds ``[p_u, b_u]`` and an item row ``[q_i, b_i]`` (``n_factors + 1`` columns), so a
    batch reads and updates two sparse tables only (every extra table costs a sparse-gradient
    coalesce and an optimiser update per step). The global bias ``μ`` is a constant buffer, not a
    trained parameter: the item biases can absorb any offset, and a fixed ``μ`` (the mean rating for
    ``mf-mse``) keeps the biases centred so that ``l2`` shrinks them towards it.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int, global_bias: float = 0.0) -> None:
        super().__init__()
        self.n_factors = n_factors
        self.users = nn.Embedding(n_users, n_factors + 1, sparse=True)  # [n_users, n_factors + 1]
        self.items = nn.Embedding(n_items, n_factors + 1, sparse=True)  # [n_items, n_factors + 1]
        self.global_bias: torch.Tensor
        self.register_buffer("global_bias", torch.tensor(float(global_bias), dtype=torch.float32))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MFNetwork:
        """A network holding copies of ``arrays`` (keys and shapes as in :meth:`to_arrays`)."""
        user_factors = np.asarray(arrays["user_factors"], dtype=np.float32)
        item_factors = np.asarray(arrays["item_factors"], dtype=np.float32)
        global_bias = float(np.asarray(arrays["global_bias"]).reshape(-1)[0])
        network = cls(user_factors.shape[0], item_factors.shape[0], user_factors.shape[1], global_bias)
        user_rows = np.column_stack([user_factors, np.asarray(arrays["user_bias"], dtype=np.float32)])
        item_rows = np.column_stack([item_factors, np.asarray(arrays["item_bias"], dtype=np.float32)])
        with torch.no_grad():
            network.users.weight.copy_(torch.from_numpy(user_rows))
            network.items.weight.copy_(torch.from_numpy(item_rows))
        return network

    def to_arrays(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The weights: factors ``[n, n_factors]``, biases ``[n]``, global bias ``[1]`` (views unless ``copy``)."""
        users = self.users.weight.detach().numpy()
        items = self.items.weight.detach().numpy()
        f = self.n_factors
        arrays = {
            "user_factors": users[:, :f],
            "item_factors": items[:, :f],
            "user_bias": users[:, f],
            "item_bias": items[:, f],
            "global_bias": self.global_bias.detach().numpy().reshape(1),
        }
        return {key: np.array(value, copy=True) for key, value in arrays.items()} if copy else arrays

    def scores(
        self, user_rows: torch.Tensor, item_rows: torch.Tensor, user_bias: bool, item_bias: bool
    ) -> torch.Tensor:
        """Scores of user rows ``[batch, n_factors + 1]`` against item rows ``[batch, (n,) n_factors + 1]``.

        Returns ``[batch]`` or ``[batch, n]`` (the shape of ``item_rows`` without its last axis).
        ``user_bias`` adds ``μ + b_u``, ``item_bias`` adds ``b_i``.
        """
        f = self.n_factors
        if item_rows.dim() == 3:
            # broadcast multiply + sum: much faster on CPU than einsum's batch of [1, f] @ [f, n] matmuls
            scores = (user_rows[:, None, :f] * item_rows[..., :f]).sum(dim=-1)
            user_terms = user_rows[:, f:]  # [batch, 1], broadcast over the n items
        else:
            scores = (user_rows[:, :f] * item_rows[:, :f]).sum(dim=-1)
            user_terms = user_rows[:, f]
        if user_bias:
            scores = scores + user_terms + self.global_bias
        if item_bias:
            scores = scores + item_rows[..., f]
        return scores


class _MatrixFactorization(Recommender):
    """Shared estimator: data preparation, the training loop, growth, scoring and persistence.

    Subclasses set ``name``/``Config`` and write :meth:`_loss`; implicit-feedback models also draw
    negatives (:meth:`_epoch_negatives`).
    """

    Config: ClassVar[type[ModelConfig]] = MFConfig
    supports_partial_fit = True
    needs_user_history = False
    handles_new_items = True
    keeps_user_parameters = True
    #: False when the loss cannot identify ``μ + b_u`` (it cancels in BPR's score differences): the
    #: user biases are then left out of training and stay 0.
    _learns_user_bias: ClassVar[bool] = True

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
        global_bias = self._global_bias(interactions) if config.use_bias else 0.0
        self._network = MFNetwork.from_arrays(
            {
                "user_factors": _normal(generator, (n_users, n_factors), config.init_std),
                "item_factors": _normal(generator, (n_items, n_factors), config.init_std),
                "user_bias": np.zeros(n_users, dtype=np.float32),
                "item_bias": np.zeros(n_items, dtype=np.float32),
                "global_bias": np.array([global_bias], dtype=np.float32),
            }
        )
        self._user_trained = np.zeros(n_users, dtype=bool)
        self._n_partial_fits = 0
        self._train(interactions, config.n_epochs, np.random.default_rng(config.seed))

    def _partial_fit(self, interactions: Interactions) -> None:
        config = self.config
        self._n_partial_fits += 1
        # one stream of randomness per partial_fit call, so a replayed sequence of calls is reproducible
        seed = _mix_seed(config.seed, self._n_partial_fits)
        arrays = self._require_network().to_arrays()
        n_new_users = max(0, interactions.n_users - arrays["user_factors"].shape[0])
        n_new_items = max(0, interactions.n_items - arrays["item_factors"].shape[0])
        if n_new_users or n_new_items:
            generator = torch.Generator().manual_seed(seed)
            self._network = MFNetwork.from_arrays(_grown(arrays, n_new_users, n_new_items, generator, config.init_std))
            self._user_trained = np.concatenate([self._user_trained, np.zeros(n_new_users, dtype=bool)])
        self._train(interactions, config.partial_fit_epochs, np.random.default_rng(seed))

    def _global_bias(self, interactions: Interactions) -> float:
        """The constant ``μ`` of the score (0 for implicit feedback)."""
        return 0.0

    def _bias_terms(self) -> tuple[bool, bool]:
        """Whether scores include ``μ + b_u`` and ``b_i``."""
        return self.config.use_bias and self._learns_user_bias, self.config.use_bias

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
        with torch_threads(config.n_threads):
            for epoch in tqdm(range(n_epochs), desc=self.name, unit="epoch", disable=not self.progress, leave=False):
                # learning rate decays geometrically from learning_rate to learning_rate * final_lr_ratio
                decay = config.final_lr_ratio ** (epoch / (n_epochs - 1)) if n_epochs > 1 else 1.0
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate * decay
                order = rng.permutation(n_examples)
                epoch_users = torch.from_numpy(users[order])
                epoch_items = torch.from_numpy(items[order])
                epoch_targets = torch.from_numpy(targets[order])
                negatives = self._epoch_negatives(users[order], positive_keys, interactions.n_items, rng)
                epoch_negatives = None if negatives is None else torch.from_numpy(negatives)
                total = torch.zeros(())
                for start in range(0, n_examples, config.batch_size):
                    batch = slice(start, start + config.batch_size)
                    batch_users = epoch_users[batch]
                    loss = self._loss(
                        network,
                        batch_users,
                        epoch_items[batch],
                        epoch_targets[batch],
                        None if epoch_negatives is None else epoch_negatives[batch],
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.detach() * len(batch_users)
                self.epoch_losses.append(float(total) / n_examples)

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
        arrays = self._require_network().to_arrays(copy=False)
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
            mean_of_items = sp.csr_matrix((1.0 / counts[rows], (rows, items)), shape=(len(folded), n_table_items))
            vectors[unknown] = np.asarray(mean_of_items @ item_factors, dtype=np.float32)
        return vectors, biases

    def _score(self, histories: Histories) -> np.ndarray:
        arrays = self._require_network().to_arrays(copy=False)
        vectors, user_bias = self._user_vectors(histories)
        scores = vectors @ arrays["item_factors"].T  # [batch, n_items]
        if self.config.use_bias:
            scores += arrays["item_bias"][None, :] + (user_bias + arrays["global_bias"][0])[:, None]
        return scores.astype(np.float32, copy=False)

    def _forget_users(self, keep: np.ndarray) -> int:
        """Delete the user rows (factors, bias, trained flag) outside ``keep``; the rest keep their values."""
        arrays = self._require_network().to_arrays()
        rows = keep[: arrays["user_factors"].shape[0]]
        arrays["user_factors"] = arrays["user_factors"][rows]
        arrays["user_bias"] = arrays["user_bias"][rows]
        self._network = MFNetwork.from_arrays(arrays)
        self._user_trained = self._user_trained[keep[: len(self._user_trained)]]
        return int((~rows).sum())

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

    def _require_network(self) -> MFNetwork:
        if self._network is None:
            raise RuntimeError(f"model {self.name!r} is not fitted: call fit first")
        return self._network


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
        flat = negatives.reshape(-1)  # a view: redraws land in ``negatives``
        row_keys = np.repeat(users * np.int64(n_items), self.config.n_negatives)
        pending = np.arange(len(flat))
        for _ in range(_REJECTION_ROUNDS):
            pending = pending[_contains(positive_keys, row_keys[pending] + flat[pending])]
            if len(pending) == 0:
                break
            flat[pending] = rng.integers(0, n_items, size=len(pending), dtype=np.int64)
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
        user_bias, item_bias = self._bias_terms()
        user_rows = network.users(users)  # [batch, n_factors + 1]
        positive_rows = network.items(items)  # [batch, n_factors + 1]
        negative_rows = network.items(negatives)  # [batch, n_negatives, n_factors + 1]
        positive = network.scores(user_rows, positive_rows, user_bias, item_bias)  # [batch]
        negative = network.scores(user_rows, negative_rows, user_bias, item_bias)  # [batch, n_negatives]
        loss = self._implicit_loss(positive, negative).mean()
        if self.config.l2 > 0:
            # bias columns the loss does not use stay exactly 0, so whole rows can be penalised
            norms = user_rows.pow(2).sum(-1) + positive_rows.pow(2).sum(-1) + negative_rows.pow(2).sum(-1).mean(-1)
            loss = loss + self.config.l2 * norms.mean()
        return loss

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Loss per example ``[batch]`` from positive scores ``[batch]`` and negative ``[batch, n_negatives]``."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class BPRMFConfig(ImplicitMFConfig):
    """Defaults tuned on the MovieLens-100K leave-one-out validation items (NDCG@10 ≈ 0.07, ~10 s fit)."""

    n_factors: int = 128
    n_epochs: int = 40
    learning_rate: float = 0.01
    final_lr_ratio: float = 0.3
    l2: float = 0.003
    batch_size: int = 4096
    init_std: float = 0.01
    n_negatives: int = 1


@register
class BPRMF(_ImplicitMatrixFactorization):
    """Matrix factorisation trained with the BPR pairwise loss on implicit feedback.

    Loss per positive ``(u, i)`` with sampled negatives ``j_1..j_n``:
    ``mean_k -log σ(x_ui - x_ujk) + l2 · (‖[p_u, b_u]‖² + ‖[q_i, b_i]‖² + mean_k ‖[q_jk, b_jk]‖²)``.
    ``μ + b_u`` cancels in the difference, so only the item biases are learned (user biases stay 0).
    """

    name = "mf-bpr"
    Config = BPRMFConfig
    _learns_user_bias = False

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(positive[:, None] - negative).mean(dim=1)


@dataclasses.dataclass(frozen=True)
class BCEMFConfig(ImplicitMFConfig):
    """Defaults tuned on the MovieLens-100K leave-one-out validation items (NDCG@10 ≈ 0.07, ~15 s fit)."""

    n_factors: int = 128
    n_epochs: int = 25
    learning_rate: float = 0.005
    final_lr_ratio: float = 0.3
    l2: float = 0.001
    batch_size: int = 4096
    init_std: float = 0.01
    n_negatives: int = 4


@register
class BCEMF(_ImplicitMatrixFactorization):
    """Matrix factorisation trained with binary cross-entropy on implicit feedback.

    Each positive ``(u, i)`` has label 1 and its ``n_negatives`` sampled items label 0; the loss is
    ``-log σ(x_ui) - mean_k log(1 - σ(x_ujk))`` plus the same L2 penalty as :class:`BPRMF`.
    Scores are the logits ``x_ui``.
    """

    name = "mf-bce"
    Config = BCEMFConfig

    def _implicit_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(positive) - F.logsigmoid(-negative).mean(dim=1)


@dataclasses.dataclass(frozen=True)
class MSEMFConfig(MFConfig):
    """Defaults tuned on MovieLens-100K ratings (temporal and leave-one-out validation splits)."""

    n_factors: int = 64
    n_epochs: int = 30
    learning_rate: float = 0.01
    final_lr_ratio: float = 0.3
    l2: float = 0.1
    batch_size: int = 1024
    init_std: float = 0.1


@register
class MSEMF(_MatrixFactorization):
    """Biased matrix factorisation for explicit ratings, trained with mean squared error.

    ``r̂_ui = μ + b_u + b_i + p_u · q_i`` where μ is the mean training rating of ``fit`` (kept fixed,
    also by ``partial_fit``). The loss per rating is
    ``(r̂_ui - r_ui)² + l2 · (‖p_u‖² + b_u² + ‖q_i‖² + b_i²)``.
    When a (user, item) pair was rated more than once, the latest rating (by timestamp) is used.
    :meth:`predict` returns ratings; :meth:`score` ranks items by predicted rating. Its rating errors on
    ml-100k are in docs/results.md ("Rating prediction").
    """

    name = "mf-mse"
    Config = MSEMFConfig

    def _global_bias(self, interactions: Interactions) -> float:
        return float(np.mean(interactions.values, dtype=np.float64))

    def _training_pairs(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ordered = interactions.sorted()  # by user then time: the last row of each pair is its latest
        keys = ordered.user_ids * np.int64(interactions.n_items) + ordered.item_ids
        _, first_in_reversed = np.unique(keys[::-1], return_index=True)
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
        user_rows = network.users(users)  # [batch, n_factors + 1]
        item_rows = network.items(items)  # [batch, n_factors + 1]
        predictions = network.scores(user_rows, item_rows, *self._bias_terms())  # [batch]
        loss = (predictions - targets).pow(2).mean()
        if self.config.l2 > 0:
            loss = loss + self.config.l2 * (user_rows.pow(2).sum(-1) + item_rows.pow(2).sum(-1)).mean()
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
        arrays = self._require_network().to_arrays(copy=False)
        known_users = (user_ids >= 0) & (user_ids < len(self._user_trained))
        known_users[known_users] = self._user_trained[user_ids[known_users]]
        known_items = (item_ids >= 0) & (item_ids < arrays["item_factors"].shape[0])
        users, items = user_ids[known_users & known_items], item_ids[known_users & known_items]
        predictions = np.zeros(len(user_ids), dtype=np.float32)
        predictions[known_users & known_items] = np.einsum(
            "nf,nf->n", arrays["user_factors"][users], arrays["item_factors"][items]
        )
        if self.config.use_bias:
            predictions += arrays["global_bias"][0]
            predictions[known_users] += arrays["user_bias"][user_ids[known_users]]
            predictions[known_items] += arrays["item_bias"][item_ids[known_items]]
        return predictions


# --------------------------------------------------------------------- helpers
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
