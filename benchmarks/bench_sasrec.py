"""SASRec speed on this machine: training epoch time, time to the validation optimum, inference latency.

Prints one JSON object. Training figures use MovieLens 100K leave-one-out (943 users); inference
uses a network over a synthetic catalogue of ``--n-items`` items (latency does not depend on the
weights, so the network is initialised, not trained) and histories of ``--history`` items.

    python benchmarks/bench_sasrec.py [--data ../shared/data/ml-100k] [--epochs 5] [--skip-optimum]
        [--side-features] [--param NAME=VALUE ...]

``--side-features`` gives the model ml-100k's genres (``side_features=True``); ``--param`` overrides
SASRec hyperparameters for the training figures, as ``liverec evaluate --param`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from liverec.data.interactions import Histories, Interactions
from liverec.data.loaders import load_dataset
from liverec.data.splits import leave_one_out
from liverec.evaluation.protocols import evaluate_ranking
from liverec.models import parse_params
from liverec.models.sasrec import SASRec

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p99_ms": round(float(np.percentile(values, 99)), 3)}


def training(
    data: Path, epochs: int, n_threads: int, skip_optimum: bool, side_features: bool, params: dict[str, object]
) -> dict[str, object]:
    dataset = load_dataset(data)
    validation, test = leave_one_out(dataset.interactions)
    features, names = None, None
    if side_features:
        if dataset.items is None:
            raise ValueError(f"--side-features: {data} has no item metadata")
        features, names = dataset.items.genre_matrix()
        params = {**params, "side_features": True}
    out: dict[str, object] = {"params": {key: str(value) for key, value in params.items()}}
    fixed = (
        SASRec(**{**params, "max_epochs": epochs, "patience": epochs, "n_threads": n_threads})
        .set_item_features(features, names)
        .fit(test.train, validation=validation)
    )
    per_epoch = np.diff([0.0] + [entry["seconds"] for entry in fixed.history])
    users = int((test.train.user_counts() >= 2).sum())
    out["epoch_seconds_median"] = round(float(np.median(per_epoch)), 3)
    out["epoch_seconds_all"] = [round(float(x), 3) for x in per_epoch]
    out["sequences_per_second"] = round(users / float(np.median(per_epoch)), 1)
    out["note"] = "epoch time includes the validation pass (943 users, full ranking) after each epoch"
    if not skip_optimum:
        started = time.perf_counter()
        model = SASRec(**{**params, "n_threads": n_threads}).set_item_features(features, names)
        model.fit(test.train, validation=validation)
        fit_seconds = time.perf_counter() - started
        best = next(e for e in model.history if e["epoch"] == model.best_epoch)
        metrics = evaluate_ranking(model, test, (10,)).metrics
        out["default_fit"] = {
            "fit_seconds": round(fit_seconds, 1),
            "epochs_run": len(model.history),
            "best_epoch": model.best_epoch,
            "seconds_to_best_epoch": round(float(best["seconds"]), 1),
            "validation_ndcg@10": round(model.best_validation_ndcg, 4),
            "test_ndcg@10": round(metrics["ndcg@10"], 4),
            "test_hr@10": round(metrics["hr@10"], 4),
        }
    return out


def inference(n_items: int, history: int, n_threads: int, trials: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    n_users = 64
    events = Interactions.from_arrays(
        rng.integers(0, n_users, 5000), rng.integers(0, n_items, 5000), n_users=n_users, n_items=n_items
    )
    model = SASRec(max_epochs=1, n_threads=n_threads).fit(events)
    sequences = [rng.integers(0, n_items, history).tolist() for _ in range(256)]
    out: dict[str, object] = {"n_items": n_items, "history_length": history, "n_threads": n_threads}
    for batch_size in (1, 16, 256):
        batch = Histories.from_lists(sequences[:batch_size])
        for _ in range(5):
            model.recommend(batch, k=10)
        samples = []
        for _ in range(trials if batch_size == 1 else max(20, trials // 10)):
            started = time.perf_counter()
            model.recommend(batch, k=10)
            samples.append(time.perf_counter() - started)
        stats = percentiles(samples)
        stats["users_per_second"] = round(batch_size / statistics.median(samples), 1)
        out[f"recommend_top10_batch_{batch_size}"] = stats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for training")
    parser.add_argument("--n-items", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--skip-optimum", action="store_true", help="skip the full default fit")
    parser.add_argument("--side-features", action="store_true", help="train with ml-100k's genres as side features")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="SASRec override")
    parser.add_argument("--skip-inference", action="store_true", help="skip the inference latency figures")
    args = parser.parse_args()
    params: dict[str, object] = parse_params("sasrec", args.param)
    report: dict[str, object] = {
        "benchmark": "sasrec",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "load_average": os.getloadavg()},
        "training_ml100k": training(
            args.data, args.epochs, args.threads, args.skip_optimum, args.side_features, params
        ),
    }
    if not args.skip_inference:
        report["inference_one_core"] = inference(args.n_items, args.history, 1, args.trials)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
