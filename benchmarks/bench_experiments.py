"""What experiments and apprentice mode cost a served list, in process: ``Engine.recommend`` p50/p99 for random
known users, top-10, in four settings on one data folder (the serving benchmark's: synthetic events, a
briefly trained SASRec, plus ``pop`` registered as a second version):

* ``plain``: no experiment, no apprentice (today's path);
* ``apprentice``: the softmax policy over the same model computed and logged beside every live list;
* ``apprentice-model``: the apprentice on the other version (a second model pass per request);
* ``experiment``: a running two-arm experiment (served SASRec greedy vs pop with epsilon), no shadow.

The settings alternate within each run (plain, apprentice, ..., then again), each run times ``--requests``
calls per setting after a warm-up, and the median of ``--runs`` runs is reported. Also what one more loaded
copy of the served SASRec holds (what each cached arm version costs). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_serving import build, percentiles
from liverec.events.log import SQLiteEventLog
from liverec.experiments import Arm, Experiment
from liverec.pipeline import read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.serving.engine import Engine
from liverec.settings import Settings
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "apprentice": {"apprentice_policy": "softmax"},
    "apprentice-model": {"apprentice_model_version": "v0002", "apprentice_policy": "greedy"},
    "experiment": {},
}


def timed(data_dir: Path, name: str, users: list[str], n: int, seed: int) -> dict[str, float]:
    engine = Engine(Settings.load(data_dir=data_dir, updater=False, **SETTINGS[name]), background=False)
    try:
        if name == "experiment":
            arms = (Arm("control", 0.5), Arm("pop", 0.5, model_version="v0002", policy="epsilon"))
            engine.create_experiment(Experiment(f"bench-{seed}", arms, created_at=time.time()))
        picks = np.random.default_rng(seed).choice(users, size=n + 50)
        for user in picks[:50]:  # warm-up (an arm's model is loaded here)
            engine.recommend(str(user), k=10)
        times = []
        for user in picks[50:]:
            started = time.perf_counter()
            engine.recommend(str(user), k=10)
            times.append(time.perf_counter() - started)
        if name == "experiment":
            engine.stop_experiment(f"bench-{seed}")
        return percentiles(times)
    finally:
        engine.close()


def version_memory(data_dir: Path) -> dict[str, float]:
    """What one more loaded copy of the served version holds: its saved parameters (the arrays of its
    ``state.npz``) and the vector index's copy of the item vectors."""
    registry = ModelRegistry(data_dir / "models")
    version = registry.promoted()
    if version is None:
        raise SystemExit("no version is served")
    with np.load(data_dir / "models" / version / "state.npz") as saved:
        parameters = sum(saved[name].nbytes for name in saved.files)
    loaded = registry.load(version)
    index = loaded.model.item_vectors().nbytes if loaded.model.provides_vectors else 0
    return {"parameters_mb": round(parameters / 2**20, 2), "index_mb": round(index / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="liverec-bench-experiments-"))
    try:
        data_dir, users, _, info = build(root, args.users, args.items, 20 * args.items)
        with SQLiteEventLog(data_dir / "events.db") as event_log:
            data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
        train_and_register(data, ModelRegistry(data_dir / "models"), "pop", {}, promote=False)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
        for run in range(args.runs):
            for name in SETTINGS:
                runs[name].append(timed(data_dir, name, users, args.requests, seed=run))
        summary = {
            name: {key: round(float(np.median([r[key] for r in results])), 3) for key in ("p50_ms", "p99_ms")}
            for name, results in runs.items()
        }
        print(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "setting": {**vars(args), **info},
                    "median_of_runs": summary,
                    "memory": version_memory(data_dir),
                    "runs": runs,
                },
                indent=1,
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
