"""Recommenders under one protocol (see :mod:`liverec.models.base`), registered by name."""

import dataclasses
from collections.abc import Sequence
from typing import Any

from liverec.errors import UsageError
from liverec.models import fusion, mf, neighbors, popularity, sasrec  # noqa: F401  (registration side effects)
from liverec.models.base import MODEL_REGISTRY, ModelConfig, Recommender, register

__all__ = [
    "MODEL_REGISTRY",
    "ModelConfig",
    "Recommender",
    "check_model_name",
    "create_model",
    "parse_params",
    "register",
]


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model by registry name, with hyperparameter overrides."""
    model_cls = MODEL_REGISTRY.get(name)
    if model_cls is None:
        raise ValueError(f"model: unknown name {name!r}; expected one of {', '.join(sorted(MODEL_REGISTRY))}")
    return model_cls(**params)


def check_model_name(name: str) -> str:
    """``name`` if a model is registered under it; else a :class:`UsageError` listing the names there are."""
    if name not in MODEL_REGISTRY:
        raise UsageError(f"--model: unknown model {name!r}; expected one of {', '.join(sorted(MODEL_REGISTRY))}")
    return name


def parse_params(model_name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``["n_factors=64", "learning_rate=0.01"]`` -> typed overrides for the model's Config (``--param``)."""
    fields = {f.name: f for f in dataclasses.fields(MODEL_REGISTRY[check_model_name(model_name)].Config)}
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"--param: expected NAME=VALUE, got {pair!r}")
        if key not in fields:
            raise UsageError(
                f"--param: model {model_name!r} has no parameter {key!r}; expected one of {', '.join(sorted(fields))}"
            )
        default = fields[key].default
        if "None" in str(fields[key].type) and raw.lower() == "none":  # an optional setting, unset
            params[key] = None
            continue
        if default is None:  # an optional setting ("int | None"): parse as the type it names
            annotation = str(fields[key].type)
            default = next((kind() for kind in (bool, int, float) if kind.__name__ in annotation), "")
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                params[key] = raw.lower() in ("true", "1")
            elif isinstance(default, int):
                params[key] = int(raw)
            elif isinstance(default, float):
                params[key] = float(raw)
            else:
                params[key] = raw
        except ValueError:
            raise UsageError(f"--param {key}: expected a {type(default).__name__}, got {raw!r}") from None
    return params
