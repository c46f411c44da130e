"""Fit and evaluation time of every baseline on MovieLens 100K, leave-one-out full ranking.

Prints one JSON object: per model, the median over ``--repeats`` runs of fit seconds and evaluation
seconds, with the NDCG@10 / Recall@10 of the test split (identical across runs: fits are seeded).

    python benchmarks/bench_baselines.py [--data ../shared/data/ml-100k] [--repeats 3] [--models pop,ease]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from liverec.data.loaders import load_dataset
from liverec.data.splits import leave_one_out
from liverec.evaluation.protocols import evaluate_ranking
from liverec.models import MODEL_REGISTRY, create_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(sorted(MODEL_REGISTRY)))
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    _validation, test = leave_one_out(dataset.interactions)
    results = {}
    for name in args.models.split(","):
        fit_seconds, eval_seconds = [], []
        metrics: dict[str, float] = {}
        for _ in range(args.repeats):
            model = create_model(name, seed=0)
            started = time.perf_counter()
            model.fit(test.train)
            fit_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            metrics = evaluate_ranking(model, test, (10,)).metrics
            eval_seconds.append(time.perf_counter() - started)
        results[name] = {
            "fit_seconds_median": round(statistics.median(fit_seconds), 3),
            "evaluate_seconds_median": round(statistics.median(eval_seconds), 3),
            "ndcg@10": round(metrics["ndcg@10"], 4),
            "recall@10": round(metrics["recall@10"], 4),
        }
    print(
        json.dumps(
            {
                "benchmark": "baselines-ml100k-loo",
                "dataset": str(args.data),
                "repeats": args.repeats,
                "machine": {
                    "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg(),
                },
                "models": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
