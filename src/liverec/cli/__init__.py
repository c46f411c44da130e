"""The ``liverec`` command line: the engine (demo, import, train, serve, rebuild) and offline work (evaluate,
replay, compare, generate, info, models).

Errors people can fix (a bad file, a bad flag value) end the program with exit code 2 and one line
on stderr; nothing else is printed to stdout then, so ``--json`` output is always one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from liverec import __version__
from liverec.data.interactions import Dataset
from liverec.data.loaders import FORMATS, describe, load_source
from liverec.data.splits import PROTOCOLS, RankingSplit, leave_one_out, make_split
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.errors import LiveRecError, UsageError
from liverec.evaluation.protocols import RankingResult, evaluate_ranking
from liverec.evaluation.rating import rating_metrics
from liverec.models import MODEL_REGISTRY, Recommender, check_model_name, create_model, parse_params
from liverec.settings import Settings


# --------------------------------------------------------------------------------------------- helpers
def load_input(args: argparse.Namespace) -> tuple[Dataset, str]:
    """The dataset of ``--data`` / ``--synthetic`` and the column options (see :func:`load_source`)."""
    columns = {
        name: getattr(args, name) for name in ("user_col", "item_col", "timestamp_col", "event_type_col", "value_col")
    }
    return load_source(args.data, synthetic=args.synthetic, seed=args.seed, format=args.format, **columns)


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise UsageError(f"--k: expected a positive integer or a comma-separated list, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k: expected positive integers, got {text!r}")
    return ks


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
        f"{'metric':<22}{'value':>10}",
    ]
    lines += [f"{name:<22}{value:>10.4f}" for name, value in report["metrics"].items()]
    if report.get("sampled_metrics"):
        sampled = report["sampled_metrics"]
        lines += ["", f"SAMPLED protocol ({sampled['description']}) — for comparison with papers only:"]
        lines += [f"{'sampled ' + name:<22}{value:>10.4f}" for name, value in sampled["metrics"].items()]
    seconds = report["seconds"]
    lines += ["", "seconds   " + ", ".join(f"{key} {value:.2f}" for key, value in seconds.items())]
    return "\n".join(lines)


PROTOCOL_DESCRIPTIONS = {
    "loo": "leave-one-out: last event per user is the test target, the one before validation",
    "temporal": "global temporal split by time, test = events after the cut",
    "user-temporal": "per-user temporal split, test = each user's last events",
}


# --------------------------------------------------------------------------------------------- commands
def cmd_evaluate(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    check_model_name(args.model)
    params = parse_params(args.model, args.param)
    params.setdefault("seed", args.seed)
    started = time.perf_counter()
    dataset, source = load_input(args)
    seconds = {"load": time.perf_counter() - started}
    started = time.perf_counter()
    split, validation = make_split(dataset, args.protocol, args.test_fraction)
    seconds["split"] = time.perf_counter() - started
    try:
        model = create_model(args.model, **params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--param: {error}") from None
    model.progress = not args.quiet and sys.stderr.isatty()
    if model.takes_item_features and dataset.items is not None:  # genres; used with --param side_features=true
        model.set_item_features(*dataset.items.genre_matrix())
    started = time.perf_counter()
    model.fit(split.train, validation=validation)
    seconds["fit"] = time.perf_counter() - started
    report: dict[str, Any] = {
        "dataset": {
            "name": dataset.name,
            "source": source,
            "users": dataset.interactions.n_users,
            "items": dataset.interactions.n_items,
            "events": len(dataset.interactions),
        },
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
        if split.test_events is None:
            raise UsageError("--task rating: this protocol has no held-out events")
        try:
            report["metrics"] = rating_metrics(model, split.test_events)
        except TypeError as error:
            raise UsageError(f"--task rating: {error}") from None
        report["evaluated_events"] = len(split.test_events)
        report["evaluated_users"] = len(np.unique(split.test_events.user_ids))
    else:
        result = evaluate_ranking(
            model,
            split,
            ks,
            exclude_seen=not args.keep_seen,
            sampled_negatives=args.sampled_negatives or None,
            seed=args.seed,
            progress=not args.quiet,
        )
        report["metrics"] = result.metrics
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
    seconds["evaluate"] = time.perf_counter() - started
    report["seconds"] = seconds
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    dataset, _source = load_input(args)
    summary = describe(dataset)
    print(
        json.dumps(summary, default=str)
        if args.json
        else "\n".join(f"{key:<20}{value}" for key, value in summary.items())
    )
    return 0


def _generate(args: argparse.Namespace) -> Dataset:
    """The synthetic dataset asked for by ``--events/--users/--items/--seed``; bad sizes are usage errors."""
    try:
        config = SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed)
        return generate(config)[0]
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    import pandas as pd

    started = time.perf_counter()
    dataset = _generate(args)
    seconds = time.perf_counter() - started
    inter = dataset.interactions
    frame = pd.DataFrame(
        {
            "user_id": dataset.user_map.to_external(inter.user_ids),
            "item_id": dataset.item_map.to_external(inter.item_ids),
            "timestamp": inter.timestamps,
            "event_type": np.asarray(inter.event_type_names, dtype=object)[inter.event_types],
            "value": inter.values,
        }
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError as error:
            raise ImportError("writing Parquet files needs pyarrow: pip install 'liverec[parquet]'") from error
    else:
        frame.to_csv(out, index=False, sep="\t" if out.suffix == ".tsv" else ",")
    print(
        f"wrote {len(frame)} events ({inter.n_users} users, {inter.n_items} items) to {out} "
        f"in {seconds:.2f}s generation"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for name in sorted(MODEL_REGISTRY):
        cls = MODEL_REGISTRY[name]
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12}{doc}\n{'':<12}{defaults}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Generate a synthetic stream with planted structure, evaluate every baseline on it, print a table."""
    unknown = [name for name in args.models.split(",") if name not in MODEL_REGISTRY]
    if unknown:
        raise UsageError(
            f"--models: unknown model {unknown[0]!r}; expected names from {', '.join(sorted(MODEL_REGISTRY))}"
        )
    started = time.perf_counter()
    dataset = _generate(args)
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


def cmd_replay(args: argparse.Namespace) -> int:
    """Test-then-train replay of a time-ordered dataset: static vs online vs periodic retraining vs popularity."""
    import importlib.util

    from liverec.evaluation.replay import ReplayConfig, format_report, plot_windows, replay
    from liverec.online import LearnerConfig
    from liverec.online.learner import TUNED_LEARNER

    check_model_name(args.model)
    params = parse_params(args.model, args.param)
    params.setdefault("seed", args.seed)
    try:
        create_model(args.model, **params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--param: {error}") from None
    arms = tuple(arm.strip() for arm in args.arms.split(","))
    if "online" in arms and not create_model(args.model).supports_partial_fit:
        raise UsageError(f"--model: {args.model!r} cannot learn online (no partial_fit); leave out the online arm")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'liverec[plot]'")
    tuned = TUNED_LEARNER.get(args.model, {})
    try:
        learner = LearnerConfig(
            every_events=None,
            replay_ratio=args.replay_ratio,
            lr_multiplier=args.lr_multiplier,
            epochs=args.update_epochs,
            batch_size=args.update_batch_size or tuned.get("batch_size"),
            max_sequence=args.update_max_sequence or tuned.get("max_sequence"),
            relearn_history=args.relearn_history,
            seed=args.seed,
        )
        config = ReplayConfig(
            model=args.model,
            params=params,
            pretrain_fraction=args.pretrain_fraction,
            update_every=args.update_every,
            retrain_every=args.retrain_every,
            window_days=args.window_days,
            windows=args.windows,
            arms=arms,
            learner=learner,
        )
    except ValueError as error:  # "field: reason" -> "--flag: reason"
        flags = {"epochs": "update-epochs", "batch_size": "update-batch-size", "max_sequence": "update-max-sequence"}
        name, _, reason = str(error).partition(": ")
        raise UsageError(f"--{flags.get(name, name).replace('_', '-')}: {reason}") from None
    started = time.perf_counter()
    dataset, source = load_input(args)
    load_seconds = time.perf_counter() - started
    try:
        config.pretrain_events(len(dataset.interactions))
    except ValueError as error:
        raise UsageError(f"--pretrain-fraction: {error}") from None
    result = replay(dataset, config, progress=_progress(args))
    report: dict[str, Any] = {
        "dataset": {
            "name": dataset.name,
            "source": source,
            "users": dataset.interactions.n_users,
            "items": dataset.interactions.n_items,
            "events": len(dataset.interactions),
        },
        **result.to_dict(),
    }
    report["seconds"] = {"load": load_seconds, **report["seconds"]}
    if args.plot:
        plot_windows(report, args.plot)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


# --------------------------------------------------------------------------------------------- the engine
def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from --config / LIVEREC_* / flags; invalid values are one-line usage errors."""
    overrides = {"data_dir": getattr(args, "data_dir", None), **extra}
    try:
        return Settings.load(getattr(args, "config", None), **overrides)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise UsageError(f"setting {field}: {first['msg']} (got {first.get('input')!r})") from None


def _open_log(settings: Any, *, apply: bool = False) -> Any:
    """The configured event log; ``apply``: with the Redis backend, apply what is appended to the shared state."""
    from liverec.backends import open_event_log, open_redis_state

    if settings.backend == "redis" and apply:
        state = open_redis_state(settings)
        return open_event_log(settings, on_commit=state.apply, client=state.client)
    return open_event_log(settings)


def cmd_import(args: argparse.Namespace) -> int:
    from liverec.pipeline import import_dataset

    settings = _settings(args)
    dataset, source = load_input(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _open_log(settings, apply=True) as event_log:
        try:
            summary = import_dataset(
                dataset,
                event_log,
                source=args.source or dataset.name,
                event_types=settings.event_types,
                limit=args.limit,
            )
        except ValueError as error:
            raise UsageError(f"--data: {error}") from None
        total = event_log.count()
    print(
        f"imported {source}: {summary.stored} new events, {summary.duplicates} already in the log, "
        f"{summary.items_described} items described, in {summary.seconds:.2f}s "
        f"({summary.events / max(summary.seconds, 1e-9):,.0f} events/s); the log holds {total} events"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from liverec.backends import open_registry
    from liverec.pipeline import log_data_from_dataset, read_log, train_and_register
    from liverec.serving.engine import EVENTS_FILE

    check_model_name(args.model)
    params = parse_params(args.model, args.param)
    settings = _settings(args)
    if args.data is not None or args.synthetic:
        dataset, source = load_input(args)
        data = log_data_from_dataset(dataset, source)
    else:
        path = settings.data_dir / EVENTS_FILE
        if settings.backend == "embedded" and not path.exists():
            raise UsageError(f"--data-dir: no event log at {str(path)!r}; run liverec import first, or pass --data")
        with _open_log(settings) as event_log:
            data = read_log(event_log, settings.event_types)
        source = str(path) if settings.backend == "embedded" else f"{settings.redis_url} ({settings.redis_prefix})"
    if data.interactions.n_users == 0:
        raise UsageError(f"{source}: no events to train on")
    registry = open_registry(settings)
    summary = train_and_register(
        data, registry, args.model, params, promote=args.promote, progress=_progress(args), seed=args.seed
    )
    report = {
        "version": summary.version,
        "model": summary.model,
        "promoted": summary.promoted,
        "fit_seconds": round(summary.fit_seconds, 2),
        "metrics": summary.metrics,
        "data": source,
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k:<12}{v}" for k, v in report.items()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from liverec.serving.server import serve

    serve(_settings(args, host=args.host, port=args.port))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from liverec.serving.server import run_worker

    settings = _settings(args)
    if settings.backend == "embedded" and not (settings.data_dir / "events.db").exists():
        raise UsageError(f"--data-dir: no event log at {str(settings.data_dir / 'events.db')!r}")
    run_worker(settings)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from liverec.serving.engine import EVENTS_FILE, rebuild_state

    settings = _settings(args)
    if settings.backend == "embedded" and not (settings.data_dir / EVENTS_FILE).exists():
        raise UsageError(f"--data-dir: no event log at {str(settings.data_dir / EVENTS_FILE)!r}")
    started = time.perf_counter()
    state = rebuild_state(settings)
    print(
        f"rebuilt state from {state.n_events} events (offset {state.offset}): {state.n_users} users, "
        f"{state.n_items} items, in {time.perf_counter() - started:.2f}s"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from liverec.demo import DemoOptions, run_demo

    check_model_name(args.model)
    params = parse_params(args.model, args.param)
    if args.smoke and args.model == "sasrec" and not any(p.startswith("max_epochs=") for p in args.param):
        params.setdefault("max_epochs", 5)
    if not 0 < args.live_fraction < 1:
        raise UsageError(f"--live-fraction: expected a number between 0 and 1, got {args.live_fraction}")
    dataset, source = (None, "synthetic stream") if args.data is None else load_input(args)
    try:
        return run_demo(
            DemoOptions(
                data=dataset,
                source=source,
                data_dir=args.data_dir,
                model=args.model,
                params=params,
                port=args.port,
                live_fraction=args.live_fraction,
                smoke=args.smoke,
                seed=args.seed,
            )
        )
    except (FileExistsError, RuntimeError) as error:
        raise UsageError(str(error)) from None


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


# --------------------------------------------------------------------------------------------- parser
def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        type=Path,
        help="dataset file or folder: MovieLens (ratings.csv, u.data, "
        "ratings.dat), an events file (.csv/.tsv/.parquet/.jsonl) or SASRec text (user item per line)",
    )
    group.add_argument("--synthetic", type=int, metavar="N_EVENTS", help="use a generated stream instead of --data")
    group.add_argument("--format", choices=FORMATS, help="force a loader instead of detecting it")
    for column in ("user", "item", "timestamp", "event_type", "value"):
        group.add_argument(
            f"--{column.replace('_', '-')}-col",
            dest=f"{column}_col",
            default=f"{column}_id" if column in ("user", "item") else column,
            metavar="NAME",
            help=f"column holding the {column.replace('_', ' ')} in an events file",
        )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liverec", description="LiveRec: real-time personalised recommendations.")
    parser.add_argument("--version", action="version", version=f"liverec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = sub.add_parser(
        "evaluate",
        help="train a model on a split and measure it",
        description="Train a model on the training part of a split and report full-ranking "
        "metrics (seen items excluded), optionally the sampled protocol too.",
    )
    _add_data_options(evaluate)
    evaluate.add_argument("--model", required=True, help=f"one of: {', '.join(sorted(MODEL_REGISTRY))}")
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
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--save-rankings", metavar="FILE", help="write top-K as CSV and FILE.targets.csv")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=cmd_evaluate)

    replay_parser = sub.add_parser(
        "replay",
        help="measure online learning: a test-then-train replay of a time-ordered dataset",
        description="Sort the events by time, fit the model on the first --pretrain-fraction, then replay the rest "
        "test-then-train: each event is first predicted (full ranking over the items seen so far, the user's seen "
        "items excluded, HR@10 and NDCG@10 of its item), then learned. Arms: static (the pretrained model), online "
        "(updated after every chunk), retrain (fit from scratch every --retrain-every events), popularity "
        "(pop-recent, refit after every chunk). Scoring goes in chunks of --update-every events: every event of a "
        "chunk is scored by the models as they are at the start of the chunk, but each event's history is exact "
        "(it includes the earlier events of the chunk). Repeats (items the user already had) are skipped; items "
        "never seen before are misses for every arm.",
    )
    _add_data_options(replay_parser)
    replay_parser.add_argument(
        "--model", default="sasrec", help=f"one of: {', '.join(sorted(MODEL_REGISTRY))} (default sasrec)"
    )
    replay_parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter (repeatable)"
    )
    replay_parser.add_argument(
        "--pretrain-fraction",
        type=float,
        default=0.5,
        help="share of the events, in time order, the initial model is fitted on (default 0.5)",
    )
    replay_parser.add_argument(
        "--update-every",
        type=int,
        default=1000,
        metavar="N",
        help="events per chunk: models score a chunk as they are at its start, then learn it (default 1000)",
    )
    replay_parser.add_argument(
        "--retrain-every",
        type=int,
        metavar="N",
        help="events between full refits of the retrain arm (default: about 4 retrains over the replay)",
    )
    replay_parser.add_argument(
        "--window-days", type=float, default=30.0, help="popularity arm: the pop-recent window (default 30)"
    )
    replay_parser.add_argument(
        "--windows", type=int, default=10, help="equal-count windows of the replay to report (default 10)"
    )
    replay_parser.add_argument(
        "--arms", default="static,online,retrain,popularity", help="comma-separated arms to run (default all four)"
    )
    learner = replay_parser.add_argument_group("online updates")
    learner.add_argument(
        "--replay-ratio",
        type=float,
        default=1.0,
        help="old users replayed per user with new events, against forgetting (default 1.0)",
    )
    learner.add_argument(
        "--lr-multiplier", type=float, default=1.0, help="learning rate of an update / the model's (default 1.0)"
    )
    learner.add_argument(
        "--update-epochs", type=int, help="passes over each update's batch (default: the model's partial_fit_epochs)"
    )
    learner.add_argument(
        "--update-batch-size",
        type=int,
        help="sequences per training step in an update (default 16 for sasrec, chosen on the first half of the "
        "ml-100k replay; the model's batch_size for other models)",
    )
    learner.add_argument(
        "--update-max-sequence",
        type=int,
        metavar="N",
        help="most recent items per user an update trains on (default 101 for sasrec, chosen like the batch size; "
        "max_len + 1 for other models)",
    )
    learner.add_argument(
        "--relearn-history",
        action="store_true",
        help="each update learns the affected users' earlier items again as targets (default: they are context "
        "for the new events only)",
    )
    replay_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    replay_parser.add_argument("--plot", metavar="FILE.png", help="draw HR@10 and NDCG@10 per window (matplotlib)")
    replay_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    replay_parser.set_defaults(handler=cmd_replay)

    info = sub.add_parser("info", help="describe a dataset", description="Load a dataset and print its counts.")
    _add_data_options(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)

    gen = sub.add_parser(
        "generate",
        help="write a synthetic event stream to a file",
        description="Generate a seeded synthetic stream (drifting tastes, popularity waves, "
        "sequences, new items) and write it as CSV, TSV or Parquet.",
    )
    gen.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    gen.add_argument("--users", type=int, default=2_000, help="number of users (default 2000)")
    gen.add_argument("--items", type=int, default=1_000, help="number of items (default 1000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--output", required=True, help="output file (.csv, .tsv or .parquet)")
    gen.set_defaults(handler=cmd_generate)

    models = sub.add_parser(
        "models",
        help="list models and their default hyperparameters",
        description="List every registered model with its default hyperparameters.",
    )
    models.set_defaults(handler=cmd_models)

    compare = sub.add_parser(
        "compare",
        help="compare models on a synthetic stream (offline)",
        description="Generate a synthetic stream with a known structure and compare the "
        "baselines on it under leave-one-out full ranking.",
    )
    compare.add_argument("--events", type=int, default=200_000, help="number of events (default 200000)")
    compare.add_argument("--users", type=int, default=2_000, help="number of users (default 2000)")
    compare.add_argument("--items", type=int, default=1_000, help="number of items (default 1000)")
    compare.add_argument(
        "--models",
        default="pop,pop-decay,pop-recent,itemknn,ease,mf-bpr,mf-bce",
        help="comma-separated models to compare",
    )
    compare.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    compare.set_defaults(handler=cmd_compare)

    def data_dir_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=default,
            metavar="DIR",
            help="folder holding the event log, state and model registry"
            + (f" (default {default})" if default else " (default: the data_dir setting, liverec-data)"),
        )
        parser.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")

    demo = sub.add_parser(
        "demo",
        help="the main job: data in, a model trained, the API serving, live events changing recommendations",
        description="Generate a synthetic stream (or load --data), import its first part into a fresh event log, "
        "train and register a model, serve the API on 127.0.0.1, replay the rest of the stream over HTTP, and print "
        "what to try. --smoke does it small and stops.",
    )
    _add_data_options(demo)
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("liverec-demo"),
        metavar="DIR",
        help="fresh folder for the demo's data (default liverec-demo; wiped only if the demo made it)",
    )
    demo.add_argument("--model", default="sasrec", help="model to train (default sasrec)")
    demo.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000; 0 = any free)")
    demo.add_argument(
        "--live-fraction", type=float, default=0.2, help="share of the stream replayed live over HTTP (default 0.2)"
    )
    demo.add_argument("--smoke", action="store_true", help="small data, short training, stop when done (CI)")
    demo.set_defaults(handler=cmd_demo)

    imp = sub.add_parser(
        "import",
        help="load a dataset's events into the event log",
        description="Append a dataset's events to the log of --data-dir in time order. Event ids are derived from "
        "the source and row, so running it again stores nothing twice (an interrupted import resumes).",
    )
    _add_data_options(imp)
    data_dir_option(imp)
    imp.add_argument("--source", help="name used in event ids (default: the dataset's name)")
    imp.add_argument("--limit", type=int, help="import only the first N events by time")
    imp.set_defaults(handler=cmd_import)

    train = sub.add_parser(
        "train",
        help="train a model from the event log (or --data) and register it",
        description="Fit a model on every event but each user's last (the held-out metrics go into the manifest), "
        "save it as a new version under DIR/models and promote it (the first version always is).",
    )
    _add_data_options(train)
    data_dir_option(train)
    train.add_argument(
        "--model", default="sasrec", help=f"one of: {', '.join(sorted(MODEL_REGISTRY))} (default sasrec)"
    )
    train.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter")
    train.add_argument(
        "--no-promote", dest="promote", action="store_false", help="register as a candidate without serving it"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=cmd_train)

    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API over a data folder",
        description="Serve events in / recommendations out over HTTP. Settings come from --config FILE, LIVEREC_* "
        "environment variables and these flags; the effective settings are printed at start-up.",
    )
    data_dir_option(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser(
        "worker",
        help="run the online updater on its own (with the Redis backend: also apply events to the shared state)",
        description="Tail the event log of DIR, update the served model incrementally, register each update as a "
        "candidate and promote it when the evaluation gate approves (liverec serve runs this as a child process "
        "unless the updater setting is false). With LIVEREC_BACKEND=redis, start any number of workers: each is a "
        "member of the consumer group that applies stored events to the shared state (taking over what a dead "
        "worker left pending), and the one holding the updater lease also runs the updater. Stops on SIGTERM or "
        "Ctrl-C.",
    )
    data_dir_option(worker)
    worker.set_defaults(handler=cmd_worker)

    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild the state from the event log",
        description="Replay the whole event log into a fresh state and write DIR/state.npz (with "
        "LIVEREC_BACKEND=redis: clear the shared state in Redis and apply the whole stream again; stop the API "
        "replicas and workers first).",
    )
    data_dir_option(rebuild)
    rebuild.set_defaults(handler=cmd_rebuild)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (LiveRecError, FileNotFoundError, ImportError) as error:
        print(f"liverec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 141
