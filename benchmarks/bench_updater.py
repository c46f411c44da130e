"""Online learner throughput: events learned per second by :class:`liverec.online.OnlineLearner`.

Setting: MovieLens 100K in time order; SASRec (defaults, one torch thread) fitted on the first
``--pretrain-fraction`` of the events, then the rest observed in order and learned with an update every
``--update-every`` events (every pending user's recent sequence plus as many replayed old users).
Prints one JSON object: events/s over update time (the figure the target is about) and over
update + observe time, seconds per update, and the setting.

The pretrained model's quality does not change what an update costs (the same batch shapes go through
the same network), so pretraining is cut to ``--pretrain-epochs`` epochs by default to save time.

    python benchmarks/bench_updater.py [--data ../shared/data/ml-100k] [--update-every 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import numpy as np
import torch

from liverec.data.loaders import load_dataset
from liverec.models.sasrec import SASRec
from liverec.online import LearnerConfig, OnlineLearner

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pretrain-fraction", type=float, default=0.5)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--update-every", type=int, default=1000)
    parser.add_argument("--replay-ratio", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per update")
    parser.add_argument("--batch-size", type=int, help="sequences per training step (default: the model's)")
    parser.add_argument("--max-sequence", type=int, help="items kept per user (default: max_len + 1)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the updates")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    events = dataset.interactions
    order = np.argsort(events.timestamps, kind="stable")
    n_pretrain = int(args.pretrain_fraction * len(order))
    pretrain = events.subset(order[:n_pretrain])
    started = time.perf_counter()
    model = SASRec(n_threads=1, max_epochs=args.pretrain_epochs).fit(pretrain)
    fit_seconds = time.perf_counter() - started
    config = LearnerConfig(
        every_events=args.update_every,
        replay_ratio=args.replay_ratio,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_sequence=args.max_sequence,
        seed=0,
    )
    learner = OnlineLearner(model, dataset.item_map.external_ids, dataset.user_map.external_ids, pretrain, config)

    rest = order[n_pretrain:]
    users = dataset.user_map.to_external(events.user_ids[rest])
    items = dataset.item_map.to_external(events.item_ids[rest])
    times = events.timestamps[rest]
    update_seconds: list[float] = []
    batch_users: list[int] = []
    observe_seconds = 0.0
    profiler = cProfile.Profile() if args.profile else None
    for start in range(0, len(rest), args.update_every):
        stop = min(start + args.update_every, len(rest))
        began = time.perf_counter()
        learner.observe(users[start:stop], items[start:stop], times[start:stop])
        observe_seconds += time.perf_counter() - began
        if profiler is not None:
            profiler.enable()
        stats = learner.update()
        if profiler is not None:
            profiler.disable()
        update_seconds.append(stats.seconds)
        batch_users.append(stats.users + len(stats.replayed_user_ids))
    total_update = float(np.sum(update_seconds))
    report = {
        "events_per_s": round(len(rest) / total_update, 1),
        "events_per_s_with_observe": round(len(rest) / (total_update + observe_seconds), 1),
        "seconds_per_update": {
            "median": round(float(np.median(update_seconds)), 4),
            "p90": round(float(np.percentile(update_seconds, 90)), 4),
            "max": round(float(np.max(update_seconds)), 4),
        },
        "sequences_per_update_median": float(np.median(batch_users)),
        "updates": len(update_seconds),
        "events": len(rest),
        "setting": {
            "data": str(args.data),
            "model": "sasrec (defaults, n_threads=1)",
            "pretrain_events": n_pretrain,
            "pretrain_epochs": args.pretrain_epochs,
            "pretrain_fit_seconds": round(fit_seconds, 1),
            "update_every": args.update_every,
            "replay_ratio": args.replay_ratio,
            "epochs_per_update": args.epochs,
            "batch_size": args.batch_size or model.config.batch_size,
            "max_sequence": args.max_sequence or model.config.max_len + 1,
            "torch_threads": torch.get_num_threads(),
        },
    }
    print(json.dumps(report, indent=2))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
