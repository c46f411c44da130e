"""``liverec replay``: measure online learning with a test-then-train replay of a time-ordered dataset."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from liverec.cli.common import add_data_options, add_model_option, dataset_report, load_input, model_params, progress
from liverec.errors import UsageError
from liverec.models import Recommender, create_model

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers
    from liverec.evaluation.replay import ReplayConfig


def add_parser(subparsers: Subparsers) -> None:
    replay_parser = subparsers.add_parser(
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
    add_data_options(replay_parser)
    add_model_option(replay_parser, default="sasrec")
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
    _add_learner_options(replay_parser.add_argument_group("online updates"))
    replay_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    replay_parser.add_argument("--plot", metavar="FILE.png", help="draw HR@10 and NDCG@10 per window (matplotlib)")
    replay_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    replay_parser.set_defaults(handler=run)


def _add_learner_options(learner: argparse._ArgumentGroup) -> None:
    """The options of the online arm's updates (a :class:`liverec.online.LearnerConfig`)."""
    learner.add_argument(
        "--rehearsal-ratio",
        type=float,
        default=1.0,
        help="old users rehearsed per user with new events, against forgetting (default 1.0)",
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


def run(args: argparse.Namespace) -> int:
    """Test-then-train replay of a time-ordered dataset: static vs online vs periodic retraining vs popularity."""
    import importlib.util

    from liverec.evaluation.replay import format_report, plot_windows, replay

    params = model_params(args)
    params.setdefault("seed", args.seed)
    try:
        model = create_model(args.model, **params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--param: {error}") from None
    arms = tuple(arm.strip() for arm in args.arms.split(","))
    if "online" in arms and not model.supports_partial_fit:
        raise UsageError(f"--model: {args.model!r} cannot learn online (no partial_fit); leave out the online arm")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'liverec[plot]'")
    config = _replay_config(args, params, arms, model)
    started = time.perf_counter()
    dataset, source = load_input(args)
    load_seconds = time.perf_counter() - started
    try:
        config.pretrain_events(len(dataset.interactions))
    except ValueError as error:
        raise UsageError(f"--pretrain-fraction: {error}") from None
    result = replay(dataset, config, progress=progress(args))
    report: dict[str, Any] = {
        "dataset": dataset_report(dataset, source),
        **result.to_dict(),
    }
    report["seconds"] = {"load": load_seconds, **report["seconds"]}
    if args.plot:
        plot_windows(report, args.plot)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _replay_config(
    args: argparse.Namespace, params: dict[str, Any], arms: tuple[str, ...], model: Recommender
) -> ReplayConfig:
    """The replay's configuration from the flags; an invalid value is a usage error naming its flag."""
    from liverec.evaluation.replay import ReplayConfig
    from liverec.models.base import UpdateOptions
    from liverec.online.learner import TUNED_LEARNER, LearnerConfig

    tuned = TUNED_LEARNER.get(args.model, {})
    try:
        learner = LearnerConfig(
            every_events=None,
            rehearsal_ratio=args.rehearsal_ratio,
            lr_multiplier=args.lr_multiplier,
            epochs=args.update_epochs,
            batch_size=args.update_batch_size or tuned.get("batch_size"),
            max_sequence=args.update_max_sequence or tuned.get("max_sequence"),
            relearn_history=args.relearn_history,
            seed=args.seed,
        )
        if "online" in arms:  # the learner's options must be ones the model has (else it fails mid-replay)
            model.check_update_options(
                UpdateOptions(lr_multiplier=learner.lr_multiplier, epochs=learner.epochs, batch_size=learner.batch_size)
            )
        return ReplayConfig(
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
