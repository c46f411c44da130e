"""``liverec explain-check``: are the explanations faithful? Remove what they name and see the item fall."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from liverec.cli.common import add_data_options, add_model_option, dataset_report, load_input, model_params
from liverec.cli.evaluate import _create
from liverec.data.splits import make_split
from liverec.errors import UsageError
from liverec.explain import EXACT, MAX_BECAUSE, faithfulness

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers

#: Test users sampled by default (seeded).
DEFAULT_USERS = 200


def add_parser(subparsers: Subparsers) -> None:
    check = subparsers.add_parser(
        "explain-check",
        help="measure whether explanations are faithful (remove the attributed history items vs random ones)",
        description="Fit a model on a leave-one-out split; for a seeded sample of test users and each of their "
        f"top-K items, remove the {MAX_BECAUSE} history items its explanation weighs most (every occurrence) and, "
        f"separately, {MAX_BECAUSE} random history items, and report how far the item falls (rank among the "
        "items outside the user's history, and score), and the share of pairs where the attributed items hurt "
        "more (a larger rank drop, or an equal one and a larger score drop).",
    )
    add_data_options(check)
    add_model_option(check)
    check.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help=f"test users sampled with --seed (default {DEFAULT_USERS})"
    )
    check.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    check.add_argument(
        "--remove",
        type=int,
        default=MAX_BECAUSE,
        help=f"history items removed per pair (default {MAX_BECAUSE}: what an explanation names)",
    )
    check.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter override"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    check.add_argument("--quiet", action="store_true", help="no progress bars")
    check.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in ("users", "k", "remove"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    params = model_params(args)
    params.setdefault("seed", args.seed)
    dataset, source = load_input(args)
    split, validation = make_split(dataset, "loo", 0.2)
    model = _create(args, params, dataset)
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    fit_seconds = time.perf_counter() - started
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(split.history), size=min(args.users, len(split.history)), replace=False))
    started = time.perf_counter()
    report = faithfulness(model, split.history.select(rows), k=args.k, n_removed=args.remove, seed=args.seed)
    out: dict[str, Any] = {
        "dataset": dataset_report(dataset, source),
        "protocol": "loo (test histories: training + validation events)",
        "model": args.model,
        "parameters": dataclasses.asdict(model.config),
        "attribution": "exact" if args.model in EXACT else "occlusion",
        "seed": args.seed,
        "k": args.k,
        "sampled_users": len(rows),
        **report.summary(),
        "seconds": {"fit": fit_seconds, "check": time.perf_counter() - started},
    }
    print(json.dumps(out) if args.json else _table(out))
    return 0


def _table(out: dict[str, Any]) -> str:
    ratio = out["rank_drop_ratio"]
    return "\n".join(
        [
            f"{out['model']} ({out['attribution']}): {out['pairs']} pairs of {out['users']} users, "
            f"{out['removed_per_pair']} history items removed per pair",
            f"  attributed: mean rank drop {out['attributed']['mean_rank_drop']:.2f}, "
            f"mean score drop {out['attributed']['mean_score_drop']:.4f}",
            f"  random:     mean rank drop {out['random']['mean_rank_drop']:.2f}, "
            f"mean score drop {out['random']['mean_score_drop']:.4f}",
            f"  attributed hurts more in {out['share_attributed_hurts_more']:.1%} of pairs; rank drop ratio "
            + (f"{ratio:.2f}" if ratio is not None else "n/a"),
        ]
    )
