"""What re-ranking costs a served list (issue 20): in-process ``Engine.recommend`` latency, p50 / p99, without and
with each re-ranker, on the serving tests' data (the synthetic stream of ``tests/serving/conftest.py``: 300 users,
200 items, SASRec trained on 80 % of it) with one or two categories per item.

    python benchmarks/bench_rerank_serving.py --requests 300 --json

Each setting serves the same users in turn (k = 10, greedy policy, the ``rerank_candidates`` default of 100
candidates; 200 items, so every eligible item is a candidate), after a warm-up pass; one thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.serving.engine import Engine
from liverec.settings import RERANK_DEFAULT_LAMBDA, Settings
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

#: The serving tests' synthetic stream (tests/serving/conftest.py, SYNTHETIC).
SYNTHETIC = SyntheticConfig(
    n_users=300, n_items=200, n_events=12_000, n_clusters=5, drift=False, p_sequential=0.2, seed=3
)
CATEGORIES = ("drama", "comedy", "horror")


def prepare(data_dir: Path) -> list[str]:
    """Import 80 % of the stream, train SASRec as the serving tests do; returns the user ids."""
    dataset, _ = generate(SYNTHETIC)
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        limit = int(len(dataset.interactions) * 0.8)
        import_dataset(dataset, event_log, source="synthetic", event_types=DEFAULT_EVENT_WEIGHTS, limit=limit)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(data_dir / "models"), "sasrec", {"max_epochs": 15, "patience": 3})
    return [str(u) for u in dataset.user_map.external_ids]


def timings(engine: Engine, users: list[str], n_requests: int, rerank: dict[str, Any]) -> dict[str, float]:
    for user in users[:50]:  # warm-up (and the re-rank catalogue's first build)
        engine.recommend(user, k=10, **rerank)
    seconds = []
    for n in range(n_requests):
        start = time.perf_counter()
        engine.recommend(users[n % len(users)], k=10, **rerank)
        seconds.append(time.perf_counter() - start)
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per setting")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        users = prepare(data_dir)
        engine = Engine(Settings.load(data_dir=data_dir, updater=False, torch_threads=1), background=False)
        try:
            for index, item in enumerate(list(engine.state.item_ids)):
                mine = {CATEGORIES[index % 3]} | ({CATEGORIES[(index // 3) % 3]} if index % 2 else set())
                engine.put_item(item, categories=sorted(mine))
            settings: dict[str, dict[str, Any]] = {"none": {}}
            settings |= {
                f"{name}={lam}": {"rerank": name, "rerank_lambda": lam} for name, lam in RERANK_DEFAULT_LAMBDA.items()
            }
            report = {name: timings(engine, users, args.requests, rerank) for name, rerank in settings.items()}
            report["none (again)"] = timings(engine, users, args.requests, {})  # drift of the machine meanwhile
        finally:
            engine.close()
    if args.json:
        print(json.dumps({"requests": args.requests, "k": 10, "candidates": 100, "settings": report}, indent=2))
    else:
        for name, figures in report.items():
            print(f"{name:22s} p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms")


if __name__ == "__main__":
    main()
