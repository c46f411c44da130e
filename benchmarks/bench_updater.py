"""Online learner throughput: events learned per second by :class:`liverec.online.OnlineLearner`.

Setting: MovieLens 100K in time order; SASRec (defaults, one torch thread) fitted on the first
``--pretrain-fraction`` of the events, then the rest observed in order and learned with an update every
``--update-every`` events (every pending user's recent sequence plus ``--rehearsal-ratio`` replayed old
users per such user, in training steps of ``--batch-size`` sequences). Prints one JSON object:
events/s over update time (the figure the target is about), over update + observe time, and over
the CPU time of the process during updates (one thread, so this is what one core delivers even when
other work shares the machine); seconds per update; the setting. The stream is learned ``--repeats``
times from copies of the same pretrained model, and the fastest repeat is reported (all are listed),
since other processes can only slow a run down.

The pretrained model's quality does not change what an update costs (the same batch shapes go through
the same network), so pretraining is cut to ``--pretrain-epochs`` epochs by default to save time.

    python benchmarks/bench_updater.py [--data ../shared/data/ml-100k] [--update-every 1000] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverec.data.loaders import load_dataset
from liverec.models.sasrec import SASRec
from liverec.online import LearnerConfig, OnlineLearner
from liverec.online.learner import TUNED_LEARNER

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def learn_stream(
    learner: OnlineLearner, stream: tuple[np.ndarray, np.ndarray, np.ndarray], every: int, profiler: Any
) -> dict[str, Any]:
    """Observe the stream in slices of ``every`` events, updating after each; time every part."""
    users, items, times = stream
    wall: list[float] = []
    cpu = 0.0
    observe = 0.0
    sequences: list[int] = []
    for start in range(0, len(users), every):
        stop = min(start + every, len(users))
        began = time.perf_counter()
        learner.observe(users[start:stop], items[start:stop], times[start:stop])
        observe += time.perf_counter() - began
        cpu_began = time.process_time()
        if profiler is not None:
            profiler.enable()
        stats = learner.update()
        if profiler is not None:
            profiler.disable()
        cpu += time.process_time() - cpu_began
        wall.append(stats.seconds)
        sequences.append(stats.users + len(stats.rehearsed_user_ids))
    total = float(np.sum(wall))
    return {
        "events_per_s": round(len(users) / total, 1),
        "events_per_s_with_observe": round(len(users) / (total + observe), 1),
        "events_per_cpu_s": round(len(users) / cpu, 1),
        "seconds_per_update": {
            "median": round(float(np.median(wall)), 4),
            "p90": round(float(np.percentile(wall, 90)), 4),
            "max": round(float(np.max(wall)), 4),
        },
        "sequences_per_update_median": float(np.median(sequences)),
        "updates": len(wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pretrain-fraction", type=float, default=0.5)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--update-every", type=int, default=1000)
    parser.add_argument("--rehearsal-ratio", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per update")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TUNED_LEARNER["sasrec"]["batch_size"],
        help="sequences per training step (default: the replay's tuned setting, 16)",
    )
    parser.add_argument(
        "--max-sequence",
        type=int,
        default=TUNED_LEARNER["sasrec"]["max_sequence"],
        help="items kept and trained per user (default: the replay's tuned setting, 101; max_len + 1 is 201)",
    )
    parser.add_argument(
        "--relearn-history",
        action="store_true",
        help="updates learn the affected users' earlier items again (default: context only)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="times the stream is learned; the fastest counts")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the updates")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    events = dataset.interactions
    order = np.argsort(events.timestamps, kind="stable")
    n_pretrain = int(args.pretrain_fraction * len(order))
    pretrain = events.subset(order[:n_pretrain])
    started = time.perf_counter()
    pretrained = SASRec(n_threads=1, max_epochs=args.pretrain_epochs).fit(pretrain)
    fit_seconds = time.perf_counter() - started
    config = LearnerConfig(
        every_events=args.update_every,
        rehearsal_ratio=args.rehearsal_ratio,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_sequence=args.max_sequence,
        relearn_history=args.relearn_history,
        seed=0,
    )
    rest = order[n_pretrain:]
    stream = (
        dataset.user_map.to_external(events.user_ids[rest]),
        dataset.item_map.to_external(events.item_ids[rest]),
        events.timestamps[rest],
    )
    profiler = cProfile.Profile() if args.profile else None
    runs = []
    for _ in range(args.repeats):
        learner = OnlineLearner(
            copy.deepcopy(pretrained), dataset.item_map.external_ids, dataset.user_map.external_ids, pretrain, config
        )
        runs.append(learn_stream(learner, stream, args.update_every, profiler))
    best = max(runs, key=lambda run: run["events_per_s"])
    report = {
        **best,
        "all_repeats_events_per_s": [run["events_per_s"] for run in runs],
        "events": len(rest),
        "setting": {
            "data": str(args.data),
            "model": "sasrec (defaults, n_threads=1)",
            "pretrain_events": n_pretrain,
            "pretrain_epochs": args.pretrain_epochs,
            "pretrain_fit_seconds": round(fit_seconds, 1),
            "update_every": args.update_every,
            "rehearsal_ratio": args.rehearsal_ratio,
            "epochs_per_update": args.epochs,
            "batch_size": args.batch_size,
            "max_sequence": args.max_sequence,
            "relearn_history": args.relearn_history,
            "torch_threads": torch.get_num_threads(),
        },
    }
    print(json.dumps(report, indent=2))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
