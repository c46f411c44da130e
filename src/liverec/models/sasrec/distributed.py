"""Full SASRec retraining across processes with PyTorch DistributedDataParallel.

Each process runs :func:`fit_distributed` under ``torchrun``; ranks talk over gloo on CPU or NCCL on
GPUs. The fit is a plain :class:`SASRec` given a :class:`DistributedTraining` strategy (the hooks of
:mod:`liverec.models.sasrec.training`). From the command line (one JSON object, printed by rank 0;
see :mod:`liverec.cli.distributed`)::

    torchrun --standalone --nproc-per-node 2 -m liverec.cli.distributed --data ../shared/data/ml-100k --json

How the work is split, and why N processes train the model one process would:

* **Same global batches.** Every rank holds the whole training set and draws the epoch's batches
  from the same seeded generator, so every rank knows the *global* batches of a one-process fit
  (``batch_size`` users of similar length, visited in the same random order). Each rank trains on
  its strided share of every global batch (rows ``rank, rank + world_size, ...`` of the
  length-sorted batch, so the shares are about equally long and no rank waits long at the
  all-reduce): the per-rank batch is ``batch_size / world_size``. The effective batch, the number of
  steps per epoch, the warm-up and the learning rate are those of one process, so no learning-rate
  scaling rule is needed and the tuned defaults carry over unchanged.
* **Same gradient.** A rank's loss is weighted by its share of the global batch's positions
  (``world_size * positions_on_rank / positions_in_batch``), so the gradient DDP averages is the
  gradient of the one-process batch mean, not a mean of per-rank means.
* **Identical replicas.** The same seed gives every rank the same initial weights (DDP also
  broadcasts rank 0's at the start), all-reduced gradients give every rank the same step, and the
  weights are compared across ranks after the fit (:attr:`DistributedFit.replica_max_abs_difference`).
* **Randomness.** Rank 0 keeps the one-process random streams; other ranks draw dropout masks (and
  ``bce`` negatives) from streams of their own. With one process the fit is bit for bit
  :meth:`SASRec.fit <liverec.models.sasrec.SASRec.fit>` (tested); with more, dropout makes the
  trajectory differ within noise.
* **Validation and early stopping.** Each rank scores every ``world_size``-th validation user; the
  NDCG sums are all-reduced and rank 0's result broadcast, so every rank feeds the same number into
  the same early-stopping code and all stop at the same epoch with the same best weights.
* **Threads.** On CPU each process gets ``cores / processes on this node`` torch threads unless
  ``n_threads`` is set.

Every rank gets the fitted model back, a plain :class:`~liverec.models.sasrec.SASRec` on CPU with the
one-process training strategy (saved and served like any other); the command line evaluates, saves
and registers it on rank 0 only.

"Backend" elsewhere in LiveRec means the storage deployment; here ``dist_backend`` is the
``torch.distributed`` process-group backend.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import RankingSplit
from liverec.models.sasrec.config import SASRecConfig
from liverec.models.sasrec.model import SASRec
from liverec.models.sasrec.network import SASRecNetwork
from liverec.models.sasrec.training import LocalTraining, hidden_and_table

__all__ = [
    "DIST_BACKENDS",
    "LAUNCH_HINT",
    "DistributedFit",
    "DistributedTraining",
    "World",
    "fit_distributed",
    "resolve_dist_backend",
]

#: torch.distributed process-group backends; ``auto`` picks ``nccl`` when CUDA GPUs are visible, ``gloo`` otherwise.
DIST_BACKENDS = ("auto", "gloo", "nccl")
_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: how to start a distributed fit (named in the error when the torchrun environment is missing)
LAUNCH_HINT = "torchrun --standalone --nproc-per-node N -m liverec.cli.distributed --data PATH"


@dataclass(frozen=True)
class World:
    """This process's place in the job, as ``torchrun`` describes it in environment variables."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> World:
        """Read and check ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``PORT``.

        Raises :class:`ValueError` naming the variable, its value and what was expected.
        """
        env = os.environ if env is None else env
        missing = [name for name in _REQUIRED_ENV if not env.get(name)]
        if missing:
            raise ValueError(
                f"{', '.join(missing)}: not set; a distributed fit runs under torchrun, e.g. {LAUNCH_HINT}"
            )
        world_size = _int_variable("WORLD_SIZE", env["WORLD_SIZE"], minimum=1)
        rank = _int_variable("RANK", env["RANK"], minimum=0)
        if rank >= world_size:
            raise ValueError(f"RANK: expected 0..{world_size - 1} (WORLD_SIZE={world_size}), got {rank}")
        local_world_size = _int_variable("LOCAL_WORLD_SIZE", env.get("LOCAL_WORLD_SIZE", str(world_size)), 1)
        if local_world_size > world_size:
            raise ValueError(f"LOCAL_WORLD_SIZE: expected at most WORLD_SIZE={world_size}, got {local_world_size}")
        local_rank = _int_variable("LOCAL_RANK", env.get("LOCAL_RANK", str(rank)), minimum=0)
        if local_rank >= local_world_size:
            raise ValueError(
                f"LOCAL_RANK: expected 0..{local_world_size - 1} (LOCAL_WORLD_SIZE={local_world_size}), "
                f"got {local_rank}"
            )
        port = _int_variable("MASTER_PORT", env["MASTER_PORT"], minimum=1)
        if port > 65535:
            raise ValueError(f"MASTER_PORT: expected a TCP port in 1..65535, got {port}")
        return cls(rank, world_size, local_rank, local_world_size, env["MASTER_ADDR"], port)


def _int_variable(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def resolve_dist_backend(dist_backend: str, world: World) -> tuple[str, torch.device]:
    """The process-group backend and this rank's training device for ``dist_backend`` (one of
    :data:`DIST_BACKENDS`)."""
    if dist_backend not in DIST_BACKENDS:
        raise ValueError(f"dist_backend: expected one of {', '.join(DIST_BACKENDS)}, got {dist_backend!r}")
    if dist_backend == "auto":
        dist_backend = "nccl" if torch.cuda.is_available() else "gloo"
    if dist_backend == "gloo":
        return "gloo", torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("dist_backend: 'nccl' needs CUDA GPUs and none is visible; use 'gloo' to train on CPU")
    n_gpus = torch.cuda.device_count()
    if world.local_rank >= n_gpus:
        raise ValueError(
            f"LOCAL_RANK: {world.local_rank}, but this node has {n_gpus} GPU(s); with nccl start at most "
            f"{n_gpus} process(es) per node"
        )
    return "nccl", torch.device("cuda", world.local_rank)


@dataclass
class DistributedFit:
    """What :func:`fit_distributed` returns on every rank."""

    #: the fitted model, on CPU, with the caller's config (identical on every rank)
    model: SASRec
    world: World
    #: the torch.distributed process-group backend the ranks used (``gloo`` or ``nccl``)
    dist_backend: str
    #: torch intra-op threads each process trained with (CPU)
    threads: int
    fit_seconds: float
    #: wall-clock seconds of each epoch's training pass on this rank (validation excluded)
    train_seconds: list[float]
    #: largest absolute difference between any rank's final weights and rank 0's (0.0 when in step)
    replica_max_abs_difference: float


class _TrainingForward(nn.Module):
    """What DDP wraps: the network at a batch's non-padding positions, and the item table it scored with."""

    def __init__(self, network: SASRecNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor, tail: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs``: ``[batch, seq_len]`` item rows, left-padded -> hidden ``[n_positions, dim]`` (of the last
        ``tail`` columns' positions where given), table ``[n_items + 1, dim]``."""
        return hidden_and_table(self.network, inputs, tail)


class DistributedTraining(LocalTraining):
    """The training strategy of one rank of a DDP job (see the module docstring).

    Every rank's :class:`SASRec` runs the same training loop (initialisation, the same global batches
    drawn from the same generator, early stopping, best-epoch weights); this strategy trains the rank's
    share of each batch through DDP and reduces the epoch's loss and the validation score over the
    ranks. Backward and step are the one-process ones (DDP all-reduces the gradients in backward).
    """

    row_wise = False  # every gradient goes through DDP's all-reduce: no row-wise item steps

    def __init__(self, world: World, device: torch.device, seed: int) -> None:
        self.world = world
        self.device = device
        self.seed = seed
        self.reports = world.rank == 0
        #: wall-clock seconds of each epoch's training pass on this rank (validation excluded)
        self.train_seconds: list[float] = []
        self._ddp: DistributedDataParallel | None = None
        self._loss_rng = np.random.default_rng([seed, world.rank])
        self._started = 0.0

    def _wrapped(self, network: SASRecNetwork) -> DistributedDataParallel:
        """The DDP wrapper of this fit's network (built on the first epoch of each fit)."""
        ddp = self._ddp
        if ddp is not None and isinstance(ddp.module, _TrainingForward) and ddp.module.network is network:
            return ddp
        world, device = self.world, self.device
        network.to(device)  # parameters keep their identity, so the optimiser built by the model still holds them
        if world.rank > 0:  # rank 0 keeps the one-process dropout stream; the others get their own
            torch.manual_seed(int(np.random.SeedSequence([self.seed, world.rank]).generate_state(1)[0]))
        self._ddp = DistributedDataParallel(
            _TrainingForward(network),
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # no running statistics; the feature-slot buffer is the same everywhere
        )
        return self._ddp

    def start_epoch(self, network: SASRecNetwork) -> None:
        self._started = time.perf_counter()
        self._wrapped(network)

    def share(self, rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's strided share of the batch, weighted by its share of the batch's positions, so that
        the gradient DDP averages over the ranks is the one-process batch gradient."""
        rank, world_size = self.world.rank, self.world.world_size
        mine = rows[rank::world_size]
        if len(mine) == 0:  # fewer users than ranks in this batch: step in time, contribute nothing
            return rows[:1], 0.0
        # positions in a window of L items: L - 1 (every item but the last is an input)
        return mine, world_size * float((lengths[mine] - 1).sum()) / float((lengths[rows] - 1).sum())

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def forward(
        self, network: SASRecNetwork, inputs: torch.Tensor, tail: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, table = self._wrapped(network)(inputs, tail)  # DDP all-reduces the gradients in backward
        return hidden, table

    def loss_rng(self, rng: np.random.Generator, loss: str) -> np.random.Generator:
        # bce draws one negative per position, a count that differs between ranks: from the rank's own
        # stream, so the shared one stays in step (sampled-softmax draws a fixed count: shared negatives)
        return self._loss_rng if loss == "bce" and self.world.world_size > 1 else rng

    def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
        """The mean loss over every rank's positions; checks that the ranks drew the same batches."""
        try:
            if self.world.world_size == 1:
                return total / max(count, 1)
            stats = self._gather([total, float(count), _fingerprint(rng)])
            if len(set(stats[:, 2].tolist())) > 1:
                raise RuntimeError(
                    "fit_distributed: the ranks' shared batch generators diverged (ranks trained different "
                    "batches); every rank must run the same code on the same data and seed"
                )
            return float(stats[:, 0].sum() / max(stats[:, 1].sum(), 1.0))
        finally:
            self.train_seconds.append(time.perf_counter() - self._started)

    def validation_ndcg(self, model: SASRec, history: Histories, targets: Histories) -> float:
        """Mean NDCG@10 over all ranks: each scores every ``world_size``-th user; rank 0's total is broadcast."""
        rank, world_size = self.world.rank, self.world.world_size
        network = model.network
        if network is not None and self.device.type != "cpu":  # SASRec scores on CPU: with a CPU copy
            model.network = copy.deepcopy(network).cpu()
        try:
            if world_size == 1:
                return model.validation_ndcg(history, targets)
            rows = np.arange(rank, len(history), world_size)
            mean = model.validation_ndcg(history.select(rows), targets.select(rows))
        finally:
            model.network = network
        totals = torch.tensor([mean * len(rows), float(len(rows))], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        dist.broadcast(totals, src=0)  # every rank's early stopping sees rank 0's number, bit for bit
        return float(totals[0] / max(float(totals[1]), 1.0))

    def _gather(self, values: Sequence[float]) -> np.ndarray:
        """``[world_size, len(values)]``: ``values`` from every rank (float64)."""
        local = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world.world_size)]
        dist.all_gather(gathered, local)
        return torch.stack(gathered).cpu().numpy()

    def replica_difference(self, network: SASRecNetwork) -> float:
        """Largest absolute difference between any rank's weights of ``network`` and rank 0's."""
        if self.world.world_size == 1:
            return 0.0
        flat = torch.cat([v.detach().reshape(-1).double() for v in network.state_dict().values()])
        gathered = [torch.empty_like(flat) for _ in range(self.world.world_size)]
        dist.all_gather(gathered, flat)
        return max(float((other - gathered[0]).abs().max()) for other in gathered)


def _fingerprint(rng: np.random.Generator) -> float:
    """A float that changes with ``rng``'s position (compared across ranks to catch divergent batches)."""
    state = rng.bit_generator.state["state"]
    value = state["state"] if isinstance(state, dict) else state
    return float(int(value) % (1 << 52))


def fit_distributed(
    config: SASRecConfig,
    interactions: Interactions,
    validation: RankingSplit | None = None,
    *,
    dist_backend: str = "auto",
    timeout_s: float = 300.0,
    progress: bool = False,
) -> DistributedFit:
    """Fit SASRec with every process of a ``torchrun`` job; call it in each process with the same arguments.

    Joins the process group from the torchrun environment (or uses the one already initialised with
    the same rank and world size), trains as the module docstring describes and returns the fitted
    model on every rank. ``dist_backend``: one of :data:`DIST_BACKENDS`. ``timeout_s`` bounds how long a
    rank waits for the others, at start-up and at each collective. Raises :class:`ValueError` for a bad
    world (missing or inconsistent torchrun variables, a ``batch_size`` smaller than the world, ``nccl``
    without GPUs) before joining, and :class:`RuntimeError` when the other ranks do not show up.
    """
    world = World.from_environment()
    if config.batch_size < world.world_size:
        raise ValueError(
            f"batch_size: each of the WORLD_SIZE={world.world_size} processes needs at least one user per "
            f"batch; expected batch_size >= {world.world_size}, got {config.batch_size}"
        )
    backend_name, device = resolve_dist_backend(dist_backend, world)
    if device.type == "cuda" and config.training_loss(interactions.n_items) == "sampled-softmax":
        raise ValueError("loss: 'sampled-softmax' keeps its log-Q table on CPU in SASRec; with nccl use softmax or bce")
    threads = config.n_threads or max(1, (os.cpu_count() or 1) // world.local_world_size)
    created = _join(world, backend_name, device, timeout_s)
    try:
        training = DistributedTraining(world, device, config.seed)
        model = SASRec(dataclasses.replace(config, n_threads=threads), training=training)
        model.progress = progress and world.rank == 0
        started = time.perf_counter()
        model.fit(interactions, validation)
        fit_seconds = time.perf_counter() - started
        difference = training.replica_difference(model._net())
    finally:
        if created:
            dist.destroy_process_group()
    _make_local(model, config)
    return DistributedFit(model, world, backend_name, threads, fit_seconds, training.train_seconds, difference)


def _join(world: World, backend_name: str, device: torch.device, timeout_s: float) -> bool:
    """Join the process group (True), or check the one already initialised against ``world`` (False)."""
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (world.rank, world.world_size):
            raise ValueError(
                f"RANK/WORLD_SIZE: the environment says {world.rank}/{world.world_size}, the initialised process "
                f"group {dist.get_rank()}/{dist.get_world_size()}"
            )
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            backend_name,
            init_method="env://",
            rank=world.rank,
            world_size=world.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except (RuntimeError, dist.DistError) as error:
        raise RuntimeError(
            f"fit_distributed: rank {world.rank} of WORLD_SIZE={world.world_size} could not join the others at "
            f"{world.master_addr}:{world.master_port} within {timeout_s:g} s; start all {world.world_size} "
            f"processes together (torchrun --nproc-per-node {world.local_world_size}) ({error})"
        ) from error
    return True


def _make_local(model: SASRec, config: SASRecConfig) -> None:
    """Turn the fitted ``model`` into a plain one-process SASRec on CPU with the caller's ``config``."""
    model._net().cpu()
    for state in model._optimizer().state.values():  # AdamW moments follow the weights to CPU
        for key, value in state.items():
            if torch.is_tensor(value):
                state[key] = value.cpu()
    model.training = LocalTraining()
    model.config = config
