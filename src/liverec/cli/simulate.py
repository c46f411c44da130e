"""``liverec simulate``: exploration policies against users with known preferences, through the serving engine."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liverec.errors import UsageError
from liverec.models import MODEL_REGISTRY, parse_params

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers
    from liverec.simulation import SimulationConfig, SimulationRun

#: Config field -> flag, for the error of a bad value (fields not listed are spelled like their flag).
FLAGS = {
    "n_users": "--users",
    "n_items": "--items",
    "n_clusters": "--clusters",
    "model_params": "--param",
    "examination_decay": "--examination-decay",
    "cold_age_days": "--cold-age-days",
}


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate exploration policies: known users, position-biased clicks, new items, online learning",
        description="Users with known preferences (the synthetic generator's truth) visit one at a time; each gets a "
        "list from an in-process serving engine (the code path of GET /v1/users/{id}/recommendations, with "
        "explore=<policy>), clicks with a position-biased model (P(examine position j) = j^-decay, P(click | "
        "examined) = relevance from the truth, higher for newly released items), and the clicks go back through the "
        "event log to the online updater, which updates the model every --update-every events. New items keep "
        "arriving. Per policy: cumulative reward (clicks), its gain over greedy, regret against the oracle (the "
        "best list under the same click model), CTR per window, visits until each new item's first click; mean ± "
        "standard error over the seeds. Every policy runs on every seed from the same past and first model.",
    )
    run = parser.add_argument_group("runs")
    run.add_argument(
        "--policies",
        default="greedy,epsilon,softmax,cold",
        help="comma-separated exploration policies: greedy, epsilon, softmax, cold (default all four)",
    )
    run.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, or a range A-B (default 0-4)")
    run.add_argument("--horizon", type=int, default=3000, help="visits (served lists) per run (default 3000)")
    run.add_argument("--k", type=int, default=10, help="items per list (default 10)")
    run.add_argument("--batch", type=int, default=10, help="visits served by one engine call (default 10)")
    run.add_argument("--windows", type=int, default=10, help="equal windows of the horizon for CTR (default 10)")
    run.add_argument(
        "--data-dir",
        type=Path,
        help="keep every run's data folder (log with impressions and rewards, models) as DIR/<policy>-seed<seed> "
        "(default: temporary folders)",
    )
    world = parser.add_argument_group("the world (the synthetic generator)")
    world.add_argument("--users", type=int, default=500, help="users (default 500)")
    world.add_argument("--items", type=int, default=300, help="items in the catalogue, new ones included (default 300)")
    world.add_argument("--clusters", type=int, default=10, help="taste clusters (default 10)")
    world.add_argument(
        "--past-events", type=int, default=10_000, help="events before the first visit: the first model's (10000)"
    )
    world.add_argument(
        "--new-item-fraction",
        type=float,
        default=0.3,
        help="share of the catalogue released during the run, at times uniform over it (default 0.3)",
    )
    world.add_argument(
        "--organic-share",
        type=float,
        default=0.2,
        help="share of visits whose own generator event (found without the list) is logged as a view (default 0.2)",
    )
    world.add_argument(
        "--p-sequential",
        type=float,
        default=0.3,
        help="P(a user's next item is a planted successor of the previous one) (default 0.3)",
    )
    world.add_argument("--drift", action="store_true", help="tastes drift from start to end clusters over the span")
    world.add_argument(
        "--duration-days", type=float, default=120.0, help="the generator's span, past and run (default 120)"
    )
    clicks = parser.add_argument_group("clicks")
    clicks.add_argument(
        "--examination-decay",
        type=float,
        default=1.0,
        help="P(position j is examined) = j^-decay (default 1.0; 0: every position)",
    )
    clicks.add_argument(
        "--relevance-scale",
        type=float,
        default=10.0,
        help="P(click | examined) = 1 - exp(-scale * P(next item) * novelty) (default 10)",
    )
    clicks.add_argument(
        "--novelty-boost",
        type=float,
        default=1.0,
        help="a just-released item's P(next item) is multiplied by 1 + this (default 1.0; 0: no novelty)",
    )
    clicks.add_argument(
        "--novelty-half-life-days",
        type=float,
        default=7.0,
        help="the novelty's extra halves every this many simulated days (default 7)",
    )
    model = parser.add_argument_group("model and online learning")
    names = ", ".join(sorted(MODEL_REGISTRY))
    model.add_argument(
        "--model",
        default="sasrec",
        help=f"one of: {names} (default sasrec: dim 32, 1 layer, max_len 50, the catalogue's categories as side "
        "features; mf-bpr: 32 factors; --param overrides)",
    )
    model.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter (repeatable)"
    )
    model.add_argument("--update-every", type=int, default=200, help="new events between online updates (200)")
    model.add_argument("--gate-events", type=int, default=100, help="events the gate judges a candidate on (100)")
    model.add_argument(
        "--gate-margin",
        type=float,
        default=0.05,
        help="promote a candidate unless its NDCG@10 is worse than serving's by more than this (default 0.05)",
    )
    explore = parser.add_argument_group("exploration (the explore_* settings)")
    explore.add_argument("--epsilon", type=float, default=0.1, help="epsilon: P(a slot is replaced) (default 0.1)")
    explore.add_argument("--temperature", type=float, default=1.0, help="softmax: temperature (default 1.0)")
    explore.add_argument(
        "--candidates", type=int, default=50, help="softmax and cold: top items chosen from (default 50)"
    )
    explore.add_argument(
        "--cold-weight", type=float, default=0.3, help="cold: boost as a share of the score range (default 0.3)"
    )
    explore.add_argument(
        "--cold-age-days", type=float, default=7.0, help="cold: items younger than this are boosted (default 7)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    output.add_argument("--plot", metavar="FILE.png", help="draw cumulative reward and CTR per window (matplotlib)")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_simulate)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> the seeds, each a non-negative integer, no repeats."""
    try:
        if "-" in text and "," not in text:
            low, high = (int(part) for part in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds: expected integers separated by commas, or a range A-B, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


def parse_policies(text: str) -> list[str]:
    from liverec.policies import POLICIES

    policies = [part.strip() for part in text.split(",")]
    for policy in policies:
        if policy not in POLICIES:
            raise UsageError(f"--policies: expected names from {', '.join(sorted(POLICIES))}, got {policy!r}")
    if len(set(policies)) != len(policies):
        raise UsageError(f"--policies: a policy is named twice in {text!r}")
    return policies


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The :class:`SimulationConfig` of the flags; a bad value is a usage error naming its flag."""
    from liverec.policies import ExploreConfig
    from liverec.simulation import ClickModel, SimulationConfig

    params = parse_params(args.model, args.param)  # an unknown model or parameter is a usage error already
    try:
        explore = ExploreConfig(
            epsilon=args.epsilon,
            temperature=args.temperature,
            candidates=args.candidates,
            cold_weight=args.cold_weight,
        )
        clicks = ClickModel(
            examination_decay=args.examination_decay,
            relevance_scale=args.relevance_scale,
            novelty_boost=args.novelty_boost,
            novelty_half_life_days=args.novelty_half_life_days,
        )
        return SimulationConfig(
            n_users=args.users,
            n_items=args.items,
            n_clusters=args.clusters,
            past_events=args.past_events,
            horizon=args.horizon,
            new_item_fraction=args.new_item_fraction,
            organic_share=args.organic_share,
            p_sequential=args.p_sequential,
            drift=args.drift,
            duration_days=args.duration_days,
            k=args.k,
            batch=args.batch,
            model=args.model,
            model_params=params,
            update_every=args.update_every,
            gate_events=args.gate_events,
            gate_margin=args.gate_margin,
            windows=args.windows,
            explore=explore,
            cold_age_days=args.cold_age_days,
            clicks=clicks,
        )
    except ValueError as error:  # "field: reason" -> "--flag: reason"
        name, _, reason = str(error).partition(": ")
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        raise UsageError(f"{flag}: {reason}") from None


def run_simulate(args: argparse.Namespace) -> int:
    """Run every policy on every seed; print the report (JSON with ``--json``) and draw it (``--plot``)."""
    from liverec.simulation.report import format_report, plot_report, simulate

    policies = parse_policies(args.policies)
    seeds = parse_seeds(args.seeds)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'liverec[plot]'")
    config = simulation_config(args)

    def note(run: SimulationRun) -> None:
        if not args.quiet:
            print(
                f"simulate: {run.policy} seed {run.seed}: {int(run.clicks.sum())} clicks, {run.seconds:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    report: dict[str, Any] = simulate(config, policies, seeds, data_dir=args.data_dir, on_run=note)
    if args.plot:
        plot_report(report, args.plot)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
