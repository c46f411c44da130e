"""``liverec demo``: data in, a model trained, the API serving, live events changing recommendations."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from liverec.cli.common import add_data_options, load_input, model_params
from liverec.errors import UsageError

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the main job: data in, a model trained, the API serving, live events changing recommendations",
        description="Generate a synthetic stream (or load --data), import its first part into a fresh event log, "
        "train and register a model, serve the API on 127.0.0.1, replay the rest of the stream over HTTP, and print "
        "what to try. --smoke does it small and stops.",
    )
    add_data_options(demo)
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
    demo.add_argument(
        "--replay-rate",
        type=float,
        default=None,
        metavar="EVENTS_PER_S",
        help="pace the live replay at this many events a second, so the dashboard's overview can follow it "
        "(default 500; with --smoke, as fast as the server takes them)",
    )
    demo.add_argument("--smoke", action="store_true", help="small data, short training, stop when done (CI)")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from liverec.demo import DemoOptions, run_demo

    params = model_params(args)
    if args.smoke and args.model == "sasrec" and not any(p.startswith("max_epochs=") for p in args.param):
        params.setdefault("max_epochs", 5)
    if not 0 < args.live_fraction < 1:
        raise UsageError(f"--live-fraction: expected a number between 0 and 1, got {args.live_fraction}")
    replay_rate = args.replay_rate if args.replay_rate is not None else (None if args.smoke else 500.0)
    if replay_rate is not None and not (replay_rate > 0 and math.isfinite(replay_rate)):
        raise UsageError(f"--replay-rate: expected a number of events a second > 0, got {args.replay_rate}")
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
                replay_rate=replay_rate,
            )
        )
    except (FileExistsError, RuntimeError) as error:
        raise UsageError(str(error)) from None
