"""``python -m liverec.cli.distributed``: fully retrain SASRec with every process of a ``torchrun`` job.

Every rank runs :func:`main`; the ranks train together (:func:`liverec.models.sasrec.distributed.fit_distributed`),
then rank 0 evaluates the model under leave-one-out full ranking, prints one report and optionally
registers it::

    torchrun --standalone --nproc-per-node 2 -m liverec.cli.distributed --data ../shared/data/ml-100k --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverec.cli.common import add_data_options, load_input
from liverec.data.interactions import Dataset
from liverec.data.splits import RankingSplit, make_split
from liverec.errors import LiveRecError, UsageError
from liverec.models import parse_params
from liverec.models.sasrec.config import SASRecConfig
from liverec.models.sasrec.distributed import DIST_BACKENDS, DistributedFit, World, fit_distributed

PROG = "torchrun --standalone --nproc-per-node N -m liverec.cli.distributed"


def build_parser() -> argparse.ArgumentParser:
    """The command's options: the data options of ``liverec``, SASRec parameters, the process group's."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fully retrain SASRec with every process of a torchrun job (DDP), then rank 0 measures it "
        "under leave-one-out full ranking (liverec evaluate --protocol loo) and optionally registers it.",
    )
    add_data_options(parser)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a SASRec hyperparameter")
    parser.add_argument(
        "--dist-backend",
        choices=DIST_BACKENDS,
        default="auto",
        help="torch.distributed process-group backend; auto: nccl with GPUs, else gloo",
    )
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
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (LiveRecError, FileNotFoundError, ValueError) as error:
        print(f"liverec.cli.distributed: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """Fit on every rank; on rank 0, evaluate, optionally register, and print the report."""
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
        dist_backend=args.dist_backend,
        timeout_s=args.timeout,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if world.rank != 0:
        return 0
    report = _report(fit, dataset, source, test)
    if args.save is not None:
        report["version"] = _register(fit, dataset, source, report, args.save, args.promote)
        report["registry"] = str(args.save)
    if args.json:
        print(json.dumps(report))
    else:
        _print_lines(report)
    return 0


def _report(fit: DistributedFit, dataset: Dataset, source: str, test: RankingSplit) -> dict[str, Any]:
    """Rank 0's report: the fit, its test metrics (leave-one-out full ranking) and timings."""
    from liverec.evaluation.protocols import evaluate_ranking

    model = fit.model
    started = time.perf_counter()
    metrics = evaluate_ranking(model, test, (10,)).metrics
    seconds = np.diff([0.0] + [entry["seconds"] for entry in model.history])
    test_metrics = {name: round(float(metrics[name]), 4) for name in ("ndcg@10", "hr@10", "mrr@10", "coverage@10")}
    return {
        "dataset": {"name": dataset.name, "source": source, "events": len(dataset.interactions)},
        "protocol": "loo (leave-one-out: last event per user is the test target, the one before validation)",
        "world_size": fit.world.world_size,
        "dist_backend": fit.dist_backend,
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


def _register(
    fit: DistributedFit, dataset: Dataset, source: str, report: dict[str, Any], directory: Path, promote: bool
) -> str:
    """Register the fitted model in the data folder ``directory`` (and promote it); its version."""
    from liverec.backends import open_backend
    from liverec.settings import Settings

    training = {
        "source": source,
        "distributed": {"world_size": fit.world.world_size, "dist_backend": fit.dist_backend},
        "fit_seconds": round(fit.fit_seconds, 3),
        "protocol": "leave-one-out (last event held out)",
    }
    with open_backend(Settings.load(data_dir=directory)) as backend:  # the announcer's connection, if any
        registry = backend.open_registry()
        version = registry.register(
            fit.model,
            [str(item) for item in dataset.item_map.external_ids],
            metrics={**report["test"], "users_evaluated": float(report["evaluated_users"])},
            training=training,
            user_ids=[str(user) for user in dataset.user_map.external_ids],
        )
        if promote:
            registry.promote(version, reason=f"torchrun distributed fit, {fit.world.world_size} processes")
    return str(version)


def _print_lines(report: dict[str, Any]) -> None:
    """The report as aligned lines (without ``--json``)."""
    for key in ("world_size", "dist_backend", "threads_per_process", "validation_ndcg@10", "best_epoch", "epochs"):
        print(f"{key:<28}{report[key]}")
    print(f"{'test':<28}{json.dumps(report['test'])}")
    for key in ("seconds_per_epoch", "fit_seconds", "replica_max_abs_difference", "version"):
        if key in report:
            print(f"{key:<28}{report[key]}")


if __name__ == "__main__":
    sys.exit(main())
