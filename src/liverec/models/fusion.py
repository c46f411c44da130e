"""Multi-model fusion: a weighted blend of several models' standardised scores, weights learned on validation.

Each component scores the catalogue; every row of scores is standardised (z-score over the row, so
a popularity count and a dot product share a scale) and the blend is ``sum_c w_c * z_c``. The weights
maximise validation NDCG@10 by coordinate ascent over a grid (the first component's weight is fixed
at 1; a weight of 0 drops a component). The metric is the one reported, so the search optimises what
is measured; the test split is never seen.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import RankingSplit, hold_out_last, with_held_out
from liverec.evaluation.metrics import single_target_ndcg
from liverec.models.base import MODEL_REGISTRY, ModelConfig, Recommender, register

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclasses.dataclass(frozen=True)
class FusionConfig(ModelConfig):
    """``components``: comma-separated model names (the first is the anchor, weight 1);
    ``rounds``: coordinate-ascent passes over the other components' weights; ``refit``: once the
    weights are learned, refit every component on the training and validation events (each
    component's own choices, such as SASRec's epoch count, kept)."""

    components: str = "sasrec,itemknn,pop-decay"
    rounds: int = 2
    refit: bool = True

    def names(self) -> list[str]:
        names = [name.strip() for name in self.components.split(",") if name.strip()]
        unknown = [name for name in names if name not in MODEL_REGISTRY or name == "fusion"]
        if not names or unknown:
            raise ValueError(f"components: expected registered model names, got {self.components!r}")
        return names


def standardise(scores: np.ndarray) -> np.ndarray:
    """Row-wise z-scores of ``[batch, n_items]`` (a constant row becomes zeros)."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return ((scores - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


@register
class Fusion(Recommender):
    """``fusion``: blend of component models (see the module docstring)."""

    name = "fusion"
    Config = FusionConfig
    config: FusionConfig
    uses_validation = True

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        component_classes = [MODEL_REGISTRY[name] for name in self.config.names()]  # validates the names
        # what the blend can do follows from what its components can
        self.supports_partial_fit = all(cls.supports_partial_fit for cls in component_classes)
        self.learns_in_context = any(cls.learns_in_context for cls in component_classes)
        self.takes_item_features = any(cls.takes_item_features for cls in component_classes)
        self.keeps_user_parameters = any(cls.keeps_user_parameters for cls in component_classes)
        self.components: list[Recommender] = []
        self.weights = np.zeros(0, dtype=np.float64)
        self.validation_ndcg: dict[str, float] = {}
        self._item_features: tuple[Any, Sequence[str] | None] | None = None

    def set_item_features(self, features: Any, names: Sequence[str] | None = None) -> Self:
        """Item side features for the components that take them (SASRec's ``set_item_features``),
        passed on at the next ``fit`` and to the components already fitted."""
        self._item_features = None if features is None else (features, names)
        for component in self.components:
            if component.takes_item_features:
                component.set_item_features(features, names)
        return self

    def has_item_features(self) -> bool:
        return any(component.has_item_features() for component in self.components)

    def _fit(self, interactions: Interactions, validation: RankingSplit | None = None) -> None:
        if validation is None:
            everything: Interactions | None = interactions
            train, (history, targets) = hold_out_last(interactions)
            validation = RankingSplit(train, history, targets, "fusion-holdout", {})
            interactions = train
        else:
            everything = with_held_out(interactions, validation)
        self.components = []
        for name in self.config.names():
            cls = MODEL_REGISTRY[name]
            # components are judged as fitted on training events only: a refit one would have learned
            # the validation targets it is weighed on; they refit below, after the weights
            config = cls.Config(seed=self.config.seed)
            if "refit" in {f.name for f in dataclasses.fields(config)}:
                config = dataclasses.replace(config, refit=False)  # type: ignore[call-arg]
            model = cls(config)
            if model.takes_item_features and self._item_features is not None:
                model.set_item_features(*self._item_features)
            model.fit(interactions, validation=validation)
            self.components.append(model)
        standardised = [standardise(c.score(validation.history)) for c in self.components]
        seen = validation.history.to_csr(self.n_items).tocoo()
        for z in standardised:
            z[seen.row, seen.col] = -np.inf
        target = validation.targets.items[validation.targets.indptr[:-1]]
        weights = np.zeros(len(self.components))
        weights[0] = 1.0
        best = single_target_ndcg(_blend(standardised, weights), target)
        self.validation_ndcg = {
            name: single_target_ndcg(z, target) for name, z in zip(self.config.names(), standardised, strict=True)
        }
        for _ in range(self.config.rounds):
            for c in range(1, len(self.components)):
                for w in WEIGHT_GRID:
                    trial = weights.copy()
                    trial[c] = w
                    ndcg = single_target_ndcg(_blend(standardised, trial), target)
                    if ndcg > best + 1e-9:
                        best, weights = ndcg, trial
        self.weights = weights
        self.validation_ndcg["fusion"] = best
        if self.config.refit and everything is not None:
            self.refit_on(everything)

    def refit_on(self, interactions: Interactions) -> Self:
        """Refit every component that has weight on ``interactions``; the weights stay."""
        for component, weight in zip(self.components, self.weights, strict=True):
            if weight:  # a dropped component is never scored
                component.refit_on(interactions)
        self.n_users, self.n_items = interactions.n_users, interactions.n_items
        return self

    def _partial_fit(self, interactions: Interactions) -> None:
        for component in self.components:
            component.partial_fit(interactions)

    def _partial_fit_in_context(self, interactions: Interactions, learn: np.ndarray) -> None:
        for component in self.components:  # each reads the context or drops it (Recommender.partial_fit)
            component.partial_fit(interactions, learn)

    def _forget_users(self, keep: np.ndarray) -> int:
        removed = 0
        for component in self.components:  # every component shrinks its user id space; some delete rows
            forget = np.flatnonzero(~keep[: component.n_users])
            removed += component.forget_users(forget)
        return removed

    def _score(self, histories: Histories) -> np.ndarray:
        total = np.zeros((len(histories), self.n_items), dtype=np.float32)
        for component, weight in zip(self.components, self.weights, strict=True):
            if weight:
                scores = component.score(histories)
                total[:, : scores.shape[1]] += weight * standardise(scores)
        return total

    def _get_state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {"weights": self.weights}
        meta = []
        for index, component in enumerate(self.components):
            meta.append(
                {
                    "model": component.name,
                    "config": dataclasses.asdict(component.config),
                    "n_users": component.n_users,
                    "n_items": component.n_items,
                }
            )
            for key, value in component._get_state().items():
                state[f"c{index}.{key}"] = value
        state["components"] = np.array([json.dumps(meta)])
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"]
        self.components = []
        for index, meta in enumerate(json.loads(str(state["components"][0]))):
            cls = MODEL_REGISTRY[meta["model"]]
            component = cls(cls.Config(**meta["config"]))
            component.n_users, component.n_items = meta["n_users"], meta["n_items"]
            prefix = f"c{index}."
            component._set_state({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
            component._fitted = True
            self.components.append(component)


def _blend(standardised: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    total = np.zeros_like(standardised[0])
    for z, w in zip(standardised, weights, strict=True):
        if w:
            total += w * z
    return total
