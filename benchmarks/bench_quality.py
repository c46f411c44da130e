"""Quality regression suite: every model's leave-one-out figures on ml-100k and Amazon Beauty, several seeds.

The path is that of ``liverec evaluate --data DATA --model MODEL --json`` (leave-one-out, full ranking
over the catalogue, the user's earlier items excluded, validation = each user's second-last item),
run once per (dataset, model, seed) in a fresh Python process, so no run inherits another's random or
thread state. For each run it reports test NDCG@10 / HR@10, and the same on the validation item:

- models that use no validation are fitted on the training events and judged on both items;
- models that refit after choosing on validation (``refit``: SASRec, fusion) are fitted with the
  refit held back, judged on the validation item as chosen (what early stopping or the weight search
  saw), then refitted on training + validation events exactly as ``fit`` does (``refit_on``) and
  judged on test: the test figure is the default model's. Fusion's validation figure is the one its
  weights were chosen on, so it flatters.

Prints one JSON object: every run, and per dataset and model the mean ± standard error over seeds
(``se`` = sample standard deviation / sqrt(n)); one JSON line per run goes to stderr as it finishes.
Any change to a model's defaults runs this first (choose on ``validation``, never on ``test``):

    python benchmarks/bench_quality.py [--datasets ml-100k,amazon-beauty] [--models sasrec]
        [--seeds 0,1,2,3,4] [--param NAME=VALUE ...] [--procedure]

``--procedure`` judges the whole fit, whatever it holds out and refits, on the validation item: each model is fitted
on the validation split's training events with no validation given and scored on each user's second-last item (no
test figure), so fitting procedures (a refit against a validation sample, say) are compared on validation only. A
SASRec run whose ``validation_users`` samples the users is judged on validation on its sample (the other users
trained on their validation item).

``--datasets`` takes names of folders in ../shared/data or paths; ``--param`` applies to every model
that has the parameter (e.g. ``--param max_epochs=3`` for a quick smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATASETS = "ml-100k,amazon-beauty"
METRICS = ("ndcg@10", "hr@10")


def dataset_path(name: str) -> Path:
    """A dataset named by its folder in ../shared/data, or a path."""
    path = Path(name)
    return path if path.exists() else SHARED_DATA / name


def one_run(data: Path, model_name: str, seed: int, pairs: list[str], procedure: bool = False) -> dict[str, Any]:
    """Fit and evaluate one model on leave-one-out, as ``liverec evaluate`` does (module docstring).

    ``procedure``: judge the whole fit, whatever it holds out and refits, on the validation item instead: the
    model is fitted on the validation split's training events alone, given no validation, and scored on each
    user's second-last item (no test figure). This compares procedures (a refit against none, say) on
    validation only."""
    from liverec.data.loaders import load_dataset
    from liverec.data.splits import make_split, sample_validation, with_held_out
    from liverec.evaluation.protocols import evaluate_ranking
    from liverec.models import MODEL_REGISTRY, create_model, parse_params

    fields = {field.name for field in dataclasses.fields(MODEL_REGISTRY[model_name].Config)}
    params = parse_params(model_name, [pair for pair in pairs if pair.split("=", 1)[0] in fields])
    params.setdefault("seed", seed)
    dataset = load_dataset(data)
    test, validation = make_split(dataset, "loo", 0.2)
    if validation is None:
        raise ValueError("leave-one-out gives a validation split")
    judged = validation  # the validation item early stopping (or the weight search) compares on
    refit = bool(params.get("refit", True)) and "refit" in fields and not procedure
    limit = getattr(create_model(model_name, **params).config, "validation_users", None)
    if not procedure and limit is not None and len(validation.history) > limit:
        _, judged = sample_validation(test.train, validation, limit, seed)  # what fit itself samples
        refit = False  # the other users trained on their validation item: fit does not refit
    if refit:
        params["refit"] = False  # judged on validation first, refitted below
    model = create_model(model_name, **params)
    started = time.perf_counter()
    if procedure:
        model.fit(validation.train)
    else:
        model.fit(test.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    valid = evaluate_ranking(model, judged, (10,)).metrics
    refit_seconds = 0.0
    if refit:
        everything = with_held_out(test.train, validation)
        if everything is None:
            raise ValueError("leave-one-out's validation split carries its events")
        started = time.perf_counter()
        model.refit_on(everything)
        refit_seconds = time.perf_counter() - started
    tested = None if procedure else evaluate_ranking(model, test, (10,)).metrics
    run: dict[str, Any] = {
        "dataset": dataset.name,
        "model": model_name,
        "seed": seed,
        "params": pairs,
        "judged": "procedure on validation" if procedure else "default",
        "validation_users": len(judged.history),
        **{f"validation_{metric}": round(float(valid[metric]), 4) for metric in METRICS},
        **{f"test_{metric}": None if tested is None else round(float(tested[metric]), 4) for metric in METRICS},
        "fit_seconds": round(fit_seconds + refit_seconds, 1),
        "refit_seconds": round(refit_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    history = getattr(model, "history", None)
    if model_name == "sasrec" and history:
        epochs = [entry for entry in history if "val_ndcg@10" in entry]
        seconds = np.diff([0.0] + [entry["seconds"] for entry in epochs])
        run.update(
            best_epoch=int(model.best_epoch),  # type: ignore[attr-defined]
            epochs_run=len(epochs),
            epoch_seconds_median=round(float(np.median(seconds)), 2),
            validation_curve=[round(entry["val_ndcg@10"], 4) for entry in epochs],
        )
    return run


def mean_and_error(values: list[float]) -> dict[str, float]:
    """Mean and standard error (sample SD / sqrt(n); 0 for one value)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "se": round(error, 4)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``dataset/model``: mean ± SE of each metric, median fit seconds, the seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(f"{run['dataset']}/{run['model']}", []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for key, group in groups.items():
        entry: dict[str, Any] = {"seeds": [run["seed"] for run in group]}
        for split in ("test", "validation"):
            for metric in METRICS:
                values = [run[f"{split}_{metric}"] for run in group]
                if None not in values:
                    entry[f"{split}_{metric}"] = mean_and_error(values)
        entry["fit_seconds_median"] = round(statistics.median(run["fit_seconds"] for run in group), 1)
        if "best_epoch" in group[0]:
            entry["best_epoch_median"] = statistics.median(run["best_epoch"] for run in group)
        summary[key] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default=DEFAULT_DATASETS, help=f"comma-separated (default {DEFAULT_DATASETS})")
    parser.add_argument("--models", default="sasrec", help="comma-separated model names (default sasrec)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="model override")
    parser.add_argument(
        "--procedure",
        action="store_true",
        help="judge the whole fit (its own hold-out and refit) on the validation item: fit on the validation "
        "split's training events, no test figure",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single run
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    from liverec.models import check_model_name

    for name in models:
        check_model_name(name)
    for name in datasets:
        if not dataset_path(name).exists():
            parser.error(f"--datasets: {name!r} is neither a folder of {SHARED_DATA} nor a path")
    if args.one:
        print(json.dumps(one_run(dataset_path(datasets[0]), models[0], seeds[0], args.param, args.procedure)))
        return
    runs = []
    started = time.perf_counter()
    for data in datasets:
        for model in models:
            for seed in seeds:
                command = [sys.executable, __file__, "--one", "--datasets", data, "--models", model]
                command += ["--seeds", str(seed)] + [f"--param={pair}" for pair in args.param]
                command += ["--procedure"] if args.procedure else []
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs.append(json.loads(output.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "quality",
        "protocol": "leave-one-out, full ranking, seen items excluded; validation = second-last item",
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summarise(runs),
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
