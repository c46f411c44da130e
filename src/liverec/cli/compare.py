"""``liverec compare``: compare models on a synthetic stream with a known structure (offline)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from liverec.cli.common import add_stream_options, generate_dataset
from liverec.data.splits import leave_one_out
from liverec.errors import UsageError
from liverec.evaluation.protocols import evaluate_ranking
from liverec.models import MODEL_REGISTRY, Recommender, create_model

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    compare = subparsers.add_parser(
        "compare",
        help="compare models on a synthetic stream (offline)",
        description="Generate a synthetic stream with a known structure and compare the "
        "baselines on it under leave-one-out full ranking.",
    )
    add_stream_options(compare, events=200_000)
    compare.add_argument(
        "--models",
        default="pop,pop-decay,pop-recent,itemknn,ease,mf-bpr,mf-bce",
        help="comma-separated models to compare",
    )
    compare.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    compare.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate a synthetic stream with planted structure, evaluate every baseline on it, print a table."""
    unknown = [name for name in args.models.split(",") if name not in MODEL_REGISTRY]
    if unknown:
        raise UsageError(
            f"--models: unknown model {unknown[0]!r}; expected names from {', '.join(sorted(MODEL_REGISTRY))}"
        )
    started = time.perf_counter()
    dataset = generate_dataset(args)
    print(
        f"generated {len(dataset.interactions)} synthetic events ({args.users} users, {args.items} items, "
        f"drifting tastes, popularity waves, planted item sequences, new items mid-stream) "
        f"in {time.perf_counter() - started:.2f}s"
    )
    validation, test = leave_one_out(dataset.interactions)
    print(f"leave-one-out, full ranking, seen items excluded: {len(test.history)} users evaluated\n")
    print(f"{'model':<12}{'ndcg@10':>10}{'recall@10':>11}{'mrr@10':>9}{'coverage@10':>13}{'fit s':>8}")
    for name in args.models.split(","):
        model: Recommender = create_model(name, seed=args.seed)
        started = time.perf_counter()
        model.fit(test.train, validation=validation)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate_ranking(model, test, (10,)).metrics
        print(
            f"{name:<12}{metrics['ndcg@10']:>10.4f}{metrics['recall@10']:>11.4f}{metrics['mrr@10']:>9.4f}"
            f"{metrics['coverage@10']:>13.4f}{fit_seconds:>8.2f}",
            flush=True,
        )
    print("\nnext: liverec evaluate --data PATH --model ease   (PATH: a MovieLens folder or an events file)")
    return 0
