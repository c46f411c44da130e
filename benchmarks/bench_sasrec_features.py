"""SASRec with and without item side features (genres) on ml-100k: validation and test NDCG@10 per seed.

The path is that of ``liverec evaluate --data DATA --model sasrec --json`` (leave-one-out, full
ranking, seen items excluded, early stopping on the validation item), plus
``SASRec.set_item_features(*dataset.items.genre_matrix())`` for the ``genres`` variant. Each run is a
fresh Python process, so no run inherits another's random or thread state. Prints one JSON object
(and one JSON line per run on stderr as it goes). Choose defaults on ``validation_ndcg@10``, never test.

    python benchmarks/bench_sasrec_features.py [--data ../shared/data/ml-100k] [--seeds 0,1,2]
        [--variants plain,genres] [--param NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
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
VARIANTS = {"plain": False, "genres": True}


def one_run(data: Path, variant: str, seed: int, pairs: list[str]) -> dict[str, Any]:
    """Fit and evaluate one model exactly as ``liverec evaluate`` does, features given for ``genres``."""
    from liverec.data.loaders import load_dataset
    from liverec.data.splits import make_split
    from liverec.evaluation.protocols import evaluate_ranking
    from liverec.models import create_model, parse_params
    from liverec.models.sasrec import SASRec

    params = parse_params("sasrec", pairs)
    params.setdefault("seed", seed)
    params["side_features"] = VARIANTS[variant]
    dataset = load_dataset(data)
    split, validation = make_split(dataset, "loo", 0.2)
    model = create_model("sasrec", **params)
    if not isinstance(model, SASRec):
        raise TypeError(f"expected a SASRec, got {type(model).__name__}")
    if VARIANTS[variant]:
        if dataset.items is None:
            raise ValueError(f"--data {data}: the dataset has no item metadata (genres)")
        model.set_item_features(*dataset.items.genre_matrix())
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_ranking(model, split, (10,)).metrics
    per_epoch = np.diff([0.0] + [entry["seconds"] for entry in model.history])
    return {
        "variant": variant,
        "seed": seed,
        "params": pairs,
        "validation_ndcg@10": round(model.best_validation_ndcg, 4),
        "test_ndcg@10": round(metrics["ndcg@10"], 4),
        "test_hr@10": round(metrics["hr@10"], 4),
        "best_epoch": model.best_epoch,
        "epochs_run": len(model.history),
        "epoch_seconds_median": round(float(np.median(per_epoch)), 3),
        "fit_seconds": round(fit_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--variants", default="plain,genres", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="SASRec override")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single run
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected some of {sorted(VARIANTS)}")
    if args.one:
        print(json.dumps(one_run(args.data, variants[0], seeds[0], args.param)))
        return
    runs = []
    for seed in seeds:
        for variant in variants:
            command = [sys.executable, __file__, "--one", "--data", str(args.data), "--seeds", str(seed)]
            command += ["--variants", variant] + [f"--param={pair}" for pair in args.param]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {
        variant: {
            key: round(statistics.mean(r[key] for r in runs if r["variant"] == variant), 4)
            for key in ("validation_ndcg@10", "test_ndcg@10", "test_hr@10", "epoch_seconds_median", "fit_seconds")
        }
        for variant in variants
    }
    report = {
        "benchmark": "sasrec-side-features",
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "runs": runs,
        "mean_over_seeds": summary,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
