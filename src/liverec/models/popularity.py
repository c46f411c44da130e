"""Popularity baselines: all-time, time-decayed and recent-window item popularity.

They ignore who is asking (apart from excluding what the user has seen), which makes them the
fallback for users with no history and the floor every personalised model must clear.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import ModelConfig, Recommender, register

SECONDS_PER_DAY = 86_400.0


class _PopularityBase(Recommender):
    """Shared scoring for popularity models: one score per item, the same for every user."""

    supports_partial_fit = True
    handles_new_items = True
    needs_user_history = False

    def __init__(self, config: ModelConfig | None = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.item_scores = np.zeros(0, dtype=np.float64)
        self.reference_time = -np.inf

    def _score(self, histories: Histories) -> np.ndarray:
        return np.broadcast_to(self.item_scores.astype(np.float32), (len(histories), self.n_items)).copy()

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores, "reference_time": np.array([self.reference_time])}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_scores = state["item_scores"].astype(np.float64)
        self.reference_time = float(state["reference_time"][0])

    def _grow(self, n_items: int) -> None:
        if n_items > len(self.item_scores):
            self.item_scores = np.concatenate([self.item_scores, np.zeros(n_items - len(self.item_scores))])


@register
class Popularity(_PopularityBase):
    """``pop``: number of events per item (weighted by nothing), all time."""

    name = "pop"

    def _fit(self, interactions: Interactions) -> None:
        self.item_scores = interactions.item_counts().astype(np.float64)
        self.reference_time = float(interactions.timestamps.max())

    def _partial_fit(self, interactions: Interactions) -> None:
        self._grow(interactions.n_items)
        self.item_scores += interactions.item_counts()
        self.reference_time = max(self.reference_time, float(interactions.timestamps.max()))


@dataclass(frozen=True)
class DecayConfig(ModelConfig):
    """``half_life_days``: an event's weight halves every this many days before the newest event."""

    half_life_days: float = 7.0


@register
class DecayedPopularity(_PopularityBase):
    """``pop-decay``: sum over an item's events of ``2 ** (-(t_ref - t) / half_life)``.

    Scores are kept relative to ``reference_time`` (the newest event seen); ``partial_fit`` rescales
    them when time moves forward, so streaming updates equal a refit on all events. Interactions with
    order but no time (``timed`` False) have no clock to decay over: every event weighs 1 (``pop``).
    """

    name = "pop-decay"
    Config = DecayConfig
    config: DecayConfig

    def _half_life_seconds(self) -> float:
        if self.config.half_life_days <= 0:
            raise ValueError(f"half_life_days: expected a positive number, got {self.config.half_life_days}")
        return self.config.half_life_days * SECONDS_PER_DAY

    def _decayed_counts(self, interactions: Interactions, reference_time: float) -> np.ndarray:
        if not interactions.timed:  # positions in a sequence are no clock
            return np.bincount(interactions.item_ids, minlength=interactions.n_items).astype(np.float64)
        age = reference_time - interactions.timestamps
        weights = np.exp2(-age / self._half_life_seconds())
        return np.bincount(interactions.item_ids, weights=weights, minlength=interactions.n_items)

    def _fit(self, interactions: Interactions) -> None:
        self.reference_time = float(interactions.timestamps.max())
        self.item_scores = self._decayed_counts(interactions, self.reference_time)

    def _partial_fit(self, interactions: Interactions) -> None:
        self._grow(interactions.n_items)
        if not interactions.timed:
            self.item_scores += self._decayed_counts(interactions, self.reference_time)
            return
        new_reference = max(self.reference_time, float(interactions.timestamps.max()))
        self.item_scores *= np.exp2(-(new_reference - self.reference_time) / self._half_life_seconds())
        self.reference_time = new_reference
        self.item_scores += self._decayed_counts(interactions, new_reference)


@dataclass(frozen=True)
class RecentConfig(ModelConfig):
    """``window_days``: only events within this many days of the newest event count."""

    window_days: float = 30.0


@register
class RecentPopularity(_PopularityBase):
    """``pop-recent``: number of events per item in the last ``window_days`` before the newest event.

    ``partial_fit`` keeps the events still inside the window, so it needs them: the model stores the
    (timestamp, item) pairs of the current window (bounded by the window, not by all history).
    Interactions with order but no time (``timed`` False) have no window in time: every event counts.
    """

    name = "pop-recent"
    Config = RecentConfig
    config: RecentConfig

    def __init__(self, config: ModelConfig | None = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.window_times = np.zeros(0, dtype=np.float64)
        self.window_items = np.zeros(0, dtype=np.int64)

    def _recount(self, times: np.ndarray, items: np.ndarray, n_items: int) -> None:
        if self.config.window_days <= 0:
            raise ValueError(f"window_days: expected a positive number, got {self.config.window_days}")
        self.reference_time = float(times.max())
        inside = times > self.reference_time - self.config.window_days * SECONDS_PER_DAY
        self.window_times, self.window_items = times[inside], items[inside]
        self.item_scores = np.bincount(self.window_items, minlength=n_items).astype(np.float64)

    def _fit(self, interactions: Interactions) -> None:
        times = interactions.timestamps if interactions.timed else np.zeros(len(interactions))
        self._recount(times, interactions.item_ids, interactions.n_items)

    def _partial_fit(self, interactions: Interactions) -> None:
        if not interactions.timed:
            interactions = dataclasses.replace(interactions, timestamps=np.full(len(interactions), self.reference_time))
        times = np.concatenate([self.window_times, interactions.timestamps])
        items = np.concatenate([self.window_items, interactions.item_ids])
        self._recount(times, items, interactions.n_items)

    def _get_state(self) -> dict[str, np.ndarray]:
        return dict(super()._get_state(), window_times=self.window_times, window_items=self.window_items)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        super()._set_state(state)
        self.window_times = state["window_times"]
        self.window_items = state["window_items"].astype(np.int64)
