"""What ``explain=true`` costs: attributing a top-10 list to a 50-item history at 10k items, on one core.

In-process, the work the engine adds when a request asks for explanations (:func:`liverec.explain.attribute`
over the listed items — exact for ItemKNN, one batched occlusion pass of 51 histories for SASRec — and
:func:`liverec.explain.describe` per item), timed per request; beside it, the same model's top-10 for the same
history (what a request costs without explanations). Nothing runs for explanations when they are off.

The catalogue is synthetic (``liverec.data.synthetic``, 10k items). ItemKNN is fitted on the whole stream (its
cost depends on how many neighbours the history items have). SASRec's cost does not depend on its weights, so it
is fitted for one epoch only (default sizes: ``max_len`` 200, ``dim`` 64, two blocks).

    python benchmarks/bench_explain.py [--items 10000] [--events 200000] [--history 50] [--repeats 300]

Prints one JSON object: per model, p50/p99/mean milliseconds of the explanation and of the top-10.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from liverec.data.interactions import Histories
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.explain import attribute, describe
from liverec.models import Recommender, create_model
from liverec.retrieval import limit_threads

K = 10


def timings(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def measure(model: Recommender, histories: list[np.ndarray], repeats: int) -> dict[str, Any]:
    explain_s: list[float] = []
    recommend_s: list[float] = []
    names = [f"i{i}" for i in range(model.n_items)]
    for n in range(repeats):
        history = histories[n % len(histories)]
        started = time.perf_counter()
        ids, _ = model.recommend(Histories.from_lists([history]), K)
        recommend_s.append(time.perf_counter() - started)
        items = ids[0][ids[0] >= 0]
        started = time.perf_counter()
        attribution = attribute(model, history, items)
        for row in range(len(items)):
            describe("history", [(names[item], None, weight) for item, weight in attribution.top(row)])
        explain_s.append(time.perf_counter() - started)
    return {"explain": timings(explain_s[1:]), "top10_without_explain": timings(recommend_s[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    limit_threads(1)
    dataset, _ = generate(SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed))
    interactions = dataset.interactions
    rng = np.random.default_rng(args.seed)
    full = Histories.from_interactions(interactions)
    long_enough = np.flatnonzero(full.lengths() >= args.history)
    users = rng.choice(long_enough, size=min(50, len(long_enough)), replace=False)
    histories = [full.row(int(u))[-args.history :] for u in users]
    report: dict[str, Any] = {
        "items": interactions.n_items,
        "events": len(interactions),
        "history_length": args.history,
        "k": K,
        "repeats": args.repeats,
        "threads": 1,
        "models": {},
    }
    knn = create_model("itemknn", seed=args.seed).fit(interactions)
    report["models"]["itemknn"] = {"attribution": "exact", **measure(knn, histories, args.repeats)}
    sasrec = create_model("sasrec", seed=args.seed, max_epochs=1, refit=False, n_threads=1)
    sasrec.fit(
        interactions.subset(np.flatnonzero(np.isin(interactions.user_ids, users[:20]))).with_sizes(
            interactions.n_users, interactions.n_items
        )
    )
    report["models"]["sasrec"] = {"attribution": "occlusion", **measure(sasrec, histories, args.repeats)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
