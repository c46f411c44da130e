"""Does SASRec's refit on training + validation events pay? Test NDCG@10 per seed on ml-100k, leave-one-out.

For each seed, with default settings otherwise:

* ``early_stopped`` — fitted on the training events, the best validation epoch's weights
  (``refit=False``);
* ``refit`` — trained afresh, same seed, for that epoch count on the training and validation events
  (what ``refit=True``, the default, does);
* ``*_avg5`` — the same with the weights averaged over the five epochs around the chosen one (a
  variant considered, not built into the model).

Full ranking of the test item, seen items excluded. Prints one JSON object; each seed runs in its
own process (``--threads`` torch threads).

    python benchmarks/bench_sasrec_refit.py [--data ../shared/data/ml-100k] [--seeds 0,1,2,3,4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def run_seed(data: Path, seed: int, threads: int) -> dict[str, Any]:
    from liverec.data.loaders import load_dataset
    from liverec.data.splits import leave_one_out, with_held_out
    from liverec.evaluation.protocols import evaluate_ranking
    from liverec.models.sasrec import LocalTraining, SASRec, SASRecNetwork

    validation, test = leave_one_out(load_dataset(data).interactions)
    everything = with_held_out(test.train, validation)

    class Snapshots(LocalTraining):
        """One-process training that keeps the weights after every epoch."""

        def __init__(self) -> None:
            self.snapshots: list[dict[str, Any]] = []

        def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
            self.snapshots.append({k: v.detach().clone() for k, v in network.state_dict().items()})
            return super().finish_epoch(network, total, count, rng)

    def ndcg(model: SASRec, snapshots: Snapshots, first: int, last: int) -> float:
        """Test NDCG@10 with the mean of the weights after epochs ``first``..``last`` (1-based)."""
        states = snapshots.snapshots[first - 1 : last]
        model._net().load_state_dict({key: sum(s[key] for s in states) / len(states) for key in states[0]})
        return round(float(evaluate_ranking(model, test, (10,)).metrics["ndcg@10"]), 4)

    selected_epochs = Snapshots()
    selected = SASRec(seed=seed, refit=False, n_threads=threads, training=selected_epochs)
    selected.fit(test.train, validation=validation)
    epoch = selected.best_epoch
    # the same run as refit=True, two epochs longer for the average around the chosen epoch
    refit_epochs = Snapshots()
    refit = SASRec(
        seed=seed, refit=False, n_threads=threads, max_epochs=epoch + 2, eval_every=epoch + 2, training=refit_epochs
    )
    refit.fit(everything, validation=validation)
    return {
        "seed": seed,
        "best_epoch": epoch,
        "validation_ndcg@10": round(selected.best_validation_ndcg, 4),
        "early_stopped": ndcg(selected, selected_epochs, epoch, epoch),
        "early_stopped_avg5": ndcg(
            selected, selected_epochs, max(1, epoch - 2), min(len(selected_epochs.snapshots), epoch + 2)
        ),
        "refit": ndcg(refit, refit_epochs, epoch, epoch),
        "refit_avg5": ndcg(refit, refit_epochs, max(1, epoch - 2), epoch + 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args()
    if args.one_seed is not None:
        print(json.dumps(run_seed(args.data, args.one_seed, args.threads)))
        return
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        command = [sys.executable, __file__, "--data", str(args.data), "--threads", str(args.threads)]
        done = subprocess.run([*command, "--one-seed", str(seed)], check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {}
    for key in ("early_stopped", "early_stopped_avg5", "refit", "refit_avg5"):
        gains = [row[key] - row["early_stopped"] for row in rows]
        summary[key] = {
            "mean": round(statistics.mean(row[key] for row in rows), 4),
            "gain_over_early_stopped": round(statistics.mean(gains), 4),
            "gain_standard_error": round(statistics.stdev(gains) / len(gains) ** 0.5, 4) if len(gains) > 1 else None,
            "seeds_better": sum(gain > 0 for gain in gains),
        }
    report = {"benchmark": "sasrec_refit", "data": str(args.data), "seeds": rows, "summary": summary}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
