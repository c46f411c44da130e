"""Recommenders under one protocol (see :mod:`liverec.models.base`), registered by name."""

from typing import Any

from liverec.models import fusion, mf, neighbors, popularity, sasrec  # noqa: F401  (registration side effects)
from liverec.models.base import MODEL_REGISTRY, ModelConfig, Recommender, register

__all__ = ["MODEL_REGISTRY", "ModelConfig", "Recommender", "create_model", "register"]


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model by registry name, with hyperparameter overrides."""
    model_cls = MODEL_REGISTRY.get(name)
    if model_cls is None:
        raise ValueError(f"model: unknown name {name!r}; expected one of {', '.join(sorted(MODEL_REGISTRY))}")
    return model_cls(**params)
