"""Distributed SASRec retraining (DDP, torchrun): one process against N on the same data and seed.

Prints one JSON object. Each run is a real ``torchrun --standalone --nproc-per-node N -m
liverec.cli.distributed`` job on MovieLens 100K leave-one-out (the split of ``liverec evaluate
--protocol loo``), early stopping on validation NDCG@10; each process gets ``cores / N`` torch threads.

    python benchmarks/bench_distributed.py [--data ../shared/data/ml-100k] [--nprocs 1,2] [--param NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
KEPT = (
    "world_size",
    "dist_backend",
    "threads_per_process",
    "validation_ndcg@10",
    "best_epoch",
    "epochs",
    "test",
    "seconds_per_epoch",
    "train_seconds_per_epoch",
    "fit_seconds",
    "replica_max_abs_difference",
)


def run(n_processes: int, data: Path, params: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n_processes}",
        "-m",
        "liverec.cli.distributed",
        f"--data={data}",
        "--json",
        "--quiet",
        *(f"--param={pair}" for pair in params),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    out = {key: report[key] for key in KEPT}
    out["wall_seconds"] = round(time.perf_counter() - started, 1)  # start-up, data, fit and test evaluation
    out["validation_curve"] = [round(entry["val_ndcg@10"], 4) for entry in report["history"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--nprocs", default="1,2", help="process counts to run, comma-separated (default 1,2)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="SASRec override")
    args = parser.parse_args()
    runs = [run(int(n), args.data, args.param) for n in args.nprocs.split(",")]
    report: dict[str, Any] = {
        "benchmark": "distributed",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "load_average": os.getloadavg()},
        "data": str(args.data),
        "params": args.param,
        "runs": runs,
    }
    if len(runs) > 1:
        first = runs[0]
        report["against_first"] = [
            {
                "world_size": other["world_size"],
                "validation_ndcg@10": round(other["validation_ndcg@10"] - first["validation_ndcg@10"], 4),
                "test_ndcg@10": round(other["test"]["ndcg@10"] - first["test"]["ndcg@10"], 4),
                "seconds_per_epoch_ratio": round(other["seconds_per_epoch"] / first["seconds_per_epoch"], 2),
            }
            for other in runs[1:]
        ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
