"""``liverec models``: list the registered models and their default hyperparameters."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from liverec.models import MODEL_REGISTRY

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    models = subparsers.add_parser(
        "models",
        help="list models and their default hyperparameters",
        description="List every registered model with its default hyperparameters.",
    )
    models.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in sorted(MODEL_REGISTRY):
        cls = MODEL_REGISTRY[name]
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12}{doc}\n{'':<12}{defaults}")
    return 0
