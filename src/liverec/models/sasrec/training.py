"""How SASRec's training runs: the training strategy, which decides everything that differs between one
process and a distributed job.

:class:`SASRec <liverec.models.sasrec.model.SASRec>` owns the training loop (initialisation, epochs,
learning-rate schedule, early stopping, the loss) and asks its strategy, a :class:`Training`, at each
point where a process of a distributed job acts differently from a lone one:

* :meth:`~Training.start_epoch` / :meth:`~Training.finish_epoch`: around each epoch's pass (wrap the
  network, time the pass; the epoch's mean loss, over every process);
* :meth:`~Training.share`: which rows of each global batch this process trains, and the weight of its
  loss in the batch's gradient;
* :meth:`~Training.tensor` / :meth:`~Training.forward`: where a batch lives and how the network runs on it;
* :meth:`~Training.loss_rng`: the generator the loss draws negatives from;
* :meth:`~Training.step`: backward pass and optimiser step;
* :meth:`~Training.validation_ndcg`: the validation score early stopping compares, over every process;
* :attr:`~Training.reports`: whether this process shows progress.

:class:`LocalTraining` (the default) is one process on the CPU; the distributed strategy is
:class:`liverec.models.sasrec.distributed.DistributedTraining`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from liverec.models.sasrec.network import SASRecNetwork

if TYPE_CHECKING:
    from liverec.data.interactions import Histories
    from liverec.models.sasrec.model import SASRec


class Training(Protocol):
    """The hooks of SASRec's training loop that a training strategy provides (see the module docstring)."""

    #: whether this process shows progress (bars, ``verbose`` lines)
    reports: bool
    #: whether the model may compute a sampled-softmax step on the item rows it uses and step those rows itself,
    #: bypassing :meth:`forward` and :meth:`step` for the item table (one process: no gradient to share)
    row_wise: bool

    def start_epoch(self, network: SASRecNetwork) -> None:
        """Called before each epoch's training pass over ``network`` (in training mode after it)."""
        ...

    def share(self, rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """The rows of a global batch (``rows`` of windows of ``lengths``) this process trains, and the
        weight of its loss in the batch's gradient (0: this process steps but contributes nothing)."""
        ...

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A batch array as a tensor on the training device."""
        ...

    def forward(
        self, network: SASRecNetwork, inputs: torch.Tensor, tail: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the non-padding positions of ``inputs`` ``[n, dim]`` (of its last ``tail`` columns
        alone where given: :func:`~liverec.models.sasrec.batching.learned_tail`) and the item table
        ``[n_items + 1, dim]`` they are scored against (built once per step: it feeds both the inputs and
        the output scores)."""
        ...

    def loss_rng(self, rng: np.random.Generator, loss: str) -> np.random.Generator:
        """The generator loss ``loss`` draws negatives from this epoch; ``rng`` is the epoch's shared one."""
        ...

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor,
        weight: float,
        clip_norm: float | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        """Backward pass of ``loss`` weighted by ``weight`` (from :meth:`share`), then one optimiser step;
        ``clip_norm``: before the step, the gradients are rescaled to at most this L2 norm together
        (:func:`clip_gradients`: the optimiser's parameters' and ``rows``', a row-wise step's item rows)."""
        ...

    def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
        """The epoch's mean loss, given this process's loss ``total`` over ``count`` positions; ``rng``:
        the epoch's shared generator, where it stands after the epoch."""
        ...

    def validation_ndcg(self, model: SASRec, history: Histories, targets: Histories) -> float:
        """Mean validation NDCG@10 of ``model`` (see :meth:`SASRec.validation_ndcg`) that early stopping
        compares; every process must get the same number."""
        ...


class LocalTraining:
    """One process trains every batch whole, on the CPU, drawing negatives from the epoch's generator."""

    reports = True
    row_wise = True

    def start_epoch(self, network: SASRecNetwork) -> None:
        pass

    def share(self, rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        return rows, 1.0

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array)

    def forward(
        self, network: SASRecNetwork, inputs: torch.Tensor, tail: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden_and_table(network, inputs, tail)

    def loss_rng(self, rng: np.random.Generator, loss: str) -> np.random.Generator:
        return rng

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor,
        weight: float,
        clip_norm: float | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        if clip_norm is not None:  # DDP: after backward every rank holds the same all-reduced gradients
            clip_gradients(optimizer, clip_norm, rows)
        optimizer.step()

    def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
        return total / max(count, 1)

    def validation_ndcg(self, model: SASRec, history: Histories, targets: Histories) -> float:
        return model.validation_ndcg(history, targets)


def hidden_and_table(
    network: SASRecNetwork, inputs: torch.Tensor, tail: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states at the non-padding positions of ``inputs`` (of its last ``tail`` columns where given) and
    the item table they are scored against: :meth:`Training.forward` in one process, and what DDP wraps."""
    table = network.item_table()
    columns = inputs if tail is None else inputs[:, -tail:]
    return network(inputs, table, tail=tail)[columns > 0], table


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Rescale the gradients of ``optimizer``'s parameters, and of ``rows`` (the leaf a row-wise step computes its
    item rows' gradient in, outside the optimiser) where given, so that their joint L2 norm is at most ``max_norm``;
    returns the norm before, as a tensor (reading it on a GPU would wait for the device at every step). A row-wise
    step's item rows are the only rows of the item table with a gradient, so the norm is the one the dense step over
    the whole table would clip by."""
    tensors = [
        parameter for group in optimizer.param_groups for parameter in group["params"] if parameter.grad is not None
    ]
    if rows is not None and rows.grad is not None:
        tensors.append(rows)
    return torch.nn.utils.clip_grad_norm_(tensors, max_norm)
