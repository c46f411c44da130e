"""Rating-prediction metrics for models that predict explicit values (such as ``mf-mse``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from liverec.data.interactions import Interactions


@runtime_checkable
class RatingPredictor(Protocol):
    """Anything with ``predict(user_ids [n], item_ids [n]) -> ratings [n]``."""

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray: ...


def rating_metrics(model: object, interactions_test: Interactions) -> dict[str, float]:
    """Root mean squared error and mean absolute error of ``model``'s predicted ratings.

    Every row of ``interactions_test`` is one (user, item, rating) triple, the rating in ``values``.
    Returns ``{"rmse": ..., "mae": ...}`` as Python floats.
    """
    if not isinstance(model, RatingPredictor):
        raise TypeError(
            f"model: expected a model with predict(user_ids, item_ids) (a rating model such as mf-mse), "
            f"got {type(model).__name__}"
        )
    if len(interactions_test) == 0:
        raise ValueError("interactions_test: expected at least one rating, got none")
    predictions = np.asarray(model.predict(interactions_test.user_ids, interactions_test.item_ids), dtype=np.float64)
    if predictions.shape != (len(interactions_test),):
        raise ValueError(
            f"model.predict: expected {len(interactions_test)} predictions, got an array of shape {predictions.shape}"
        )
    errors = predictions - interactions_test.values.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}
