"""Full SASRec retraining across processes with PyTorch DistributedDataParallel (issue 6).

Each process runs :func:`fit_distributed` under ``torchrun``; ranks talk over gloo on CPU or NCCL on
GPUs. From the command line (one JSON object, printed by rank 0)::

    torchrun --standalone --nproc-per-node 2 -m liverec.models.distributed --data ../shared/data/ml-100k --json

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

Every rank gets the fitted model back, a plain :class:`~liverec.models.sasrec.SASRec` on CPU (saved
and served like any other); the command line evaluates, saves and registers it on rank 0 only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import RankingSplit
from liverec.models.sasrec import SASRec, SASRecConfig, SASRecNetwork

__all__ = ["BACKENDS", "DistributedFit", "World", "fit_distributed", "main", "resolve_backend"]

#: ``auto`` picks ``nccl`` when CUDA GPUs are visible, ``gloo`` otherwise.
BACKENDS = ("auto", "gloo", "nccl")
_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_LAUNCH_HINT = "torchrun --standalone --nproc-per-node N -m liverec.models.distributed --data PATH"


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
                f"{', '.join(missing)}: not set; a distributed fit runs under torchrun, e.g. {_LAUNCH_HINT}"
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


def resolve_backend(backend: str, world: World) -> tuple[str, torch.device]:
    """The process-group backend and this rank's training device for ``backend`` (one of :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        return "gloo", torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("backend: 'nccl' needs CUDA GPUs and none is visible; use 'gloo' to train on CPU")
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
    backend: str
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

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs``: ``[batch, seq_len]`` item rows, left-padded -> hidden ``[n_positions, dim]``, table
        ``[n_items + 1, dim]``."""
        table = self.network.item_table()
        return self.network(inputs, table)[inputs > 0], table


class _DistributedSASRec(SASRec):
    """SASRec whose epochs and validation run across the process group (see the module docstring).

    Only the training pass and the validation score change; ``SASRec._fit`` (initialisation, early
    stopping, best-epoch weights) runs unchanged on every rank. Its own attributes start with
    ``_dist_`` so that :func:`fit_distributed` can hand back a plain :class:`SASRec`.
    """

    def __init__(self, config: SASRecConfig, world: World, device: torch.device) -> None:
        super().__init__(config)
        self._dist_world = world
        self._dist_device = device
        self._dist_ddp: DistributedDataParallel | None = None
        self._dist_loss_rng = np.random.default_rng([config.seed, world.rank])
        self._dist_train_seconds: list[float] = []

    def _dist_wrapped(self, network: SASRecNetwork) -> DistributedDataParallel:
        """The DDP wrapper of this fit's network (built on the first epoch of each fit)."""
        ddp = self._dist_ddp
        if ddp is not None and isinstance(ddp.module, _TrainingForward) and ddp.module.network is network:
            return ddp
        world, device = self._dist_world, self._dist_device
        network.to(device)  # parameters keep their identity, so the optimiser built by _fit still holds them
        if world.rank > 0:  # rank 0 keeps the one-process dropout stream; the others get their own
            torch.manual_seed(int(np.random.SeedSequence([self.config.seed, world.rank]).generate_state(1)[0]))
        self._dist_ddp = DistributedDataParallel(
            _TrainingForward(network),
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # no running statistics; the feature-slot buffer is the same everywhere
        )
        return self._dist_ddp

    def _train_epoch(
        self, histories: Histories, rng: np.random.Generator, learn: Histories | None = None, shuffle: bool = False
    ) -> float:
        """:meth:`SASRec._train_epoch` (every rank draws the same global batches from ``rng``), timed; the
        hooks below share each batch out across the ranks. With one process it is that method exactly."""
        started = time.perf_counter()
        self._dist_wrapped(self._net())
        loss = super()._train_epoch(histories, rng, learn, shuffle)
        self._dist_train_seconds.append(time.perf_counter() - started)
        return loss

    def _batch_share(self, rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's strided share of the batch, weighted by its share of the batch's positions, so that
        the gradient DDP averages over the ranks is the one-process batch gradient."""
        rank, world_size = self._dist_world.rank, self._dist_world.world_size
        mine = rows[rank::world_size]
        if len(mine) == 0:  # fewer users than ranks in this batch: step in time, contribute nothing
            return rows[:1], 0.0
        # positions in a window of L items: L - 1 (every item but the last is an input)
        return mine, world_size * float((lengths[mine] - 1).sum()) / float((lengths[rows] - 1).sum())

    def _batch_tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch).to(self._dist_device)

    def _batch_forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, table = self._dist_wrapped(self._net())(inputs)  # DDP all-reduces the gradients in backward
        return hidden, table

    def _epoch_loss_rng(self, rng: np.random.Generator) -> np.random.Generator:
        # bce draws one negative per position, a count that differs between ranks: from the rank's own
        # stream, so the shared one stays in step (sampled-softmax draws a fixed count: shared negatives)
        return self._dist_loss_rng if self.config.loss == "bce" and self._dist_world.world_size > 1 else rng

    def _epoch_mean_loss(self, total: float, count: int, rng: np.random.Generator) -> float:
        if self._dist_world.world_size == 1:
            return total / max(count, 1)
        stats = self._dist_gather([total, float(count), _fingerprint(rng)])
        if len(set(stats[:, 2].tolist())) > 1:
            raise RuntimeError(
                "fit_distributed: the ranks' shared batch generators diverged (ranks trained different "
                "batches); every rank must run the same code on the same data and seed"
            )
        return float(stats[:, 0].sum() / max(stats[:, 1].sum(), 1.0))

    def _validation_ndcg(self, history: Histories, targets: Histories) -> float:
        """Mean NDCG@10 over all ranks: each scores every ``world_size``-th user; rank 0's total is broadcast."""
        rank, world_size = self._dist_world.rank, self._dist_world.world_size
        network = self._net()
        if self._dist_device.type != "cpu":  # SASRec scores on CPU: a CPU copy of the weights scores
            self.network = copy.deepcopy(network).cpu()
        try:
            if world_size == 1:
                return super()._validation_ndcg(history, targets)
            rows = np.arange(rank, len(history), world_size)
            mean = super()._validation_ndcg(history.select(rows), targets.select(rows))
        finally:
            self.network = network
        totals = torch.tensor([mean * len(rows), float(len(rows))], dtype=torch.float64, device=self._dist_device)
        dist.all_reduce(totals)
        dist.broadcast(totals, src=0)  # every rank's early stopping sees rank 0's number, bit for bit
        return float(totals[0] / max(float(totals[1]), 1.0))

    def _dist_gather(self, values: Sequence[float]) -> np.ndarray:
        """``[world_size, len(values)]``: ``values`` from every rank (float64)."""
        local = torch.tensor(list(values), dtype=torch.float64, device=self._dist_device)
        gathered = [torch.empty_like(local) for _ in range(self._dist_world.world_size)]
        dist.all_gather(gathered, local)
        return torch.stack(gathered).cpu().numpy()

    def _dist_replica_difference(self) -> float:
        """Largest absolute difference between any rank's weights and rank 0's."""
        if self._dist_world.world_size == 1:
            return 0.0
        flat = torch.cat([v.detach().reshape(-1).double() for v in self._net().state_dict().values()])
        gathered = [torch.empty_like(flat) for _ in range(self._dist_world.world_size)]
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
    backend: str = "auto",
    timeout_s: float = 300.0,
    progress: bool = False,
) -> DistributedFit:
    """Fit SASRec with every process of a ``torchrun`` job; call it in each process with the same arguments.

    Joins the process group from the torchrun environment (or uses the one already initialised with
    the same rank and world size), trains as the module docstring describes and returns the fitted
    model on every rank. ``timeout_s`` bounds how long a rank waits for the others, at start-up and
    at each collective. Raises :class:`ValueError` for a bad world (missing or inconsistent torchrun
    variables, a ``batch_size`` smaller than the world, ``nccl`` without GPUs) before joining, and
    :class:`RuntimeError` when the other ranks do not show up.
    """
    world = World.from_environment()
    if config.batch_size < world.world_size:
        raise ValueError(
            f"batch_size: each of the WORLD_SIZE={world.world_size} processes needs at least one user per "
            f"batch; expected batch_size >= {world.world_size}, got {config.batch_size}"
        )
    backend_name, device = resolve_backend(backend, world)
    if device.type == "cuda" and config.loss == "sampled-softmax":
        raise ValueError("loss: 'sampled-softmax' keeps its log-Q table on CPU in SASRec; with nccl use softmax or bce")
    threads = config.n_threads or max(1, (os.cpu_count() or 1) // world.local_world_size)
    created = not dist.is_initialized()
    if created:
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
    elif (dist.get_rank(), dist.get_world_size()) != (world.rank, world.world_size):
        raise ValueError(
            f"RANK/WORLD_SIZE: the environment says {world.rank}/{world.world_size}, the initialised process "
            f"group {dist.get_rank()}/{dist.get_world_size()}"
        )
    try:
        rank_config = dataclasses.replace(config, n_threads=threads, verbose=config.verbose and world.rank == 0)
        model = _DistributedSASRec(rank_config, world, device)
        model.progress = progress and world.rank == 0
        started = time.perf_counter()
        model.fit(interactions, validation)
        fit_seconds = time.perf_counter() - started
        difference = model._dist_replica_difference()
    finally:
        if created:
            dist.destroy_process_group()
    return DistributedFit(
        _plain_model(model, config), world, backend_name, threads, fit_seconds, model._dist_train_seconds, difference
    )


def _plain_model(model: _DistributedSASRec, config: SASRecConfig) -> SASRec:
    """A plain CPU :class:`SASRec` holding ``model``'s fitted state, with the caller's ``config``."""
    model._net().cpu()
    for state in model._optimizer().state.values():  # AdamW moments follow the weights to CPU
        for key, value in state.items():
            if torch.is_tensor(value):
                state[key] = value.cpu()
    plain = SASRec(config)
    plain.__dict__.update(
        {key: value for key, value in vars(model).items() if not key.startswith("_dist_") and key != "config"}
    )
    return plain


# --------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from liverec.cli import _add_data_options

    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc-per-node N -m liverec.models.distributed",
        description="Fully retrain SASRec with every process of a torchrun job (DDP), then rank 0 measures it "
        "under leave-one-out full ranking (liverec evaluate --protocol loo) and optionally registers it.",
    )
    _add_data_options(parser)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a SASRec hyperparameter")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: nccl with GPUs, else gloo")
    parser.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS", help="how long a rank waits for the others"
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="DIR",
        help="register the model in the data folder DIR (its models/ registry, as liverec train --data-dir does; "
        "with LIVEREC_BACKEND=redis a promotion is announced to every replica)",
    )
    parser.add_argument("--promote", action="store_true", help="with --save: serve the new version")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; every rank runs it, rank 0 prints. Exit code 2 with one line for bad input."""
    from liverec.errors import LiveRecError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (LiveRecError, FileNotFoundError, ValueError) as error:
        print(f"liverec.models.distributed: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from liverec.backends import open_registry
    from liverec.cli import load_input
    from liverec.data.splits import make_split
    from liverec.errors import UsageError
    from liverec.evaluation.protocols import evaluate_ranking
    from liverec.models import parse_params
    from liverec.settings import Settings

    world = World.from_environment()
    params = parse_params("sasrec", args.param)
    params.setdefault("seed", args.seed)
    try:
        config = SASRecConfig(**params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--param: {error}") from None
    dataset, source = load_input(args)
    test, validation = make_split(dataset, "loo", 0.2)  # exactly `liverec evaluate --protocol loo`'s split
    fit = fit_distributed(
        config,
        test.train,
        validation,
        backend=args.backend,
        timeout_s=args.timeout,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if world.rank != 0:
        return 0
    model = fit.model
    started = time.perf_counter()
    metrics = evaluate_ranking(model, test, (10,)).metrics
    seconds = np.diff([0.0] + [entry["seconds"] for entry in model.history])
    test_metrics = {name: round(float(metrics[name]), 4) for name in ("ndcg@10", "hr@10", "mrr@10", "coverage@10")}
    report: dict[str, Any] = {
        "dataset": {"name": dataset.name, "source": source, "events": len(dataset.interactions)},
        "protocol": "loo (leave-one-out: last event per user is the test target, the one before validation)",
        "world_size": fit.world.world_size,
        "backend": fit.backend,
        "threads_per_process": fit.threads,
        "parameters": dataclasses.asdict(model.config),
        "validation_ndcg@10": round(float(model.best_validation_ndcg), 4),
        "best_epoch": int(model.best_epoch),
        "epochs": len(model.history),
        "test": test_metrics,
        "evaluated_users": len(test.history),
        "seconds_per_epoch": round(float(np.median(seconds)), 3) if len(seconds) else None,
        "train_seconds_per_epoch": round(float(np.median(fit.train_seconds)), 3) if fit.train_seconds else None,
        "fit_seconds": round(fit.fit_seconds, 2),
        "evaluate_seconds": round(time.perf_counter() - started, 2),
        "replica_max_abs_difference": fit.replica_max_abs_difference,
        "history": [{key: round(float(value), 6) for key, value in entry.items()} for entry in model.history],
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    if args.save is not None:
        registry = open_registry(Settings.load(data_dir=args.save))
        training = {
            "source": source,
            "distributed": {"world_size": fit.world.world_size, "backend": fit.backend},
            "fit_seconds": round(fit.fit_seconds, 3),
            "protocol": "leave-one-out (last event held out)",
        }
        version = registry.register(
            model,
            [str(item) for item in dataset.item_map.external_ids],
            metrics={**test_metrics, "users_evaluated": float(len(test.history))},
            training=training,
            user_ids=[str(user) for user in dataset.user_map.external_ids],
        )
        if args.promote:
            registry.promote(version, reason=f"torchrun distributed fit, {fit.world.world_size} processes")
        report["version"] = version
        report["registry"] = str(args.save)
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("world_size", "backend", "threads_per_process", "validation_ndcg@10", "best_epoch", "epochs"):
            print(f"{key:<28}{report[key]}")
        print(f"{'test':<28}{json.dumps(test_metrics)}")
        for key in ("seconds_per_epoch", "fit_seconds", "replica_max_abs_difference", "version"):
            if key in report:
                print(f"{key:<28}{report[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
