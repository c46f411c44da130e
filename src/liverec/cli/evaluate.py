"""``liverec evaluate``: train a model on a split and measure it."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverec.cli.common import (
    add_data_options,
    add_model_option,
    dataset_report,
    load_input,
    model_params,
    parse_ks,
)
from liverec.data.interactions import Dataset
from liverec.data.splits import PROTOCOLS, RankingSplit, make_split
from liverec.errors import UsageError
from liverec.evaluation.groups import format_groups, group_report, plot_exposure
from liverec.evaluation.metrics import per_user_ranking_metrics
from liverec.evaluation.protocols import RERANK_CANDIDATES, RankingResult, evaluate_ranking, item_interactions
from liverec.evaluation.rating import rating_metrics
from liverec.models import Recommender, create_model
from liverec.rerank import RERANKERS, RerankCatalogue, Reranker, create_reranker, parse_rerank

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers

PROTOCOL_DESCRIPTIONS = {
    "loo": "leave-one-out: last event per user is the test target, the one before validation",
    "temporal": "global temporal split by time, test = events after the cut",
    "user-temporal": "per-user temporal split, test = each user's last events",
}


def add_parser(subparsers: Subparsers) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="train a model on a split and measure it",
        description="Train a model on the training part of a split and report full-ranking "
        "metrics (seen items excluded), optionally the sampled protocol too.",
    )
    add_data_options(evaluate)
    add_model_option(evaluate)
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default="loo", help="split (default loo)")
    evaluate.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of events held out by temporal protocols (default 0.2)"
    )
    evaluate.add_argument(
        "--task",
        choices=("ranking", "rating"),
        default="ranking",
        help="ranking (top-K metrics) or rating (RMSE/MAE of predicted values; mf-mse)",
    )
    evaluate.add_argument("--k", default="10", help="cut-off(s), e.g. 10 or 5,10,20 (default 10)")
    evaluate.add_argument(
        "--sampled-negatives",
        type=int,
        default=0,
        metavar="N",
        help="also report the SAMPLED protocol with N negatives (papers use 100)",
    )
    evaluate.add_argument("--keep-seen", action="store_true", help="do not exclude items the user has seen")
    evaluate.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model hyperparameter override (repeatable); see `liverec models`",
    )
    evaluate.add_argument(
        "--groups",
        action="store_true",
        help="also measure by group: exposure by popularity decile and genre, Gini, long-tail share, calibration "
        "KL; NDCG@10 by activity quintile and user attribute, with the largest gap",
    )
    evaluate.add_argument(
        "--plot", metavar="FILE.png", help="draw exposure by popularity decile against interactions (implies --groups)"
    )
    evaluate.add_argument(
        "--rerank",
        metavar="NAME=λ",
        help=f"re-rank the top --rerank-candidates of the full ranking: NAME one of {', '.join(sorted(RERANKERS))} "
        "(one re-ranker; metrics of the re-ranked lists, beside the model's own)",
    )
    evaluate.add_argument(
        "--rerank-candidates",
        type=int,
        default=RERANK_CANDIDATES,
        metavar="N",
        help=f"how many of the model's top items the re-ranker chooses from (default {RERANK_CANDIDATES})",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--save-rankings", metavar="FILE", help="write top-K as CSV and FILE.targets.csv")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    _check_group_options(args)
    params = model_params(args)
    params.setdefault("seed", args.seed)
    started = time.perf_counter()
    dataset, source = load_input(args)
    seconds = {"load": time.perf_counter() - started}
    started = time.perf_counter()
    split, validation = make_split(dataset, args.protocol, args.test_fraction)
    seconds["split"] = time.perf_counter() - started
    model = _create(args, params, dataset)
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    seconds["fit"] = time.perf_counter() - started
    report: dict[str, Any] = {
        "dataset": dataset_report(dataset, source),
        "protocol": {
            "name": args.protocol,
            "description": PROTOCOL_DESCRIPTIONS[args.protocol],
            "test_fraction": args.test_fraction if args.protocol != "loo" else None,
            **{key: value for key, value in split.info.items()},
        },
        "task": args.task,
        "model": args.model,
        "parameters": dataclasses.asdict(model.config),
        "seed": args.seed,
    }
    started = time.perf_counter()
    if args.task == "rating":
        _measure_rating(model, split, report)
    else:
        _measure_ranking(args, model, dataset, split, ks, report)
    seconds["evaluate"] = time.perf_counter() - started
    report["seconds"] = seconds
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def _check_group_options(args: argparse.Namespace) -> None:
    """``--groups`` / ``--plot`` / ``--rerank``: one readable line before any work when they cannot run."""
    if args.plot:
        args.groups = True
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'liverec[plot]'")
    if args.task == "rating" and (args.groups or args.rerank):
        raise UsageError("--groups, --plot and --rerank measure ranked lists; they need --task ranking")
    if args.rerank is not None:
        try:
            args.rerank_choice = parse_rerank(args.rerank)
        except ValueError as error:
            raise UsageError(f"--rerank: {error}") from None
        if args.sampled_negatives:
            raise UsageError("--rerank: the sampled protocol ranks model scores; drop --sampled-negatives")
    if args.rerank_candidates < 1:
        raise UsageError(f"--rerank-candidates: expected a positive integer, got {args.rerank_candidates}")


def _reranker(args: argparse.Namespace, model: Recommender, dataset: Dataset, split: RankingSplit) -> Reranker | None:
    """The re-ranker of ``--rerank`` over this model's vectors, the genres and the training popularity."""
    if args.rerank is None:
        return None
    name, strength = args.rerank_choice
    categories = dataset.items.genre_matrix()[0] if dataset.items is not None else None
    catalogue = RerankCatalogue.for_model(model, categories, item_interactions(split))
    try:
        return create_reranker(name, strength, catalogue)
    except ValueError as error:
        raise UsageError(f"--rerank: {error}") from None


def _groups(
    dataset: Dataset, split: RankingSplit, ranked: np.ndarray, ks: tuple[int, ...], metric_k: int
) -> dict[str, Any]:
    """The ``groups`` block of the lists ``ranked`` (see :mod:`liverec.evaluation.groups`)."""
    categories, names = dataset.items.genre_matrix() if dataset.items is not None else (None, None)
    ndcg = per_user_ranking_metrics(ranked, split.targets, metric_k)["ndcg"]
    return group_report(
        ranked,
        ndcg,
        split.history,
        item_interactions(split),
        split.train.n_users,
        categories if names else None,
        names or None,
        dataset.users,
        k=metric_k,
        metric=f"ndcg@{metric_k}",
    )


def _create(args: argparse.Namespace, params: dict[str, Any], dataset: Dataset) -> Recommender:
    """The unfitted model of ``--model`` / ``--param``, with progress bars and item features set."""
    try:
        model = create_model(args.model, **params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--param: {error}") from None
    model.progress = not args.quiet and sys.stderr.isatty()
    if model.takes_item_features and dataset.items is not None:  # genres; used with --param side_features=true
        model.set_item_features(*dataset.items.genre_matrix())
    return model


def _measure_rating(model: Recommender, split: RankingSplit, report: dict[str, Any]) -> None:
    """``--task rating``: error metrics of the predicted values of the held-out events, into ``report``."""
    if split.test_events is None:
        raise UsageError("--task rating: this protocol has no held-out events")
    try:
        report["metrics"] = rating_metrics(model, split.test_events)
    except TypeError as error:
        raise UsageError(f"--task rating: {error}") from None
    report["evaluated_events"] = len(split.test_events)
    report["evaluated_users"] = len(np.unique(split.test_events.user_ids))


def _measure_ranking(
    args: argparse.Namespace,
    model: Recommender,
    dataset: Dataset,
    split: RankingSplit,
    ks: tuple[int, ...],
    report: dict[str, Any],
) -> None:
    """``--task ranking``: top-K metrics (and the sampled protocol, the rankings file if asked), into ``report``."""
    reranker = _reranker(args, model, dataset, split)
    result = evaluate_ranking(
        model,
        split,
        ks,
        exclude_seen=not args.keep_seen,
        sampled_negatives=args.sampled_negatives or None,
        seed=args.seed,
        progress=not args.quiet,
        reranker=reranker,
        n_candidates=args.rerank_candidates,
    )
    report["metrics"] = result.metrics
    metric_k = min(10, max(ks))
    if reranker is not None:
        report["rerank"] = {
            **reranker.describe(),
            "candidates": max(args.rerank_candidates, max(ks)),
            "baseline_metrics": result.baseline_metrics,
        }
    if args.groups:
        report["groups"] = _groups(dataset, split, result.ranked, ks, metric_k)
        if reranker is not None and result.baseline_ranked is not None:
            report["rerank"]["baseline_groups"] = _groups(dataset, split, result.baseline_ranked, ks, metric_k)
    if args.plot:
        title = f"{dataset.name}, {args.model}" + (f", {args.rerank}" if args.rerank else "")
        plot_exposure(report["groups"], args.plot, f"{title}: exposure by popularity decile (top-{metric_k})")
        report["plot_file"] = str(args.plot)
    report["exclude_seen"] = not args.keep_seen
    report["evaluated_users"] = len(split.history)
    if result.sampled is not None:
        report["sampled_metrics"] = {
            "description": f"SAMPLED: target ranked among {args.sampled_negatives} uniform negatives the user "
            "never interacted with (SASRec paper protocol); not comparable to full ranking",
            "negatives": args.sampled_negatives,
            "metrics": result.sampled,
        }
    if args.save_rankings:
        save_rankings(Path(args.save_rankings), dataset, split, result)
        report["rankings_file"] = str(args.save_rankings)
        report["targets_file"] = f"{args.save_rankings}.targets.csv"


def save_rankings(path: Path, dataset: Dataset, split: RankingSplit, result: RankingResult) -> None:
    """``path``: ``user_id,item_id,rank,score`` (external ids, rank from 1); ``path.targets.csv``: targets."""
    import pandas as pd

    ranked, scores = result.ranked, result.scores
    n_users, k = ranked.shape
    valid = ranked >= 0
    user_rows = np.repeat(np.arange(n_users), k).reshape(n_users, k)
    frame = pd.DataFrame(
        {
            "user_id": dataset.user_map.to_external(split.history.users[user_rows[valid]]),
            "item_id": dataset.item_map.to_external(ranked[valid]),
            "rank": np.tile(np.arange(1, k + 1), n_users).reshape(n_users, k)[valid],
            "score": scores[valid].astype(np.float64),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.9g")
    targets = pd.DataFrame(
        {
            "user_id": dataset.user_map.to_external(np.repeat(split.targets.users, split.targets.lengths())),
            "item_id": dataset.item_map.to_external(split.targets.items),
        }
    )
    targets.to_csv(f"{path}.targets.csv", index=False)


def format_table(report: dict[str, Any]) -> str:
    """A readable summary of an evaluation report."""
    lines = [
        f"dataset   {report['dataset']['name']}: {report['dataset']['users']} users, "
        f"{report['dataset']['items']} items, {report['dataset']['events']} events",
        f"protocol  {report['protocol']['name']} ({report['protocol']['description']})",
        f"model     {report['model']}  {json.dumps(report['parameters'])}",
        f"users     {report['evaluated_users']} evaluated",
        "",
    ]
    rerank = report.get("rerank")
    if rerank is None:
        lines.append(f"{'metric':<22}{'value':>10}")
        lines += [f"{name:<22}{value:>10.4f}" for name, value in report["metrics"].items()]
    else:
        lines.insert(-1, f"rerank    {rerank['name']} λ={rerank['strength']:g} over the top {rerank['candidates']}")
        lines.append(f"{'metric':<22}{'reranked':>10}{'model':>10}")
        baseline = rerank["baseline_metrics"]
        lines += [f"{name:<22}{value:>10.4f}{baseline[name]:>10.4f}" for name, value in report["metrics"].items()]
    if report.get("groups"):
        lines += format_groups(report["groups"])
    if report.get("sampled_metrics"):
        sampled = report["sampled_metrics"]
        lines += ["", f"SAMPLED protocol ({sampled['description']}) — for comparison with papers only:"]
        lines += [f"{'sampled ' + name:<22}{value:>10.4f}" for name, value in sampled["metrics"].items()]
    seconds = report["seconds"]
    lines += ["", "seconds   " + ", ".join(f"{key} {value:.2f}" for key, value in seconds.items())]
    return "\n".join(lines)
