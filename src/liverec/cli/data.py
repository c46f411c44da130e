"""``liverec info`` and ``liverec generate``: describe a dataset, write a synthetic one."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from liverec.cli.common import add_data_options, add_stream_options, generate_dataset, load_input
from liverec.data.loaders import describe

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    info = subparsers.add_parser("info", help="describe a dataset", description="Load a dataset and print its counts.")
    add_data_options(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=run_info)

    gen = subparsers.add_parser(
        "generate",
        help="write a synthetic event stream to a file",
        description="Generate a seeded synthetic stream (drifting tastes, popularity waves, "
        "sequences, new items) and write it as CSV, TSV or Parquet.",
    )
    add_stream_options(gen, events=100_000)
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--output", required=True, help="output file (.csv, .tsv or .parquet)")
    gen.set_defaults(handler=run_generate)


def run_info(args: argparse.Namespace) -> int:
    dataset, _source = load_input(args)
    summary = describe(dataset)
    print(
        json.dumps(summary, default=str)
        if args.json
        else "\n".join(f"{key:<20}{value}" for key, value in summary.items())
    )
    return 0


def run_generate(args: argparse.Namespace) -> int:
    import pandas as pd

    started = time.perf_counter()
    dataset = generate_dataset(args)
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
