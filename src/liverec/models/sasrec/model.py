"""SASRec: a causal self-attention sequence recommender (Kang & McAuley, ICDM 2018), LiveRec's main model.

The network (:class:`SASRecNetwork`) embeds a user's recent item sequence, adds learned positions,
runs ``n_layers`` pre-LayerNorm causal Transformer blocks and reads the user's representation at
the last position. Scores are dot products with the same item table that embeds the inputs, so a
retrieval index over item vectors serves it directly. There are no per-user parameters: a new event
changes the representation at once, and deleting a user's history forgets them.

Training (:class:`SASRec`) takes one sequence per user and puts a loss at every position (never one
sample per prefix). Three losses:

* ``softmax`` — full softmax cross-entropy over the catalogue (default; exact while it fits).
* ``sampled-softmax`` — cross-entropy over the target and ``n_negatives`` shared negatives drawn
  ∝ (count + 1)^``negative_power`` (1 by default: in proportion to popularity), with the log-Q
  correction so the estimate is unbiased for large catalogues.
* ``bce`` — binary cross-entropy with one uniform negative per position (the original paper's loss).

AdamW with linear warm-up; ``fit`` keeps a moving average of the weights (``average_decay``,
:class:`WeightAverage`), and early stopping judges it on validation NDCG@10 (the validation split passed to
``fit``, or each user's last training event held out when none is given). Where more than
``validation_users`` users are held out, a seeded sample of that many keeps its held-out events for early
stopping and every other user trains on theirs from the start; otherwise, with ``refit`` (the default), the
model is trained afresh for the chosen number of epochs on the training events plus the held-out ones,
each user's newest (docs/results.md). Without either the best epoch's weights are kept. Each epoch of
full training shuffles the runs of a user's items logged at one timestamp (``shuffle_gap_s``), whose order
in a log is arbitrary. Item id 0 is padding inside the network;
LiveRec item ``i`` is row ``i + 1``.

Optional side features (``side_features``, given by :meth:`SASRec.set_item_features`: genres,
categories): an item's vector is its id embedding plus the mean of its features' learned
embeddings, in the input sequence and in the output table alike, so retrieval's item vectors
include them. Items the table grows for in ``partial_fit`` start at the centroid of the known items
that share their features (or at the mean item when they have none).

``partial_fit(batch, learn)`` continues from the current weights. With a ``learn`` mask (the online
learner's default) the unmarked events are context: each sequence runs through the network whole,
but the loss is put only on the positions whose next item is a marked (new) event, so an update
does not learn a user's old items again every time it learns their new ones.

How the training runs, one process or a distributed job, is the model's training strategy
(:mod:`liverec.models.sasrec.training`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import RankingSplit, last_event_split, sample_validation, with_held_out
from liverec.evaluation.metrics import single_target_ndcg
from liverec.models.base import ModelConfig, Recommender, register
from liverec.models.sasrec.batching import learned_tail, padded_sequences, plan_epoch, trainable
from liverec.models.sasrec.config import SASRecConfig
from liverec.models.sasrec.loss import (
    NegativeSampling,
    SeenItems,
    loss_context,
    sampled_softmax_loss,
    sequence_loss,
)
from liverec.models.sasrec.network import SASRecNetwork
from liverec.models.sasrec.parallel_refit import RefitFailed, RefitProcess, RefitState
from liverec.models.sasrec.row_wise import AdamWSettings, SkippedSteps, adamw_rows, skipped_steps, write_rows
from liverec.models.sasrec.training import LocalTraining, Training
from liverec.models.torch_utils import available_cores, torch_threads

logger = logging.getLogger(__name__)


@register
class SASRec(Recommender):
    """``sasrec``: self-attentive sequential recommendation (see the module docstring)."""

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig
    supports_partial_fit = True
    handles_new_items = True
    learns_in_context = True
    uses_validation = True
    provides_vectors = True
    takes_item_features = True

    def __init__(
        self, config: ModelConfig | None = None, *, training: Training | None = None, **overrides: Any
    ) -> None:
        """``config`` / ``overrides``: the hyperparameters; ``training``: how training runs (default: one
        process, :class:`LocalTraining`; a distributed job gives its own strategy)."""
        super().__init__(config, **overrides)
        #: the training strategy (see :mod:`liverec.models.sasrec.training`)
        self.training: Training = LocalTraining() if training is None else training
        self.network: SASRecNetwork | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._sampling = NegativeSampling(np.zeros(0))
        self.history: list[dict[str, float]] = []
        self._steps = 0
        self._lr_scale = 1.0
        #: the epoch early stopping chose and its validation NDCG@10 (set by ``fit``)
        self.best_epoch, self.best_validation_ndcg = 0, -1.0
        #: epochs of the final training on every event (0: the model is the early-stopped one)
        self.refit_epochs = 0
        self._epoch_steps = 0  # optimiser steps in the last training epoch (``patience_steps``)
        self._skipped: SkippedSteps | None = None  # a row-wise fit's last step of each item row
        self._table_sum: _TableSum | None = None  # the item rows' sum, kept by row-wise updates (_item_row_sum)
        #: the loss ``fit`` trained with (``loss``, or what ``auto`` chose for the catalogue); updates follow it
        self.training_loss: str | None = None
        #: binary ``[n_described_items, n_features]`` side features (see :meth:`set_item_features`)
        self.item_features: sp.csr_matrix | None = None
        #: the features' names (column order of ``item_features``), when given
        self.feature_names: list[str] | None = None

    @property
    def item_log_q(self) -> np.ndarray:
        """``[n_items]`` log-probabilities of the sampled softmax's negatives (∝ (count + 1)^``negative_power``)."""
        return self._sampling.log_q

    @item_log_q.setter
    def item_log_q(self, log_q: np.ndarray) -> None:
        self._sampling = NegativeSampling(log_q)

    # ------------------------------------------------------------------------------------------ side features
    def context_length(self) -> int | None:
        """SASRec reads a user's last ``max_len`` items."""
        return self.config.max_len

    def has_item_features(self) -> bool:
        # features given to a model with side_features off are kept but never read (id-only model)
        return self.config.side_features and self.item_features is not None

    def set_item_features(self, features: sp.spmatrix | np.ndarray | None, names: Sequence[str] | None = None) -> Self:
        """Give the items' side features (genres, categories): a ``[n_items, n_features]`` 0/1 matrix.

        Row ``i`` describes internal item ``i``; items beyond the last row have no features. Used by
        the next ``fit`` when ``config.side_features`` is on (``None`` or an empty matrix: id-only).
        ``names``: one per column (e.g. ``ItemMetadata.genre_matrix()``'s vocabulary); once the model
        has names, a later call's columns are matched to them by name (new names are appended), so
        a catalogue's categories may come in any order. Without names, columns must keep their
        meaning between calls. On a model fitted with features, a call with more rows (new items) or
        more columns (new features) takes effect at once: new feature columns get rows at the mean
        feature vector, and the next ``partial_fit`` starts new items from their features.
        """
        if features is None:
            self.item_features, self.feature_names = None, None
            return self
        if np.ndim(features) != 2:
            raise ValueError(f"features: expected a 2-D [n_items, n_features] matrix, got shape {np.shape(features)}")
        matrix = sp.csr_matrix(features, dtype=np.float32)
        if names is not None:
            names = [str(name) for name in names]
            if len(names) != matrix.shape[1] or len(set(names)) != len(names):
                raise ValueError(f"names: expected {matrix.shape[1]} distinct names (one per column), got {names!r}")
            if self.feature_names is not None:  # known names keep their column; new ones are appended
                vocabulary = list(self.feature_names)
                column = {name: index for index, name in enumerate(vocabulary)}
                for name in names:
                    if name not in column:
                        column[name] = len(vocabulary)
                        vocabulary.append(name)
                coo = matrix.tocoo()
                columns = np.array([column[name] for name in names], dtype=np.int64)
                matrix = sp.csr_matrix(
                    (coo.data, (coo.row, columns[coo.col])), shape=(matrix.shape[0], len(vocabulary))
                )
                names = vocabulary
            self.feature_names = names
        matrix.eliminate_zeros()
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        matrix.sort_indices()
        self.item_features = matrix
        network = self.network
        if network is not None and network.feature_embedding is not None:
            self._grow_features(matrix.shape[1])
            network.set_feature_slots(self._feature_slots(network.item_embedding.num_embeddings - 1))
        return self

    def _n_features(self) -> int:
        """Feature columns the next ``fit`` will learn embeddings for (0 = id-only)."""
        features = self.item_features
        if not self.config.side_features or features is None or features.nnz == 0:
            return 0
        return int(features.shape[1])

    def _feature_slots(self, n_items: int) -> np.ndarray:
        """``[n_items + 1, width]``: network row r's feature rows (feature + 1), 0-padded; row 0 is padding.

        Columns beyond the feature table (none unless features were added to an id-only table) are dropped.
        """
        network = self._net()
        if network.feature_embedding is None or self.item_features is None:
            raise RuntimeError("_feature_slots: the model has no side features")
        n_known = network.feature_embedding.num_embeddings - 1
        features = self.item_features[: min(n_items, self.item_features.shape[0])]
        features = features[:, :n_known].tocsr()
        lengths = np.zeros(n_items + 1, dtype=np.int64)
        lengths[1 : 1 + features.shape[0]] = np.diff(features.indptr)
        slots = np.zeros((n_items + 1, max(1, int(lengths.max()))), dtype=np.int64)
        rows = np.repeat(np.arange(n_items + 1), lengths)
        columns = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        slots[rows, columns] = features.indices + 1
        return slots

    # ------------------------------------------------------------------------------------------ training
    def _fit(self, interactions: Interactions, validation: RankingSplit | None = None) -> None:
        if validation is None:
            validation = last_event_split(interactions)
            interactions = validation.train
        everything = with_held_out(interactions, validation)
        limit = self.config.validation_users
        if limit is not None and everything is not None and len(validation.history) > limit:
            # the other users train on their held-out events from the start: nothing is left to refit on
            interactions, validation = sample_validation(interactions, validation, limit, self.config.seed)
            everything = None
        if everything is not None:
            everything = self._refit_sized(everything)
        refit = self.config.refit and everything is not None
        beside = _RefitBeside(self, everything) if refit and everything is not None else None
        try:
            self._train(
                interactions,
                (validation.history, validation.targets),
                self.config.max_epochs,
                None if beside is None else beside.on_epoch,
            )
            self.refit_epochs = 0
            if refit and everything is not None and self.best_epoch > 0:
                self._refit(everything, None if beside is None else beside.process)
        finally:
            if beside is not None:
                beside.close()

    def _refit(self, everything: Interactions, beside: RefitProcess | None) -> None:
        """The refit on ``everything``: the weights of the process ``beside`` where there is one and it delivers,
        else trained here (:meth:`refit_on`)."""
        if beside is not None:
            try:
                self._adopt_refit(beside.finish(self.best_epoch), everything)
                return
            except RefitFailed as error:
                logger.warning("sasrec: %s; refitting in this process instead", error)
        self.refit_on(everything)

    def refit_on(self, interactions: Interactions) -> Self:
        """Train afresh on ``interactions`` (the training and validation events) for ``best_epoch`` epochs.

        The final step of ``fit`` when ``refit`` is on: validation chose the epoch count, and the
        model then learns from every event it was given, the held-out ones included, which are each
        user's newest. Same seed, same initialisation; no early stopping (nothing is left to judge it).
        """
        if self.best_epoch < 1:
            raise RuntimeError("refit_on: no epoch count was chosen yet (call fit with validation first)")
        interactions = self._refit_sized(interactions)
        selected = (self.best_epoch, self.best_validation_ndcg, self.history)
        epochs = self.config.refit_epochs(self.best_epoch)
        self._train(interactions, None, epochs)
        self.best_epoch, self.best_validation_ndcg, self.history = selected
        self.refit_epochs = epochs
        self.n_users, self.n_items = interactions.n_users, interactions.n_items
        return self

    def _refit_sized(self, interactions: Interactions) -> Interactions:
        """``interactions`` in id spaces at least as large as the model's (a refit never shrinks them)."""
        if interactions.n_items < self.n_items or interactions.n_users < self.n_users:
            n_users, n_items = max(self.n_users, interactions.n_users), max(self.n_items, interactions.n_items)
            interactions = interactions.with_sizes(n_users, n_items)
        return interactions

    def _threads(self) -> int:
        """The torch threads ``fit`` may use: ``n_threads``, or (0) one per core this process may run on."""
        return self.config.n_threads if self.config.n_threads > 0 else available_cores()

    def _start_parallel_refit(self, everything: Interactions) -> RefitProcess | None:
        """The refit process beside the selection, on half of the threads, where it applies (``parallel_refit_from_s``
        in :class:`SASRecConfig`: the caller has timed the first epoch); None where it does not or the process cannot
        start (then the refit follows the selection, in this process)."""
        config, threads = self.config, self._threads()
        row_wise = config.row_wise_from is not None and everything.n_items >= config.row_wise_from
        if (
            config.parallel_refit_from_s is None
            or threads < 2
            or config.refit_scale != 1.0
            or type(self.training) is not LocalTraining
            or (row_wise and self._row_wise(config.training_loss(everything.n_items)))
        ):
            return None
        child = dataclasses.replace(config, n_threads=threads // 2, verbose=False)
        try:
            process = RefitProcess(child, everything, self.item_features, self.feature_names)
        except RefitFailed as error:
            logger.warning("sasrec: %s; the refit will follow the selection", error)
            return None
        logger.info(
            "sasrec: refitting in a second process beside the selection (%d + %d threads)",
            threads - process.threads,
            process.threads,
        )
        return process

    def _adopt_refit(self, state: RefitState, interactions: Interactions) -> None:
        """Take the refit process's weights, as :meth:`refit_on` would have left them."""
        selected = (self.best_epoch, self.best_validation_ndcg, self.history)
        with self._training_loss_of(interactions):
            network = self._initialise(interactions)  # the refit's network, optimiser and sampling distribution
        network.load_state_dict(state.network)
        self._optimizer().load_state_dict(state.optimizer)
        self._steps = state.steps
        self.best_epoch, self.best_validation_ndcg, self.history = selected
        self.refit_epochs = state.epoch
        self.n_users, self.n_items = interactions.n_users, interactions.n_items

    def _train(
        self,
        interactions: Interactions,
        held_out: tuple[Histories, Histories] | None,
        max_epochs: int,
        on_epoch: EpochHook | None = None,
    ) -> None:
        """Initialise (seeded) and train up to ``max_epochs``, keeping the epoch best on ``held_out`` if given; the
        loss is :meth:`SASRecConfig.training_loss` of the catalogue (``training_loss``, kept for the updates);
        ``on_epoch``: see :meth:`_train_with`."""
        with self._training_loss_of(interactions):
            self._train_with(interactions, held_out, max_epochs, on_epoch)

    @contextlib.contextmanager
    def _training_loss_of(self, interactions: Interactions) -> Iterator[None]:
        """Inside the block the config's loss is the one training on ``interactions`` uses (``training_loss``, kept
        for the updates): the steps read their loss from the config."""
        requested = self.config
        self.training_loss = requested.training_loss(interactions.n_items)
        self.config = requested.with_loss(self.training_loss)
        try:
            yield
        finally:
            self.config = requested

    def _train_with(
        self,
        interactions: Interactions,
        held_out: tuple[Histories, Histories] | None,
        max_epochs: int,
        on_epoch: EpochHook | None = None,
    ) -> None:
        """:meth:`_train`'s loop. ``on_epoch(epoch, improved, average)`` is called at the end of every epoch, after it
        was judged (``improved``: it is the best on ``held_out`` so far; always False without ``held_out``), with the
        weight average (None without one); it returns True to stop training after that epoch."""
        config = self.config
        network = self._initialise(interactions)
        rng = np.random.default_rng(config.seed)
        histories = trainable(Histories.from_interactions(interactions))
        best_ndcg, best_state, best_epoch, waited = -1.0, None, 0, 0
        started = time.perf_counter()
        reports = self.training.reports
        bar = tqdm(total=max_epochs, desc="sasrec", unit="epoch", disable=not (self.progress and reports), leave=False)
        threshold = config.row_wise_from
        row_wise = self._row_wise(config.loss) and threshold is not None and interactions.n_items >= threshold
        table = network.item_embedding.weight
        self._skipped = SkippedSteps(len(table)) if row_wise else None  # each row catches up its skipped steps
        average = None
        decay = config.average_decay_for(math.ceil(len(histories) / config.batch_size))  # an epoch's global batches
        if decay is not None:
            average = WeightAverage(network, decay, lazy=table if row_wise else None)
        try:
            with torch_threads(config.n_threads), bar:
                for epoch in range(1, max_epochs + 1):
                    loss = self._train_epoch(histories, rng, shuffle=True, row_wise=row_wise, average=average)
                    self._flush_item_rows(average)  # a row-wise fit: every row up to date before it is judged or kept
                    bar.update()
                    improved = stop = False
                    if held_out is None or (epoch % config.eval_every and epoch != max_epochs):
                        self.history.append({"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started})
                    else:
                        with average.applied() if average is not None else contextlib.nullcontext():
                            ndcg = self.training.validation_ndcg(self, *held_out)
                            improved = ndcg > best_ndcg
                            if improved:  # the weights judged are the ones kept: the average, where there is one
                                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                        self.history.append(
                            {
                                "epoch": epoch,
                                "loss": loss,
                                "val_ndcg@10": ndcg,
                                "seconds": time.perf_counter() - started,
                            }
                        )
                        if config.verbose and reports:
                            print(
                                f"epoch {epoch:4d} loss {loss:.4f} val ndcg@10 {ndcg:.4f} "
                                f"({time.perf_counter() - started:.1f}s)",
                                flush=True,
                            )
                        bar.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{ndcg:.4f}")
                        if improved:
                            best_ndcg, best_epoch, waited = ndcg, epoch, 0
                        else:
                            waited += config.eval_every
                            stop = waited >= config.epoch_patience(self._epoch_steps)
                            if not stop and config.plateau_factor < 1.0 and waited % config.plateau_patience == 0:
                                self._lr_scale *= config.plateau_factor
                    if on_epoch is not None and on_epoch(epoch, improved, average):
                        stop = True
                    if stop:
                        break
        finally:
            self._skipped = None
        if best_state is not None:
            network.load_state_dict(best_state)
        elif average is not None:  # nothing judged (a refit): the average of the last epoch's steps
            average.apply()
        self.best_epoch, self.best_validation_ndcg = best_epoch, best_ndcg

    def _initialise(self, interactions: Interactions) -> SASRecNetwork:
        """A fresh network for ``interactions`` (seeded), its optimiser, schedule and sampling distribution."""
        config = self.config
        torch.manual_seed(config.seed)
        n_features = self._n_features()
        network = self.network = SASRecNetwork(interactions.n_items, config, n_features)
        if n_features:
            network.set_feature_slots(self._feature_slots(interactions.n_items))
        self._init_weights()
        self.optimizer = self._adamw(network)
        self._steps = 0
        self._lr_scale = 1.0
        self.history = []
        self._set_sampling_distribution(interactions)
        return network

    def _partial_fit(self, interactions: Interactions) -> None:
        """Continue from the current weights on the sequences in ``interactions``; grow the item table."""
        self._partial_fit_in_context(interactions, None)

    def _partial_fit_in_context(self, interactions: Interactions, learn: np.ndarray | None) -> None:
        """:meth:`_partial_fit` with a loss only at the positions whose next item is a ``learn`` event;
        the other events are read as context (None: a loss at every position).

        The steps train with :meth:`SASRecConfig.for_updates` (``update_loss``, by default the training
        loss); with the sampled softmax, in one process, each step reads and steps only the item rows it uses
        (:meth:`_row_wise_loss`, :meth:`_step_item_rows`)."""
        config = self.config
        self._grow_items(interactions.n_items)
        rng = np.random.default_rng(config.seed + 1 + self._steps)
        new = interactions if learn is None else interactions.subset(learn)
        self._set_sampling_distribution(new, blend=True)
        histories = Histories.from_interactions(interactions)
        flags = None
        if learn is not None:  # the same (user, time) order as the histories' events
            order = np.lexsort((interactions.timestamps, interactions.user_ids))
            flags = Histories(histories.users, histories.indptr, learn[order].astype(np.int64))
        rows = np.flatnonzero(histories.lengths() >= 2)  # at least one input and one target
        if len(rows) == 0:
            return
        histories = histories.select(rows)
        flags = None if flags is None else flags.select(rows)
        trained = self.training_loss or config.training_loss(self.n_items)
        update_config = config.with_loss(trained).for_updates()
        row_wise = self._row_wise(update_config.loss)
        self.config = update_config  # the steps read their loss from the config
        try:
            with torch_threads(config.n_threads):
                for _ in range(config.partial_fit_epochs):
                    self._train_epoch(
                        histories, rng, flags, row_wise=row_wise, min_positions=config.update_batch_positions
                    )
        finally:
            self.config = config

    def _row_wise(self, loss: str) -> bool:
        """Whether steps with ``loss`` read and step only the item rows they use: the sampled softmax, in one
        process (row-wise steps bypass the training strategy's forward pass)."""
        return loss == "sampled-softmax" and self.training.row_wise

    def _init_weights(self) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        for name, parameter in self._net().named_parameters():
            if parameter.dim() >= 2:
                with torch.no_grad():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
                    if "item_embedding" in name or "feature_embedding" in name:
                        parameter[0].zero_()  # padding rows

    def _set_sampling_distribution(self, interactions: Interactions, blend: bool = False) -> None:
        counts = np.bincount(interactions.item_ids, minlength=interactions.n_items).astype(np.float64)
        if blend and len(self.item_log_q):
            old = np.exp(self.item_log_q) * len(interactions)
            counts[: len(old)] += old
        weights = (counts + 1.0) ** self.config.negative_power
        self.item_log_q = np.log(weights / weights.sum())

    def _train_epoch(
        self,
        histories: Histories,
        rng: np.random.Generator,
        learn: Histories | None = None,
        shuffle: bool = False,
        row_wise: bool = False,
        average: WeightAverage | None = None,
        min_positions: int | None = None,
    ) -> float:
        """One pass over every user's window (:func:`~liverec.models.sasrec.batching.plan_epoch`: ``learn``,
        ``shuffle``); each global batch is trained as the training strategy says (this process's share of
        it, on its device). ``row_wise`` (sampled softmax, one process): each step reads and steps only the
        item rows it uses (:meth:`_row_wise_loss`); ``average``: updated after every step (``fit``'s);
        ``min_positions``: see :func:`~liverec.models.sasrec.batching.plan_epoch`. Returns the epoch's mean loss
        per position."""
        network, training = self._net(), self.training
        training.start_epoch(network)
        network.train()
        plan = plan_epoch(histories, self.config, rng, learn, shuffle, min_positions)
        self._epoch_steps = len(plan.batches)  # optimiser steps per epoch: what patience_steps counts in
        loss_rng = training.loss_rng(rng, self.config.loss)
        total, count = 0.0, 0
        for batch_rows in plan.batches:
            rows, weight = training.share(batch_rows, plan.lengths)
            batch, tied, learned = plan.tensors(rows, training.tensor)
            if row_wise:  # the item rows the step uses alone: read, stepped and counted here
                loss, n_positions, used, used_vectors = self._row_wise_loss(batch, learned, loss_rng)
                self._step(loss, weight, used_vectors)  # AdamW over the rest (the item table is not in the graph)
                if used_vectors.grad is not None:  # the leaf holds the rows' values too: no second gather
                    self._step_item_rows(used[1:], used_vectors.grad[1:], average, used_vectors.detach()[1:])
                if average is not None:
                    average.update()
                total += float(loss.detach()) * n_positions
                count += n_positions
                continue
            inputs, targets = batch[:, :-1], batch[:, 1:]
            tail = learned_tail(learned, inputs)  # an update: the final block computes its new events' columns
            hidden, table = training.forward(network, inputs, tail)  # hidden at non-padding positions, the item table
            seen, future = self._loss_context(batch, tied)
            targets = targets[inputs > 0]
            if learned is not None:  # keep the positions whose next item is to be learned
                keep = learned[inputs > 0]
                hidden = hidden[keep if tail is None else learned[:, -tail:][inputs[:, -tail:] > 0]]
                targets = targets[keep]
                future = None if future is None else future[keep]
                seen = None if seen is None else SeenItems(seen.sequences, seen.row[keep], seen.column[keep])
            loss = self._loss(hidden, targets, loss_rng, table[1:], seen, future)
            self._step(loss, weight)
            if average is not None:
                average.update()
            if weight > 0:
                total += float(loss.detach()) * len(hidden)
                count += len(hidden)
        return training.finish_epoch(network, total, count, rng)

    def _step(self, loss: torch.Tensor, weight: float, rows: torch.Tensor | None = None) -> None:
        """One optimiser step on ``loss`` (weighted by ``weight``) at the warm-up / plateau learning rate, its
        gradients clipped to ``clip_norm`` together with those of ``rows`` (a row-wise step's item rows, which
        :meth:`_step_item_rows` applies after)."""
        config, optimizer = self.config, self._optimizer()
        self._steps += 1
        scale = min(1.0, self._steps / config.warmup_steps) if config.warmup_steps > 0 else 1.0
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * scale * self._lr_scale
        self.training.step(optimizer, loss, weight, config.clip_norm, rows)

    def _row_wise_loss(
        self, batch: torch.Tensor, learned: torch.Tensor | None, rng: np.random.Generator
    ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        """The sampled-softmax loss of a batch ``[batch, width]`` (inputs and targets shifted by one;
        ``learned``: the positions to learn, or None) computed on the item rows it uses alone.

        The negatives are drawn first (the same draw as :func:`~liverec.models.sasrec.loss.sequence_loss`
        makes); the batch's items, the negatives and the padding row 0 are the used rows. They are copied
        into a leaf tensor ``[n_used, dim]`` that stands for the item table in the forward pass and the
        loss, so the backward pass leaves a gradient for those rows only, never an ``[n_items, dim]`` one.
        Returns the loss, the number of positions it averages, the used rows (network rows, ascending,
        0 first) and the leaf (whose ``grad`` :meth:`_step_item_rows` applies after the backward pass).
        """
        network, sampling = self._net(), self._sampling
        negatives = torch.from_numpy(sampling.draw(rng, self.config.n_negatives)) + 1  # network rows
        padding = batch.new_zeros(1)
        used, local = torch.unique(torch.cat([padding, batch.reshape(-1), negatives]), return_inverse=True)
        local_batch = local[1 : 1 + batch.numel()].view_as(batch)  # the batch in used-row numbering
        local_negatives = local[1 + batch.numel() :] - 1  # rows of the used items (padding dropped)
        rows = network.item_embedding.weight.detach().index_select(0, used).requires_grad_()
        table = rows
        if network.feature_embedding is not None:  # side features: the used rows' feature means, as item_table
            table = rows + network.feature_embedding(network.feature_slots.index_select(0, used))
        inputs, targets = local_batch[:, :-1], local_batch[:, 1:]
        wanted = inputs > 0 if learned is None else (inputs > 0) & learned  # the positions whose next item is learned
        tail = learned_tail(learned, inputs)  # an update: the final block computes its new events' columns alone
        hidden = network(inputs, table, tail=tail)[wanted if tail is None else wanted[:, -tail:]]
        targets = targets[wanted]
        log_q = sampling.log_q_tensor.index_select(0, used[1:] - 1)
        copies = torch.bincount(local_negatives, minlength=len(used) - 1)  # the used rows are distinct already
        distinct = copies.nonzero().squeeze(1)
        loss = sampled_softmax_loss(log_q, hidden, targets, distinct, table[1:], copies.index_select(0, distinct))
        return loss, len(hidden), used, rows

    def _step_item_rows(
        self,
        rows: torch.Tensor,
        grad: torch.Tensor,
        average: WeightAverage | None = None,
        values: torch.Tensor | None = None,
    ) -> None:
        """AdamW on the item table's ``rows`` (network rows) alone, given their gradient ``[len(rows), dim]``.
        ``values``: the rows' current values ``[len(rows), dim]`` where the caller gathered them already (the
        loss's leaf, :meth:`_row_wise_loss`: nothing writes the table between the two); they are stepped in place
        and written back. At a million items each gather of the step's rows is a cache miss per row.

        The same arithmetic as torch's AdamW on each of those rows (its moments, bias correction,
        decoupled weight decay, learning rate; the table's one step count advances), on the AdamW state
        the model trains with, so training and updates share moments. A dense step would read and write every
        row and both moments, which at a million items costs more than the rest of a step together
        (docs/results.md). In a row-wise ``fit`` (:attr:`_skipped` set) each row first takes the zero-gradient
        steps it missed since it was last stepped, in closed form (:mod:`.row_wise`), and so does its moving
        average (``average``; the table is left out of the average's own update): the dense step's trajectory.
        In ``partial_fit`` the other rows, and their moments, are untouched (a "lazy" Adam).
        """
        optimizer, weight = self._optimizer(), self._net().item_embedding.weight
        state = self._table_state(optimizer, weight)
        state["step"] += 1
        settings = self._table_settings(optimizer, weight)
        with torch.no_grad():
            # index_select, not weight[rows]: a tensor index costs about five times as much per row (docs/results.md)
            param = weight.index_select(0, rows) if values is None else values
            exp_avg, exp_avg_sq = (state[key].index_select(0, rows) for key in ("exp_avg", "exp_avg_sq"))
            kept = self._table_sum
            kept = kept if kept is not None and kept.holds(weight, self._steps - 1) else None
            before = None if kept is None else param.sum(dim=0, dtype=torch.float64)
            mean = None if average is None else average.of(weight).index_select(0, rows)
            decay = 0.0 if average is None else average.next_decay()
            if self._skipped is not None:
                missed = self._skipped.skipped(rows, settings.step)
                skipped_steps(param, exp_avg, exp_avg_sq, missed, settings, mean, decay)
                self._skipped.mark(rows, settings.step)
            adamw_rows(param, exp_avg, exp_avg_sq, grad, settings)
            write_rows(weight, rows, param)  # NumPy's assignment: less than half index_copy_'s cost
            if kept is not None and before is not None:  # the rows' change keeps the table's sum (_item_row_sum)
                self._table_sum = kept.moved_to(weight, self._steps, param.sum(dim=0, dtype=torch.float64) - before)
            write_rows(state["exp_avg"], rows, exp_avg)
            write_rows(state["exp_avg_sq"], rows, exp_avg_sq)
            if average is not None and mean is not None:  # (mean is None exactly when average is; for mypy)
                write_rows(average.of(weight), rows, mean.lerp_(param, 1 - decay))

    def _flush_item_rows(self, average: WeightAverage | None) -> None:
        """A row-wise ``fit``: bring every row of the item table (and its average) up to the current step."""
        if self._skipped is None:
            return
        self._table_sum = None  # the flush writes rows it does not sum
        optimizer, weight = self._optimizer(), self._net().item_embedding.weight
        state = self._table_state(optimizer, weight)
        settings = self._table_settings(optimizer, weight)
        table_average = None if average is None else average.of(weight)
        decay = 0.0 if average is None else average.decay_at(average.steps)
        self._skipped.flush(weight.data, state["exp_avg"], state["exp_avg_sq"], settings, table_average, decay)

    @staticmethod
    def _table_state(optimizer: torch.optim.Optimizer, weight: torch.Tensor) -> dict[str, Any]:
        state = optimizer.state[weight]
        if not state:  # as AdamW starts a parameter's state
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
        return state

    @staticmethod
    def _table_settings(optimizer: torch.optim.Optimizer, weight: torch.Tensor) -> AdamWSettings:
        group = next(group for group in optimizer.param_groups if any(p is weight for p in group["params"]))
        (beta1, beta2), step = group["betas"], int(optimizer.state[weight]["step"])
        return AdamWSettings(group["lr"], beta1, beta2, group["eps"], group["weight_decay"], max(step, 1))

    def _loss_context(
        self, batch: torch.Tensor, tied: torch.Tensor | None = None
    ) -> tuple[SeenItems | None, torch.Tensor | None]:
        """The seen items and next-item window of a batch's positions (see
        :func:`~liverec.models.sasrec.loss.loss_context`)."""
        return loss_context(self.config, batch, tied)

    def _loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        rng: np.random.Generator,
        items: torch.Tensor,
        seen: SeenItems | None = None,
        future: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The configured loss of a batch's positions: :func:`~liverec.models.sasrec.loss.sequence_loss` (outside a
        fit, ``auto`` is the loss a fit over ``items`` would choose)."""
        config = self.config.with_loss(self.config.training_loss(len(items)))
        return sequence_loss(config, self._sampling, hidden, targets, rng, items, seen, future)

    def validation_ndcg(
        self, history: Histories, targets: Histories, block_users: int = 65_536, chunk_scores: int = 8_000_000
    ) -> float:
        """Mean NDCG@10 of each row's first target, full ranking, history items excluded.

        Users are represented ``block_users`` at a time, then scored against the item table in chunks of
        ``chunk_scores`` scores written into one reused buffer, so a large catalogue never needs a ``[users, items]``
        matrix in memory at once. A fresh ~100 MB product per chunk, as ``_score`` makes, cost a Beauty training
        epoch about 1.3 s of its 7.4 (its page faults, and the pages the next epoch faulted in again); NumPy's
        product would be faster still, but its BLAS threads spin beside torch's and slowed the training steps
        after it (docs/results.md, "Session 27").
        """
        if len(history) == 0:
            return 0.0
        first_targets = targets.items[targets.indptr[:-1]]
        total = 0.0
        with torch_threads(self.config.n_threads), torch.inference_mode():
            items_t = self._net().item_vectors().T
            n_columns = items_t.shape[1]
            chunk = min(max(1, chunk_scores // max(n_columns, 1)), len(history))
            buffer = torch.empty((chunk, n_columns), dtype=torch.float32)
            for start in range(0, len(history), block_users):
                part = history.select(np.arange(start, min(start + block_users, len(history))))
                users = torch.from_numpy(self.user_vectors(part))
                for offset in range(0, len(part), chunk):
                    rows = np.arange(offset, min(offset + chunk, len(part)))
                    scores = torch.mm(users[offset : offset + len(rows)], items_t, out=buffer[: len(rows)]).numpy()
                    piece = part.select(rows)
                    n_cols = max(n_columns, int(piece.items.max(initial=-1)) + 1)
                    seen = piece.to_csr(n_cols)[:, :n_columns].tocoo()
                    scores[seen.row, seen.col] = -np.inf
                    total += single_target_ndcg(scores, first_targets[start + rows]) * len(rows)
        return total / len(history)

    # ------------------------------------------------------------------------------------------ scoring
    def user_vectors(self, histories: Histories) -> np.ndarray:
        """``[len(histories), dim]``: each row's representation (hidden state at its last position)."""
        network = self._net()
        known = histories
        if len(known.items) and known.items.max() >= self.n_items:  # items beyond the table are skipped
            keep = known.items < self.n_items
            rows = np.repeat(np.arange(len(known)), known.lengths())
            lengths = np.bincount(rows[keep], minlength=len(known))
            known = Histories(known.users, np.concatenate([[0], np.cumsum(lengths)]), known.items[keep])
        if network.training:  # .eval() walks every submodule: a noticeable share of a served request
            network.eval()
        if len(known) == 1:  # the serving path: one user, no sorting or chunking
            recent = known.items[-self.config.max_len :] + 1
            sequence = torch.from_numpy(recent if len(recent) else np.zeros(1, dtype=np.int64))[None]
            with torch.inference_mode():
                return network(sequence, tail=1)[:, -1, :].numpy().copy()
        # rows sorted by length and run in chunks padded to the chunk's longest row: little padding
        lengths = np.minimum(known.lengths(), self.config.max_len)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(known), self.config.dim), dtype=np.float32)
        with torch.inference_mode():
            table = network.item_table() if network.feature_embedding is not None else None
            for start in range(0, len(order), 256):
                rows = order[start : start + 256]
                width = int(max(1, lengths[rows].max()))
                sequences = torch.from_numpy(padded_sequences(known.select(rows), width))
                out[rows] = network(sequences, table, tail=1)[:, -1, :].numpy()
        return out

    def item_vectors(self) -> np.ndarray:
        """``[n_items, dim]``: the item table scores are dot products with."""
        return self._net().item_vectors().detach().numpy()

    def _score(self, histories: Histories) -> np.ndarray:
        with torch_threads(self.config.n_threads), torch.inference_mode():
            users = torch.from_numpy(self.user_vectors(histories))
            scores = users @ self._net().item_vectors().T
        return scores.numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------------ growth & state
    def _grow_items(self, n_items: int) -> None:
        """Append rows for new items; keep the AdamW state of old rows (new rows start with zero moments).

        A new item starts at the centroid of the known items that share its side features (the mean,
        over its features, of each feature's mean item vector) when it has features the model has
        seen on items; otherwise at the mean item vector. With features, its id row is that start
        minus its feature part, so :meth:`item_vectors` returns the start itself.
        """
        network = self._net()
        old = network.item_embedding.weight
        n_old = old.shape[0] - 1
        if n_items <= n_old:
            return
        with torch.no_grad():
            if network.feature_embedding is None:
                table_sum = self._item_row_sum(old)
                mean = table_sum.mean(old)
                self._append_rows(network.item_embedding, mean.expand(n_items - n_old, -1))
                # the new rows are the mean: the sum follows without a pass
                grown = network.item_embedding.weight
                self._table_sum = table_sum.moved_to(grown, self._steps, mean[0].double() * (n_items - n_old))
                return
            starts = self._new_item_starts(network.item_vectors().detach().numpy(), n_items)
            self._append_rows(network.item_embedding, torch.zeros(n_items - n_old, old.shape[1]))
            network.set_feature_slots(self._feature_slots(n_items))
            network.item_embedding.weight[n_old + 1 :] = torch.from_numpy(starts) - network.feature_vectors()[n_old:]

    def _item_row_sum(self, weight: torch.Tensor) -> _TableSum:
        """The sum of the item rows of ``weight`` (the table, row 0 the padding): the one row-wise updates keep
        (:meth:`_step_item_rows`) where it is still the table's, else a pass over it (at a million items that pass
        read 244 MB and was 4 % of an update: docs/results.md, "Session 25")."""
        cached = self._table_sum
        if cached is None or not cached.holds(weight, self._steps):
            cached = self._table_sum = _TableSum.of(weight, self._steps)
        return cached

    def _new_item_starts(self, old_vectors: np.ndarray, n_items: int) -> np.ndarray:
        """``[n_items - n_old, dim]`` initial vectors of new items from ``old_vectors`` ``[n_old, dim]``."""
        n_old = old_vectors.shape[0]
        old64 = old_vectors.astype(np.float64)
        mean = old64.mean(axis=0)
        starts = np.tile(mean, (n_items - n_old, 1))
        features, network = self.item_features, self._net()
        if features is None or network.feature_embedding is None or features.shape[0] <= n_old:
            return starts.astype(np.float32)
        n_known = network.feature_embedding.num_embeddings - 1
        features = features[:, :n_known].tocsr()
        described = features[:n_old]  # [n_described_old, n_known]
        counts = np.asarray(described.sum(axis=0)).ravel()  # old items per feature
        centroids = (described.T @ old64[: described.shape[0]]) / np.maximum(counts, 1)[:, None]  # [n_known, dim]
        new = features[n_old:n_items] @ sp.diags((counts > 0).astype(np.float64))  # features seen on old items
        usable = np.asarray(new.sum(axis=1)).ravel()
        rows = np.flatnonzero(usable > 0)
        starts[rows] = (new[rows] @ centroids) / usable[rows, None]
        return starts.astype(np.float32)

    def _grow_features(self, n_features: int) -> None:
        """Append feature rows (at the mean feature vector) for feature columns the table lacks."""
        embedding = self._net().feature_embedding
        if embedding is None or n_features <= embedding.num_embeddings - 1:
            return
        with torch.no_grad():
            weight = embedding.weight
            mean = weight[1:].mean(dim=0, keepdim=True)
            self._append_rows(embedding, mean.expand(n_features + 1 - weight.shape[0], -1))

    def _append_rows(self, module: nn.Embedding | nn.EmbeddingBag, rows: torch.Tensor) -> None:
        """Replace ``module.weight`` by itself plus ``rows`` ``[n_new, dim]``; AdamW moments of old rows are kept.

        The grown table and moments keep spare rows past their end (:func:`_with_rows`), so the next
        growths write the new rows in place instead of copying the whole table and its two moments:
        at a million items that copy was 40 % of an update (docs/results.md).
        """
        optimizer = self._optimizer()
        old = module.weight
        grown = nn.Parameter(_with_rows(old.detach(), rows))
        module.weight = grown
        module.num_embeddings = grown.shape[0]
        state = optimizer.state.pop(old, None)
        for group in optimizer.param_groups:
            group["params"] = [grown if p is old else p for p in group["params"]]
        if state:  # new rows start from zero moments
            optimizer.state[grown] = {
                key: _with_rows(value, value.new_zeros(len(rows), *value.shape[1:]))
                if torch.is_tensor(value) and value.dim() == 2
                else value
                for key, value in state.items()
            }

    def _net(self) -> SASRecNetwork:
        if self.network is None:
            raise RuntimeError(f"model {self.name!r} is not fitted: call fit first")
        return self.network

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError(f"model {self.name!r} has no optimiser: call fit first")
        return self.optimizer

    def _get_state(self) -> dict[str, np.ndarray]:
        state = {f"network.{k}": v.detach().numpy() for k, v in self._net().state_dict().items()}
        state["item_log_q"] = self.item_log_q
        if self.training_loss is not None:
            state["training_loss"] = np.array(self.training_loss, dtype=np.str_)
        if self.item_features is not None:
            state["item_features.indptr"] = self.item_features.indptr.astype(np.int64)
            state["item_features.indices"] = self.item_features.indices.astype(np.int64)
            state["item_features.shape"] = np.array(self.item_features.shape, dtype=np.int64)
        if self.feature_names is not None:
            state["feature_names"] = np.array(self.feature_names, dtype=np.str_)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n_items = state["network.item_embedding.weight"].shape[0] - 1
        self.item_features = None
        if "item_features.shape" in state:
            indices = state["item_features.indices"]
            self.item_features = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, state["item_features.indptr"]),
                shape=tuple(int(x) for x in state["item_features.shape"]),
            )
        self.feature_names = [str(name) for name in state["feature_names"]] if "feature_names" in state else None
        feature_weight = state.get("network.feature_embedding.weight")
        n_features = 0 if feature_weight is None else feature_weight.shape[0] - 1
        self.network = SASRecNetwork(n_items, self.config, n_features)
        if n_features:
            self.network.set_feature_slots(self._feature_slots(n_items))
        self.network.load_state_dict(
            {
                k.removeprefix("network."): torch.from_numpy(np.array(v))
                for k, v in state.items()
                if k.startswith("network.")
            }
        )
        self.item_log_q = state["item_log_q"]
        self.training_loss = str(state["training_loss"]) if "training_loss" in state else None
        self.optimizer = self._adamw(self.network)

    def _adamw(self, network: SASRecNetwork) -> torch.optim.AdamW:
        """The optimiser: AdamW, fused (one kernel per parameter instead of a dozen: an epoch of Amazon Beauty
        about 12 % faster at one thread, docs/results.md)."""
        config = self.config
        return torch.optim.AdamW(
            network.parameters(),
            lr=config.learning_rate,
            betas=(0.9, 0.98),
            weight_decay=config.weight_decay,
            fused=True,
        )


class WeightAverage:
    """An exponential moving average of a network's parameters, updated after each optimiser step of ``fit``
    (``average_decay``): ``average = d · average + (1 - d) · weights``, starting from the weights themselves.

    ``d`` is ``decay`` once ``4 / (1 - decay)`` steps are taken, and ``t / (t + 4)`` at step ``t`` before
    that, so the average never spans more than about the last quarter of the steps: on a small dataset, whose
    whole fit is a few hundred steps, a fixed 0.99 would keep a large share of the untrained initial weights
    (``0.99 ** 60`` = 55 % after 60 steps). The averaged weights are what early stopping judges and what the
    fitted model keeps; training steps the live ones."""

    def __init__(self, network: nn.Module, decay: float, lazy: torch.Tensor | None = None) -> None:
        """``lazy``: a parameter (the item table of a row-wise fit) whose rows the trainer averages itself, as
        it steps them (:meth:`of`, :meth:`next_decay`); :meth:`update` leaves it alone."""
        self.decay = decay
        self.steps = 0
        self.parameters = [parameter.detach() for parameter in network.parameters()]
        self.average = [parameter.clone() for parameter in self.parameters]
        kept = [lazy is None or parameter is not lazy for parameter in network.parameters()]
        self._live = [parameter for parameter, keep in zip(self.parameters, kept, strict=True) if keep]
        self._averaged = [average for average, keep in zip(self.average, kept, strict=True) if keep]
        self._index = {id(parameter): i for i, parameter in enumerate(network.parameters())}

    def decay_at(self, step: int) -> float:
        """The decay of the update after ``step`` steps: ``t / (t + 4)`` until that reaches ``decay``."""
        return min(self.decay, step / (step + 4))

    def next_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        return self.decay_at(self.steps + 1)

    def of(self, parameter: torch.Tensor) -> torch.Tensor:
        """The average of ``parameter`` (one of the network's)."""
        return self.average[self._index[id(parameter)]]

    def update(self) -> None:
        """Move the average towards the live weights after one step (the lazy parameter excepted)."""
        self.steps += 1
        torch._foreach_lerp_(self._averaged, self._live, 1.0 - self.decay_at(self.steps))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The network holds the averaged weights inside the block, its live ones again after it."""
        live = [parameter.clone() for parameter in self.parameters]
        _copy(self.average, self.parameters)
        try:
            yield
        finally:
            _copy(live, self.parameters)

    def apply(self) -> None:
        """The network keeps the averaged weights."""
        _copy(self.average, self.parameters)


class _RefitBeside:
    """``fit``'s refit process, started after the selection's first epoch where that epoch took at least
    ``parallel_refit_from_s`` (a child costs a few seconds to start: below, the refit after the selection finishes
    sooner); its :meth:`on_epoch` is the selection's hook, telling the process every epoch's verdict."""

    def __init__(self, model: SASRec, everything: Interactions) -> None:
        self.model, self.everything = model, everything
        #: the refit process, once started
        self.process: RefitProcess | None = None

    def on_epoch(self, epoch: int, improved: bool, average: WeightAverage | None) -> bool:
        threshold = self.model.config.parallel_refit_from_s
        if epoch == 1 and threshold is not None and self.model.history[-1]["seconds"] >= threshold:
            self.process = self.model._start_parallel_refit(self.everything)
            if self.process is not None:  # the selection goes on with the threads the process leaves
                threads = self.model._threads() - self.process.threads
                torch.set_num_threads(threads)  # the steps (the training loop's torch_threads restores it)
                # the validation passes read the config's; ``_train`` puts back the config it started with
                self.model.config = dataclasses.replace(self.model.config, n_threads=threads)
        if self.process is not None:
            self.process.judged(epoch, improved)
        return False

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


#: ``SASRec._train``'s ``on_epoch(epoch, improved, average)``: called after every epoch, returns True to stop
EpochHook = Callable[[int, bool, "WeightAverage | None"], bool]


def _copy(sources: list[torch.Tensor], targets: list[torch.Tensor]) -> None:
    for source, target in zip(sources, targets, strict=True):
        target.copy_(source)


@dataclass(frozen=True)
class _TableSum:
    """The float64 sum of an item table's rows (row 0, the padding, left out) as of optimiser step ``steps`` and
    the table's in-place version ``version``: it holds for the table while neither has moved since. A row-wise
    update writes its rows through NumPy (:func:`write_rows`, no version change) and moves the sum with them; any
    other step, or any in-place write through torch, leaves it stale, and the next mean is a pass again."""

    table: weakref.ref[torch.Tensor]
    version: int
    steps: int
    total: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, steps: int) -> _TableSum:
        total = weight.detach()[1:].sum(dim=0, dtype=torch.float64)
        return cls(weakref.ref(weight), weight._version, steps, total)

    def holds(self, weight: torch.Tensor, steps: int) -> bool:
        return self.table() is weight and self.version == weight._version and self.steps == steps

    def mean(self, weight: torch.Tensor) -> torch.Tensor:
        """``[1, dim]`` the mean item row of ``weight``, the table this sum holds for."""
        return (self.total / (weight.shape[0] - 1)).to(weight.dtype)[None, :]

    def moved_to(self, weight: torch.Tensor, steps: int, change: torch.Tensor) -> _TableSum:
        """The sum of ``weight`` at ``steps``: this one plus ``change`` (the rows written since)."""
        return _TableSum(weakref.ref(weight), weight._version, steps, self.total + change)


#: spare rows a grown table keeps past its end, as a share of its rows (see :func:`_with_rows`)
GROWTH_HEADROOM = 0.25


def _with_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``[len(table) + len(rows), dim]``: ``table`` then ``rows``, as a view of the front of a larger buffer.

    When ``table`` is such a view already (made here) and its buffer has room, the rows are written
    into the buffer behind it and the table is not copied; else a buffer ``GROWTH_HEADROOM`` larger than
    needed is allocated, so a table that grows a little at every update is copied once per quarter
    of growth, not at each update. Whatever shares ``table``'s storage sees the new rows' memory only
    past its own end.
    """
    n_rows = len(table) + len(rows)
    width = table.shape[1:]
    row_bytes = table[:1].numel() * table.element_size()
    storage = table.untyped_storage()
    if table.is_contiguous() and table.storage_offset() == 0 and storage.nbytes() >= n_rows * row_bytes:
        grown = table.new_empty(0).set_(storage, 0, (n_rows, *width), table.stride())
    else:
        buffer = table.new_empty(int(n_rows * (1 + GROWTH_HEADROOM)) + 1, *width)
        grown = buffer[:n_rows]
        grown[: len(table)] = table
    grown[len(table) :] = rows
    return grown
