"""Re-ranking trade-offs: NDCG@10 against calibration KL, long-tail share and Gini over a λ grid, per re-ranker.

The path is that of ``liverec evaluate --data DATA --model MODEL --rerank NAME=λ --groups`` (leave-one-out,
full ranking with seen items excluded, the top ``--candidates`` of it re-ranked per user), but the model is
fitted ONCE and every (re-ranker, λ) is evaluated on the same candidates: SASRec takes minutes to fit on a CPU.
``--cache FILE.npz`` keeps the candidates (and the item vectors MMR uses) so that a second run skips the fit.
Prints one JSON object: the baseline (λ = 0), one row per setting, and per re-ranker the best setting that keeps
NDCG@10 within ``--max-drop`` (relative) of the baseline. ``--plot FILE.png`` draws the three trade-off curves.

    python benchmarks/bench_rerank.py [--data ../shared/data/ml-100k] [--model sasrec]
        [--param n_threads=1 ...] [--candidates 100] [--cache /tmp/rerank.npz] [--plot docs/img/rerank_tradeoff.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverec.data.loaders import load_dataset
from liverec.data.splits import make_split
from liverec.evaluation.groups import list_calibration
from liverec.evaluation.metrics import beyond_accuracy_metrics, ranking_metrics
from liverec.evaluation.protocols import full_ranking, item_interactions
from liverec.models import create_model, parse_params
from liverec.rerank import RerankCatalogue, create_reranker, rerank_lists

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
#: λ per re-ranker (0 first: the model's own lists)
GRID: dict[str, tuple[float, ...]] = {
    "mmr": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    "calibration": (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0),
    "popularity": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0),
    "long-tail": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
}
K = 10


def candidates(args: argparse.Namespace, dataset: Any, split: Any, validation: Any) -> dict[str, Any]:
    """Fit once and rank the full catalogue: top ``--candidates`` ids and scores, the item vectors if any."""
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files} | {"fit_seconds": None}
    params = parse_params(args.model, args.param)
    params.setdefault("seed", 0)
    model = create_model(args.model, **params)
    if model.takes_item_features and dataset.items is not None:  # as `liverec evaluate` does
        model.set_item_features(*dataset.items.genre_matrix())
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    ids, scores = full_ranking(model, split.history, args.candidates)
    found = {"ids": ids, "scores": scores}
    if model.provides_vectors:
        found["vectors"] = model.item_vectors()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=ids, scores=scores, **({"vectors": found["vectors"]} if "vectors" in found else {}))
    return found | {"fit_seconds": fit_seconds}


def measure(ranked: np.ndarray, split: Any, popularity: np.ndarray, categories: Any) -> dict[str, float]:
    """NDCG@10, HR@10, calibration KL, long-tail share, Gini and coverage of the lists ``ranked``."""
    accuracy = ranking_metrics(ranked, split.targets, (K,))
    beyond = beyond_accuracy_metrics(ranked, popularity, split.train.n_users, K)
    kl = list_calibration(ranked, split.history, categories, K)
    return {
        f"ndcg@{K}": accuracy[f"ndcg@{K}"],
        f"hr@{K}": accuracy[f"hr@{K}"],
        f"calibration_kl@{K}": float(np.nanmean(kl)),
        f"long_tail@{K}": beyond[f"long_tail@{K}"],
        f"gini@{K}": beyond[f"gini@{K}"],
        f"coverage@{K}": beyond[f"coverage@{K}"],
    }


def summarise(rows: list[dict[str, Any]], baseline: dict[str, float], max_drop: float) -> dict[str, Any]:
    """Per re-ranker: the setting with the largest KL cut and the one with the largest long-tail gain among
    those whose NDCG@10 is within ``max_drop`` of the baseline, and whether the issue's goal is met."""
    out: dict[str, Any] = {}
    floor = (1.0 - max_drop) * baseline[f"ndcg@{K}"]
    for name in GRID:
        kept = [row for row in rows if row["reranker"] == name and row[f"ndcg@{K}"] >= floor]
        best_kl = min(kept, key=lambda row: row[f"calibration_kl@{K}"])
        best_tail = max(kept, key=lambda row: row[f"long_tail@{K}"])
        kl_cut = 1.0 - best_kl[f"calibration_kl@{K}"] / baseline[f"calibration_kl@{K}"]
        tail_ratio = best_tail[f"long_tail@{K}"] / max(baseline[f"long_tail@{K}"], 1e-12)
        out[name] = {
            "best_kl_cut": {"strength": best_kl["strength"], "kl_cut": kl_cut, "ndcg@10": best_kl[f"ndcg@{K}"]},
            "best_long_tail": {
                "strength": best_tail["strength"],
                "long_tail_ratio": tail_ratio,
                "ndcg@10": best_tail[f"ndcg@{K}"],
            },
            "goal_met": kl_cut >= 0.30 or tail_ratio >= 2.0,
        }
    return out


def plot(rows: list[dict[str, Any]], baseline: dict[str, float], path: Path, title: str) -> None:
    """Three panels: NDCG@10 against calibration KL, long-tail share and Gini; one curve per re-ranker."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.2), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    for axis, metric, label in zip(
        axes,
        (f"calibration_kl@{K}", f"long_tail@{K}", f"gini@{K}"),
        ("calibration KL (lower: closer to the history's genre mix)", "long-tail share of slots", "Gini of exposure"),
        strict=True,
    ):
        for name in GRID:
            chosen = [row for row in rows if row["reranker"] == name]
            axis.plot([row[metric] for row in chosen], [row[f"ndcg@{K}"] for row in chosen], marker="o", label=name)
        axis.plot([baseline[metric]], [baseline[f"ndcg@{K}"]], "k*", markersize=12, label="no re-ranking")
        axis.axhline(0.95 * baseline[f"ndcg@{K}"], color="grey", linestyle="--", linewidth=1, label="-5 % NDCG@10")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"NDCG@{K}")
    axes[0].legend()
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--cache", help="npz file: reuse the candidates (and item vectors) if it exists, else write")
    parser.add_argument("--max-drop", type=float, default=0.05, help="relative NDCG@10 drop allowed (default 0.05)")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    if dataset.items is None:
        sys.exit(f"--data {args.data}: no genres, nothing to calibrate to")
    split, validation = make_split(dataset, "loo", 0.2)
    found = candidates(args, dataset, split, validation)
    popularity = item_interactions(split)
    categories = dataset.items.genre_matrix()[0]
    catalogue = RerankCatalogue(categories, popularity, found.get("vectors"))
    baseline = measure(found["ids"][:, :K], split, popularity, categories)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name, strengths in GRID.items():
        for strength in strengths:
            reranker = create_reranker(name, strength, catalogue)
            tick = time.perf_counter()
            ranked, _scores = rerank_lists(reranker, found["ids"], found["scores"], split.history, K)
            row = {"reranker": name, "strength": strength, **measure(ranked, split, popularity, categories)}
            row["rerank_ms_per_user"] = 1000 * (time.perf_counter() - tick) / len(ranked)
            if name == "mmr":
                row["similarity"] = reranker.describe()["similarity"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    if args.plot:
        title = f"{dataset.name}, {args.model}: re-ranking the top {args.candidates} (λ grid per re-ranker)"
        plot(rows, baseline, args.plot, title)
    report = {
        "data": str(args.data),
        "model": args.model,
        "params": args.param,
        "candidates": args.candidates,
        "fit_seconds": found["fit_seconds"],
        "rerank_seconds": time.perf_counter() - started,
        "baseline": baseline,
        "rows": rows,
        "summary": summarise(rows, baseline, args.max_drop),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
