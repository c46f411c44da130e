"""SASRec training objectives on ml-100k: validation and test NDCG@10 per seed, paired against the default.

The path is that of ``liverec evaluate --data DATA --model sasrec --json`` (leave-one-out, full
ranking, seen items excluded, early stopping on the validation item). Each configuration is a named
set of ``SASRecConfig`` overrides (``--config NAME:key=value,key=value``, repeatable); the default
config (``baseline``) always runs too, on the same seeds, so every comparison is paired by seed.
``--param`` overrides apply to every configuration. Each run is a fresh Python process limited to
``--threads`` threads, and runs go one at a time (seed by seed, every configuration for a seed).
Prints one JSON line per run as it goes, then one JSON summary: means over seeds and, for each
configuration, the paired validation and test differences from ``baseline`` (mean, standard error,
seeds better). Choose on ``validation_ndcg@10``, never test.

    python benchmarks/bench_sasrec_loss.py [--data ../shared/data/ml-100k] [--seeds 0,1,2] [--threads 1]
        [--config exclude_seen:loss_exclude_seen=true ...] [--param NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
BASELINE = "baseline"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def one_run(data: Path, seed: int, pairs: list[str], threads: int) -> dict[str, Any]:
    """Fit and evaluate one model exactly as ``liverec evaluate`` does, with ``pairs`` as config overrides."""
    import torch

    import liverec.models.sasrec as sasrec_module
    from liverec.data.loaders import load_dataset
    from liverec.data.splits import make_split
    from liverec.evaluation.protocols import evaluate_ranking
    from liverec.models import create_model, parse_params
    from liverec.models.sasrec import LocalTraining, SASRec, SASRecNetwork

    torch.set_num_threads(threads)
    params = parse_params("sasrec", pairs)
    params.setdefault("seed", seed)
    params.setdefault("n_threads", threads)
    dataset = load_dataset(data)
    split, validation = make_split(dataset, "loo", 0.2)
    model = create_model("sasrec", **params)
    if not isinstance(model, SASRec):
        raise TypeError(f"expected a SASRec, got {type(model).__name__}")
    train_seconds: list[float] = []

    class Timed(LocalTraining):
        """One-process training that times each epoch's training pass (without validation scoring)."""

        started = 0.0

        def start_epoch(self, network: SASRecNetwork) -> None:
            self.started = time.perf_counter()

        def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
            train_seconds.append(time.perf_counter() - self.started)
            return super().finish_epoch(network, total, count, rng)

    model.training = Timed()
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_ranking(model, split, (10,)).metrics
    per_epoch = np.diff([0.0] + [entry["seconds"] for entry in model.history])
    # the model's code: every module of the sasrec package
    source = b"".join(path.read_bytes() for path in sorted(Path(sasrec_module.__file__).parent.glob("*.py")))
    return {
        "seed": seed,
        "params": pairs,
        "validation_ndcg@10": round(model.best_validation_ndcg, 4),
        "test_ndcg@10": round(metrics["ndcg@10"], 4),
        "test_hr@10": round(metrics["hr@10"], 4),
        "best_epoch": model.best_epoch,
        "epochs_run": len(model.history),
        "epoch_seconds_median": round(float(np.median(per_epoch)), 3),
        "train_epoch_seconds_median": round(float(np.median(train_seconds)), 3),
        "fit_seconds": round(fit_seconds, 1),
        "sasrec_sha256": hashlib.sha256(source).hexdigest()[:12],
    }


def parse_config(text: str) -> tuple[str, list[str]]:
    """``"name:key=value,key=value"`` -> ``("name", ["key=value", "key=value"])``."""
    name, sep, rest = text.partition(":")
    if not sep or not name or name == BASELINE:
        raise argparse.ArgumentTypeError(
            f"--config: expected NAME:key=value[,key=value], not {BASELINE!r}; got {text!r}"
        )
    return name, [pair for pair in rest.split(",") if pair]


def paired(runs: list[dict[str, Any]], name: str, key: str) -> dict[str, Any]:
    """Per-seed differences of ``key`` between configuration ``name`` and the baseline: mean, SE, seeds better."""
    base = {r["seed"]: r[key] for r in runs if r["config"] == BASELINE}
    diffs = [r[key] - base[r["seed"]] for r in runs if r["config"] == name and r["seed"] in base]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {
        "mean": round(statistics.mean(diffs), 4),
        "se": round(se, 4),
        "better": sum(d > 0 for d in diffs),
        "of": len(diffs),
        "per_seed": [round(d, 4) for d in diffs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per run (default 1)")
    parser.add_argument("--config", action="append", default=[], type=parse_config, metavar="NAME:K=V[,K=V]")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="override for every run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the default configuration")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single run
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.one:
        print(json.dumps(one_run(args.data, seeds[0], args.param, args.threads)))
        return
    configs = ([] if args.no_baseline else [(BASELINE, [])]) + list(args.config)
    environment = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(args.threads))}
    runs = []
    for seed in seeds:
        for name, pairs in configs:
            command = [sys.executable, __file__, "--one", "--data", str(args.data), "--seeds", str(seed)]
            command += ["--threads", str(args.threads)] + [f"--param={pair}" for pair in args.param + pairs]
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
            runs.append({"config": name, **json.loads(output.strip().splitlines()[-1])})
            print(json.dumps(runs[-1]), flush=True)
    keys = ("validation_ndcg@10", "test_ndcg@10", "test_hr@10", "best_epoch", "train_epoch_seconds_median")
    summary = {
        name: {key: round(statistics.mean(r[key] for r in runs if r["config"] == name), 4) for key in keys}
        for name, _ in configs
    }
    differences = {
        name: {key: paired(runs, name, key) for key in ("validation_ndcg@10", "test_ndcg@10")}
        for name, _ in configs
        if name != BASELINE and not args.no_baseline
    }
    report = {
        "benchmark": "sasrec-loss",
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "threads": args.threads},
        "configs": {name: pairs for name, pairs in configs},
        "params": args.param,
        "mean_over_seeds": summary,
        "paired_difference_vs_baseline": differences,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
