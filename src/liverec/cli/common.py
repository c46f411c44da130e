"""What several ``liverec`` commands share: the data options, the dataset they name, settings, the model option."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ValidationError

from liverec.data.interactions import Dataset
from liverec.data.loaders import FORMATS, load_source
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.errors import UsageError
from liverec.models import MODEL_REGISTRY, check_model_name, parse_params
from liverec.settings import Settings

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data`` / ``--synthetic`` / ``--format``, the column options and ``--seed`` (read by :func:`load_input`)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        type=Path,
        help="dataset file or folder: MovieLens (ratings.csv, u.data, "
        "ratings.dat), an events file (.csv/.tsv/.parquet/.jsonl), SASRec text (user item per line) or "
        "sequences (user item1 item2 ... per line: order without time)",
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


def load_input(args: argparse.Namespace) -> tuple[Dataset, str]:
    """The dataset of ``--data`` / ``--synthetic`` and the column options (see :func:`load_source`)."""
    columns = {
        name: getattr(args, name) for name in ("user_col", "item_col", "timestamp_col", "event_type_col", "value_col")
    }
    return load_source(args.data, synthetic=args.synthetic, seed=args.seed, format=args.format, **columns)


def add_stream_options(parser: argparse.ArgumentParser, *, events: int) -> None:
    """``--events/--users/--items``: the size of a synthetic stream (read by :func:`generate_dataset`)."""
    parser.add_argument("--events", type=int, default=events, help=f"number of events (default {events})")
    parser.add_argument("--users", type=int, default=2_000, help="number of users (default 2000)")
    parser.add_argument("--items", type=int, default=1_000, help="number of items (default 1000)")


def generate_dataset(args: argparse.Namespace) -> Dataset:
    """The synthetic dataset asked for by ``--events/--users/--items/--seed``; bad sizes are usage errors."""
    try:
        config = SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed)
        return generate(config)[0]
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def add_model_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model``: required without a ``default``; its help lists the registered models."""
    names = ", ".join(sorted(MODEL_REGISTRY))
    if default is None:
        parser.add_argument("--model", required=True, help=f"one of: {names}")
    else:
        parser.add_argument("--model", default=default, help=f"one of: {names} (default {default})")


def model_params(args: argparse.Namespace) -> dict[str, Any]:
    """The typed ``--param`` overrides of ``--model``; an unknown model name is a usage error."""
    return parse_params(check_model_name(args.model), args.param)


def parse_ks(text: str) -> tuple[int, ...]:
    """``"5,10,20"`` -> ``(5, 10, 20)``: the cut-offs of ``--k``, sorted and distinct."""
    try:
        ks = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise UsageError(f"--k: expected a positive integer or a comma-separated list, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k: expected positive integers, got {text!r}")
    return ks


def load_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from --config / LIVEREC_* / flags; invalid values are one-line usage errors."""
    overrides = {"data_dir": getattr(args, "data_dir", None), **extra}
    try:
        return Settings.load(getattr(args, "config", None), **overrides)
    except ValidationError as error:
        first = error.errors()[0]
        if not first["loc"]:  # a rule over the settings as a whole: its message names what is wrong
            raise UsageError(f"settings: {first['msg'].removeprefix('Value error, ')}") from None
        field = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"setting {field}: {first['msg']} (got {first.get('input')!r})") from None


def cli_actor() -> str:
    """Who an admin command's audit record names: ``cli:<the user running it>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: not with ``--quiet``, and only on a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def dataset_report(dataset: Dataset, source: str) -> dict[str, Any]:
    """The ``dataset`` entry of a command's JSON report."""
    return {
        "name": dataset.name,
        "source": source,
        "users": dataset.interactions.n_users,
        "items": dataset.interactions.n_items,
        "events": len(dataset.interactions),
        "timed": dataset.interactions.timed,
    }
