"""Online updates as the catalogue grows: events learned per second by SASRec's updates at 10k / 100k / 1M items.

Setting: a synthetic stream (:func:`liverec.data.synthetic.generate`, ``--users`` users, ``--events``
events, the catalogue size varied, seed 0) in time order. SASRec (defaults, one torch thread) is
fitted cheaply (one epoch, sampled softmax, no refit) on the last ``--fit-events`` events of the first
half, in the whole catalogue's id space: what an update costs does not depend on how good the model
is, only on the shapes that go through it. Items first seen in the second half are not in the model's
table at the start (the catalogue less them is), so the table grows as the stream brings them, as it
does in a live shop (``--no-growth``: the whole catalogue from the start). The model's training loss
is then set to ``--loss`` (the full softmax by default, as a default fit has it; ``sampled-softmax``,
what a model of a million items is trained with) and, when given, its ``update_loss`` to
``--update-loss`` (by default updates use the training loss), and ``--param NAME=VALUE`` sets any other
setting (``update_negatives=256``). An
:class:`~liverec.online.OnlineLearner` with the replay's tuned setting (batch 16, last 101 items, one
replayed user per user with new events), seeded with the first half's histories, then learns the
second half in updates of ``--update-every`` events: one untimed warm-up update, then ``--updates``
timed ones (fewer where ``--max-seconds`` of updates have passed at a size).

Prints one JSON object: per size, events/s over update time, events per CPU-second, seconds per
update and sequences per update; with ``--profile``, the share of the profiled updates' time (cProfile,
largest size) spent in the loss, backward pass, optimiser step, table growth and sampling distribution.

    python benchmarks/bench_updater_scale.py [--sizes 10000,100000,1000000] [--loss sampled-softmax] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import time
from typing import Any

import numpy as np
import torch

from liverec.data.interactions import Interactions
from liverec.data.synthetic import generate
from liverec.models import parse_params
from liverec.models.sasrec import SASRec
from liverec.online import LearnerConfig, OnlineLearner
from liverec.online.learner import TUNED_LEARNER

#: cProfile entries (function name, file name's end) reported as the profile's breakdown; cumulative
#: times, so an entry includes those it calls (the backward pass includes the loss's stored gradients)
PROFILED = {
    "update (OnlineLearner.update)": ("update", "online/learner.py"),
    "forward pass (network, full table)": ("forward", "sasrec/training.py"),
    "loss (full or sampled softmax, full table)": ("sequence_loss", "sasrec/loss.py"),
    "forward pass and sampled loss (used rows)": ("_row_wise_loss", "sasrec/model.py"),
    "backward pass": ("backward", "torch/_tensor.py"),
    "optimiser step (AdamW)": ("step", "optim/adam.py"),
    "row-wise optimiser step (lazy AdamW)": ("_step_item_rows", "sasrec/model.py"),
    "table growth (_grow_items)": ("_grow_items", "sasrec/model.py"),
    "sampling distribution": ("_set_sampling_distribution", "sasrec/model.py"),
    "histories and batch (learner)": ("from_interactions", "data/interactions.py"),
    "batching (plan_epoch)": ("plan_epoch", "sasrec/batching.py"),
}


def profile_breakdown(profiler: cProfile.Profile) -> dict[str, Any]:
    """Cumulative seconds and share of the update time of each :data:`PROFILED` entry."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = {}
    for label, (function, file_end) in PROFILED.items():
        seconds[label] = sum(
            cumulative
            for (file_name, _, name), (_, _, _, cumulative, _) in stats.items()
            if name == function and file_name.replace(os.sep, "/").endswith(file_end)
        )
    total = seconds["update (OnlineLearner.update)"] or 1.0
    return {label: {"seconds": round(value, 3), "share": round(value / total, 3)} for label, value in seconds.items()}


def late_items_last(events: Interactions, half: int) -> tuple[Interactions, np.ndarray, int]:
    """``events`` with item ids renumbered so that the items first seen after row ``half`` come last,
    in order of first appearance; the new ids' old ids; how many items come before them."""
    first_seen = np.full(events.n_items, len(events))
    np.minimum.at(first_seen, events.item_ids, np.arange(len(events)))
    late = np.flatnonzero(first_seen >= half)
    late = late[np.argsort(first_seen[late], kind="stable")]
    late = late[first_seen[late] < len(events)]  # items never seen stay in the starting catalogue
    order = np.concatenate([np.setdiff1d(np.arange(events.n_items), late), late])
    renumbered = np.empty(events.n_items, dtype=np.int64)
    renumbered[order] = np.arange(events.n_items)
    moved = dataclasses.replace(events, item_ids=renumbered[events.item_ids])
    return moved, order, events.n_items - len(late)


def run_size(n_items: int, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    """Fit, then time ``args.updates`` updates of the stream's second half at a catalogue of ``n_items``."""
    dataset, _ = generate(n_users=args.users, n_items=n_items, n_events=args.events, seed=0)
    events = dataset.interactions  # rows in time order
    half = len(events) // 2
    item_ids = dataset.item_map.external_ids
    n_start = events.n_items
    if args.growth:
        events, order, n_start = late_items_last(events, half)
        item_ids = item_ids[order]
    pretrain = dataclasses.replace(events.subset(np.arange(half)), n_items=n_start)  # its items are all < n_start
    started = time.perf_counter()
    model = SASRec(n_threads=1, max_epochs=1, refit=False, loss="sampled-softmax")
    model.fit(pretrain.subset(np.arange(half - args.fit_events, half)))
    fit_seconds = time.perf_counter() - started
    overrides: dict[str, Any] = {"loss": args.loss}
    if args.update_loss is not None:
        overrides["update_loss"] = args.update_loss
    overrides.update(parse_params("sasrec", args.param))  # typed and checked as `liverec ... --param` is
    model.config = dataclasses.replace(model.config, **overrides)
    config = LearnerConfig(
        every_events=args.update_every,
        rehearsal_ratio=1.0,
        batch_size=TUNED_LEARNER["sasrec"]["batch_size"],
        max_sequence=TUNED_LEARNER["sasrec"]["max_sequence"],
        seed=0,
    )
    learner = OnlineLearner(model, item_ids[:n_start], dataset.user_map.external_ids, pretrain, config)
    users = dataset.user_map.to_external(events.user_ids[half:])
    items = item_ids[events.item_ids[half:]]
    times = events.timestamps[half:]
    profiler = cProfile.Profile() if profile else None
    wall: list[float] = []
    cpu: list[float] = []
    sequences: list[int] = []
    new_items: list[int] = []
    learned = 0
    every = args.update_every
    for update in range(args.updates + 1):
        start, stop = update * every, (update + 1) * every
        learner.observe(users[start:stop], items[start:stop], times[start:stop])
        cpu_started = time.process_time()
        if profiler is not None and update > 0:
            profiler.enable()
        stats = learner.update()
        if profiler is not None and update > 0:
            profiler.disable()
        if update == 0:  # warm-up: first-touch allocations of the optimiser state and buffers
            continue
        cpu.append(time.process_time() - cpu_started)
        wall.append(stats.seconds)
        sequences.append(stats.users + len(stats.rehearsed_user_ids))
        new_items.append(stats.new_items)
        learned += stats.events
        if sum(wall) > args.max_seconds:
            break
    total = float(np.sum(wall))
    result: dict[str, Any] = {
        "n_items": n_items,
        "events_per_s": round(learned / total, 1),
        "events_per_cpu_s": round(learned / float(np.sum(cpu)), 1),
        "seconds_per_update": {"median": round(float(np.median(wall)), 4), "max": round(float(np.max(wall)), 4)},
        "sequences_per_update_median": float(np.median(sequences)),
        "new_items_per_update_median": float(np.median(new_items)),
        "items_at_start": n_start,
        "timed_updates": len(wall),
        "fit_seconds": round(fit_seconds, 1),
        "update_loss": getattr(model.config, "update_loss", None),
        "n_negatives_per_update_step": model.config.for_updates().n_negatives,
    }
    if profiler is not None:
        result["profile"] = profile_breakdown(profiler)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--fit-events", type=int, default=2_000, help="events of the cheap fit (the model's start)")
    parser.add_argument("--loss", default="softmax", help="the model's training loss (default: SASRec's own)")
    parser.add_argument("--update-loss", default=None, help="SASRecConfig.update_loss (default: the training loss)")
    parser.add_argument("--update-every", type=int, default=1000)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another SASRec setting, e.g. update_negatives=256",
    )
    parser.add_argument("--updates", type=int, default=10, help="timed updates per size (after one warm-up)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop timing a size after this much")
    parser.add_argument("--profile", action="store_true", help="profile the updates at the largest size")
    parser.add_argument(
        "--no-growth", dest="growth", action="store_false", help="the whole catalogue in the table from the start"
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    sizes = [int(size) for size in args.sizes.split(",")]
    results = [run_size(n_items, args, args.profile and n_items == max(sizes)) for n_items in sizes]
    report = {
        "sizes": results,
        "setting": {
            "users": args.users,
            "events": args.events,
            "loss": args.loss,
            "update_loss": args.update_loss,
            "update_every": args.update_every,
            "growth": args.growth,
            "batch_size": TUNED_LEARNER["sasrec"]["batch_size"],
            "max_sequence": TUNED_LEARNER["sasrec"]["max_sequence"],
            "rehearsal_ratio": 1.0,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(load, 2) for load in os.getloadavg()],
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
