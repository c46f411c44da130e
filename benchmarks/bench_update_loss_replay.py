"""The streaming replay's online arm with each SASRec update loss, paired on one pretrained model per seed.

For each ``--seeds`` seed, SASRec (``--param`` hyperparameters, that seed) is fitted once on the first
``--pretrain-fraction`` of the events; the replay (:func:`liverec.evaluation.replay.replay`, arms
``static`` and ``online``, the replay's tuned learner: batch 16, last 101 items, learner seed = seed)
then runs once per ``--update-losses`` value (``SASRecConfig.update_loss``) from a copy of that same
model, so the settings differ in the updates alone (the static arm's figures are shared). This is what
``liverec replay --seed S --param update_loss=L`` does, without fitting the same model again for each L.

Prints one JSON object: per seed and update loss, HR@10 / NDCG@10 of the online arm (and of the static
arm), update events/s, seconds; then, per update loss, the median over seeds and the paired
difference against the first update loss (mean and its standard error over seeds).

    python benchmarks/bench_update_loss_replay.py --data ../shared/data/ml-100k --seeds 0,1,2
    python benchmarks/bench_update_loss_replay.py --data /tmp/syn.csv --param loss=sampled-softmax
    python benchmarks/bench_update_loss_replay.py --data /tmp/syn.csv --param loss=sampled-softmax \
        --vary update_negatives=null,256     # another update setting in place of the loss
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverec.data.loaders import load_dataset
from liverec.evaluation import replay as replay_module
from liverec.evaluation.replay import ReplayConfig, replay
from liverec.models.base import Recommender
from liverec.online.learner import TUNED_LEARNER, LearnerConfig


def parse_value(text: str) -> Any:
    """``--param`` values: JSON where it parses (numbers, booleans, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--update-losses", default="softmax,sampled-softmax")
    parser.add_argument(
        "--vary",
        default=None,
        metavar="NAME=V1,V2",
        help="compare values of another update setting instead of --update-losses (update_negatives=null,256)",
    )
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="SASRec hyperparameter")
    parser.add_argument("--pretrain-fraction", type=float, default=0.5)
    parser.add_argument("--update-every", type=int, default=1000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    params = {name: parse_value(value) for name, _, value in (item.partition("=") for item in args.param)}
    name, values = "update_loss", [parse_value(loss) for loss in args.update_losses.split(",")]
    if args.vary is not None:
        name, _, listed = args.vary.partition("=")
        values = [parse_value(value) for value in listed.split(",")]
    losses = values  # the settings compared (named after the first use: update losses)
    fitted: dict[int, Recommender] = {}
    fit = replay_module._ReplayRun.fit

    def fit_once(run: Any, model_name: str, end: int, **model_params: Any) -> Recommender:
        """The run's pretrained model, fitted once per seed; each compared value gets a copy with its own."""
        if model_name != "sasrec":
            return fit(run, model_name, end, **model_params)
        seed = model_params["seed"]
        if seed not in fitted:
            fitted[seed] = fit(run, model_name, end, **{**model_params, name: losses[0]})
        model = copy.deepcopy(fitted[seed])
        model.config = dataclasses.replace(model.config, **{name: model_params[name]})
        return model

    replay_module._ReplayRun.fit = fit_once  # type: ignore[method-assign]
    runs: list[dict[str, Any]] = []
    for seed in [int(seed) for seed in args.seeds.split(",")]:
        for loss in losses:
            learner = LearnerConfig(every_events=None, seed=seed, **TUNED_LEARNER["sasrec"])
            config = ReplayConfig(
                model="sasrec",
                params={**params, "seed": seed, name: loss, "n_threads": 1},
                pretrain_fraction=args.pretrain_fraction,
                update_every=args.update_every,
                arms=("static", "online"),
                learner=learner,
            )
            started = time.perf_counter()
            result = replay(dataset, config).to_dict()
            runs.append(
                {
                    "seed": seed,
                    name: loss,
                    "online": result["arms"]["online"],
                    "static": result["arms"]["static"],
                    "update_events_per_s": result["updater_events_per_s"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    summary: dict[str, Any] = {}
    for loss in losses:
        mine = [run for run in runs if run[name] == loss]
        base = [run for run in runs if run[name] == losses[0]]
        entry: dict[str, Any] = {}
        for metric in ("hr@10", "ndcg@10"):
            values = np.array([run["online"][metric] for run in mine])
            differences = values - np.array([run["online"][metric] for run in base])
            entry[metric] = {
                "median": round(float(np.median(values)), 4),
                "paired_difference_mean": round(float(differences.mean()), 4),
                "paired_difference_se": round(float(differences.std(ddof=1) / np.sqrt(len(differences))), 4)
                if len(differences) > 1
                else None,
            }
        entry["update_events_per_s_median"] = round(float(np.median([run["update_events_per_s"] for run in mine])), 1)
        summary[str(loss)] = entry
    report = {
        "runs": runs,
        "summary": summary,
        "setting": {
            "data": str(args.data),
            "compared": name,
            "params": params,
            "pretrain_fraction": args.pretrain_fraction,
            "update_every": args.update_every,
            "learner": TUNED_LEARNER["sasrec"],
            "load_average": [round(load, 2) for load in os.getloadavg()],
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
