"""SASRec's sampled-softmax loss at Amazon Beauty's shapes: milliseconds per forward pass (which also forms the
gradients), optionally paired against another checkout's ``loss.py``.

A Beauty training step scores about 400 positions against 2,048 shared negatives drawn in proportion to popularity
from 12,101 items, at ``dim`` 64 (the defaults). The batches here are drawn the same way: from a Zipf popularity by
default (a position's own target is often among the negatives; about 925 distinct items in 2,048 draws), or with
``--data`` from a dataset's own (count + 1) popularity, as the model draws them (Amazon Beauty: about 1,690
distinct). The report gives the mean number of distinct negatives per batch. With ``--against OTHER/src``, that
checkout's ``liverec/models/sasrec/loss.py`` runs in the same process on the same batches, the two taking turns, so
a machine whose speed drifts (as these do) affects both alike. Prints one JSON object: per thread count, the median
and minimum milliseconds of each code over ``--rounds`` rounds of ``--batches`` calls (the first two rounds are
warm-up and left out of the median).

    python benchmarks/bench_sasrec_step.py [--threads 1,2] [--against /tmp/old/src] [--rounds 30] [--data DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from liverec.data.loaders import load_dataset
from liverec.models.sasrec import loss as current


def load_other(src: Path) -> ModuleType:
    """``liverec/models/sasrec/loss.py`` of another checkout's ``src``, as a module of its own."""
    path = src / "liverec" / "models" / "sasrec" / "loss.py"
    spec = importlib.util.spec_from_file_location("other_sasrec_loss", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against: no loss module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    parser.add_argument("--against", type=Path, help="another checkout's src directory, run paired with this one")
    parser.add_argument("--positions", type=int, default=400)
    parser.add_argument("--negatives", type=int, default=2048)
    parser.add_argument("--items", type=int, default=12_101)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="calls per round (default 20)")
    parser.add_argument("--rounds", type=int, default=30, help="rounds per code (default 30)")
    parser.add_argument("--data", type=Path, help="draw from this dataset's (count + 1) popularity (sets --items)")
    args = parser.parse_args()

    codes: dict[str, ModuleType] = {"this": current}
    if args.against is not None:
        codes["against"] = load_other(args.against)
    rng = np.random.default_rng(0)
    if args.data is None:
        popularity = 1.0 / np.arange(1, args.items + 1)
    else:
        interactions = load_dataset(args.data).interactions
        args.items = interactions.n_items
        popularity = np.bincount(interactions.item_ids, minlength=args.items) + 1.0
    popularity /= popularity.sum()
    log_q = torch.from_numpy(np.log(popularity)).float()
    hidden = torch.randn(args.positions, args.dim, requires_grad=True)
    items = torch.randn(args.items, args.dim, requires_grad=True)
    batches = [
        (
            torch.from_numpy(rng.choice(args.items, args.negatives, p=popularity)),
            torch.from_numpy(rng.choice(args.items, args.positions, p=popularity)) + 1,  # network rows
        )
        for _ in range(args.batches)
    ]
    report: dict[str, Any] = {
        "benchmark": "sasrec sampled-softmax loss forward",
        "shapes": {"positions": args.positions, "negatives": args.negatives, "items": args.items, "dim": args.dim},
        "against": None if args.against is None else str(args.against),
        "popularity": "zipf" if args.data is None else str(args.data),
        "distinct_negatives_mean": float(np.mean([len(negatives.unique()) for negatives, _ in batches])),
        "ms_per_call": {},
    }
    for threads in (int(value) for value in args.threads.split(",")):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {name: [] for name in codes}
        for round_ in range(args.rounds):
            order = list(codes.items()) if round_ % 2 == 0 else list(reversed(codes.items()))
            for name, module in order:
                started = time.perf_counter()
                for negatives, rows in batches:
                    module.sampled_softmax_loss(log_q, hidden, rows, negatives, items)
                times[name].append((time.perf_counter() - started) / len(batches) * 1e3)
        report["ms_per_call"][str(threads)] = {
            name: {"median": round(float(np.median(values[2:])), 3), "min": round(min(values), 3)}
            for name, values in times.items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
