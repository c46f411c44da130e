"""Off-policy evaluation: what a policy would have earned on the lists another policy served.

Each logged list (an :class:`~liverec.events.impressions.Impression` and the rewards joined to it) holds what the
logging policy chose from — the ranked candidates and their scores (``candidates``, ``candidate_scores``), the
number of eligible ids where it had them (``n_eligible``) — so the *target* policy's distribution over lists on
the same candidates can be recomputed exactly (:class:`Distribution`, one per policy name, in :data:`TARGETS`).
With, for list i and slot j, the logged item a_ij, its reward r_ij, and

* item level (independent-position): w_ij = π_t(a_ij at j) / π_0(a_ij at j), the marginal slot propensities;
* list level (standard slate): W_i = π_t(s_i) / π_0(s_i), the probabilities of the whole ordered list;
* a reward model q̂(x, j): the served model's score of x calibrated to the reward at slot j (:class:`RewardModel`),
  and D_i = Σ_j Σ_x π_t(x at j) q̂(x, j) its expectation under the target;

the value of the target (expected reward of a list: the sum over its slots) is estimated by

===============  ===========================================  ============================================
estimator        item level                                   list level
===============  ===========================================  ============================================
``ips``          mean_i Σ_j w_ij r_ij                         mean_i W_i R_i  (R_i = Σ_j r_ij)
``snips``        Σ_j (Σ_i w_ij r_ij / Σ_i w_ij)               Σ_i W_i R_i / Σ_i W_i
``dm``           mean_i D_i                                   mean_i D_i
``dr``           mean_i [D_i + Σ_j w_ij (r_ij − q̂(a_ij, j))]  mean_i [D_i + W_i (R_i − Σ_j q̂(a_ij, j))]
===============  ===========================================  ============================================

Intervals. *Item level* and ``dm``: normal approximation, estimate ± z · SE, with SE the sample standard deviation
of the per-list terms over √n (lists are the independent units; slots of one list are not), and for ``snips`` the
delta method (the per-list influence Σ_j w_ij (r_ij − V̂_j) / mean_i w_ij). The ``dm`` interval reflects only the
spread over lists, not the reward model's error (it is fitted on the same log): DM is biased whenever the
calibration is wrong. *List level* ``ips`` / ``snips`` / ``dr``: the slate weights W_i are heavy-tailed as soon as
the target is far from the logging policy (a greedy target under a softmax over 50 candidates is drawn in a
handful of 3,000 lists), and a normal interval then collapses around an estimate near 0. These three use the
Cressie–Read empirical-likelihood interval (power −2; Karampatziakis, Mineiro & Ramdas, 2020, as implemented by
``vw-estimators``) for E_π0[W R], which uses what the normal one ignores — E_π0[W] = 1 and the range of the list
reward, [min(0, smallest), largest observed] — so where the logged weights miss mass (mean W < 1) the interval
widens over what that missing mass could hold instead of narrowing: it is an honest "the log cannot tell". ``ips``
and ``snips`` share it (both estimate the same value); ``dr``'s is mean_i D_i's normal interval at level α/2 plus
the empirical-likelihood interval of E_π0[W (R − R̂)] at α/2 (residuals bounded by the reward's range less the
reward model's; a union bound), cut to the reward's range. Each report also gives the effective number of lists,
(Σw)² / Σw² (Kish).

Assumptions: the logged propensities are the ones the lists were drawn with; the target sees the same candidates
(with more ``candidates`` than were logged it is evaluated on the logged ones, and counted); item level assumes
a slot's reward depends only on the item in it and the slot (a position-based click model), list level assumes
nothing about the reward. Where the target puts mass on what the logging policy could never show (π_0 = 0), no
estimator sees it: the *support deficit* is reported (item level: the target's share of slot mass outside the
logging support; list level: the target's probability of a list the logging policy could not draw, exact where
one of the two is deterministic or the item-level deficit is 0, else bounded), never silently ignored.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from estimators.bandits import cressieread
from scipy.stats import norm

from liverec.errors import UsageError
from liverec.events.impressions import Impression, Reward, list_reward
from liverec.policies import POLICIES, EpsilonGreedy, ExploreConfig, Softmax

__all__ = [
    "ESTIMATORS",
    "TARGETS",
    "Distribution",
    "Estimate",
    "LoggedList",
    "OPEReport",
    "RewardModel",
    "TargetPolicy",
    "evaluate",
    "item_level",
    "likelihood_interval",
    "list_level",
    "logged_lists",
    "parse_policy",
]

#: The estimators, in the order they are reported.
ESTIMATORS = ("ips", "snips", "dm", "dr")


@dataclass(frozen=True)
class Estimate:
    """An estimated value with its standard error and a two-sided interval at ``confidence``."""

    value: float
    standard_error: float
    low: float
    high: float
    confidence: float
    interval: str = "normal"  # how low/high were found: "normal" or "empirical-likelihood"

    @classmethod
    def normal(cls, value: float, influence: np.ndarray, confidence: float) -> Estimate:
        """``value`` ± z · sd(influence) / √n: ``influence`` [n] the per-list terms (or their linearisation)."""
        se = _standard_error(influence)
        z = float(norm.ppf(0.5 + confidence / 2))
        return cls(float(value), se, float(value - z * se), float(value + z * se), confidence)

    @classmethod
    def likelihood(
        cls, value: float, influence: np.ndarray, interval: tuple[float, float], confidence: float
    ) -> Estimate:
        """``value`` (its standard error from ``influence``) with an empirical-likelihood ``interval``."""
        low, high = interval
        return cls(float(value), _standard_error(influence), low, high, confidence, "empirical-likelihood")

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "standard_error": self.standard_error,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "interval": self.interval,
        }


def _standard_error(influence: np.ndarray) -> float:
    n = len(influence)
    return float(np.std(influence, ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def likelihood_interval(
    weights: np.ndarray, rewards: np.ndarray, bounds: tuple[float, float], confidence: float
) -> tuple[float, float]:
    """The Cressie–Read (power −2) empirical-likelihood interval for E_π0[w r] at ``confidence``, from the
    importance weights ``weights`` [n] (≥ 0, E_π0[w] = 1) and ``rewards`` [n] within ``bounds`` (rmin, rmax), no
    bound on the weights (Karampatziakis, Mineiro & Ramdas, 2020; ``vw-estimators``' ``cressieread.Interval``)."""
    low, high = bounds
    if not low < high:  # every reward the same: so is any value
        return low, low
    interval = cressieread.Interval(rmin=low, rmax=high)
    for w, r in zip(weights.tolist(), rewards.tolist(), strict=True):
        interval.add_example(p_log=1.0, r=r, p_pred=w)
    found = interval.get(alpha=1.0 - confidence)
    return float(found[0]), float(found[1])


# -- estimators on arrays ------------------------------------------------------------------------------------------
def item_level(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    reward_hat: np.ndarray,
    direct: np.ndarray,
    mask: np.ndarray | None = None,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """Independent-position estimates of the expected reward of a list (the sum over its slots).

    All [n_lists, n_slots]: ``rewards`` r_ij, ``target`` π_t(a_ij at j), ``logging`` π_0(a_ij at j) (> 0),
    ``reward_hat`` q̂(a_ij, j), ``direct`` Σ_x π_t(x at j) q̂(x, j); ``mask`` the slots a list has (default all).
    """
    mask = np.ones(rewards.shape, dtype=bool) if mask is None else mask
    w = np.where(mask, target / np.where(mask, logging, 1.0), 0.0)
    r = np.where(mask, rewards, 0.0)
    q = np.where(mask, reward_hat, 0.0)
    d = np.where(mask, direct, 0.0)
    ips_terms = (w * r).sum(axis=1)
    dm_terms = d.sum(axis=1)
    dr_terms = dm_terms + (w * (r - q)).sum(axis=1)
    # self-normalised per slot: Σ_i w_ij r_ij / Σ_i w_ij (a slot no list reached, or no weight, adds nothing)
    totals = w.sum(axis=0)
    safe = np.where(totals > 0, totals, 1.0)
    per_slot = np.where(totals > 0, (w * r).sum(axis=0) / safe, 0.0)
    share = w / (safe / len(w))  # w_ij / mean_i w_ij
    snips_influence = (share * (r - per_slot[None, :])).sum(axis=1)
    return {
        "ips": Estimate.normal(ips_terms.mean(), ips_terms, confidence),
        "snips": Estimate.normal(per_slot.sum(), snips_influence, confidence),
        "dm": Estimate.normal(dm_terms.mean(), dm_terms, confidence),
        "dr": Estimate.normal(dr_terms.mean(), dr_terms, confidence),
    }


def list_level(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    reward_hat: np.ndarray,
    direct: np.ndarray,
    mask: np.ndarray | None = None,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """Standard slate estimates of the expected reward of a list.

    ``target`` [n] π_t(s_i), ``logging`` [n] π_0(s_i) (> 0); ``rewards``, ``reward_hat``, ``direct``, ``mask``
    [n, n_slots] as in :func:`item_level` (R_i is the sum of a list's slot rewards).
    """
    mask = np.ones(rewards.shape, dtype=bool) if mask is None else mask
    w = target / logging
    total = np.where(mask, rewards, 0.0).sum(axis=1)
    total_hat = np.where(mask, reward_hat, 0.0).sum(axis=1)
    dm_terms = np.where(mask, direct, 0.0).sum(axis=1)
    ips_terms = w * total
    dr_terms = dm_terms + w * (total - total_hat)
    mean_w = w.mean()
    snips = float((w * total).sum() / w.sum()) if w.sum() > 0 else 0.0
    snips_influence = w * (total - snips) / (mean_w if mean_w > 0 else 1.0)
    # the list reward's range: [min(0, smallest), largest] observed
    r_low, r_high = min(0.0, float(total.min(initial=0.0))), float(total.max(initial=0.0))
    value_interval = likelihood_interval(w, total, (r_low, r_high), confidence)
    # DR = mean D + mean W (R - R̂): D's normal interval and the correction's likelihood interval, each at α/2
    half = 1.0 - (1.0 - confidence) / 2
    dm_half = Estimate.normal(dm_terms.mean(), dm_terms, half)
    residual = (r_low - float(total_hat.max(initial=0.0)), r_high - float(total_hat.min(initial=0.0)))
    c_low, c_high = likelihood_interval(w, total - total_hat, residual, half)
    return {
        "ips": Estimate.likelihood(ips_terms.mean(), ips_terms, value_interval, confidence),
        "snips": Estimate.likelihood(snips, snips_influence, value_interval, confidence),
        "dm": Estimate.normal(dm_terms.mean(), dm_terms, confidence),
        "dr": Estimate.likelihood(  # the value is a list reward: within the reward's range
            dr_terms.mean(),
            dr_terms,
            (max(r_low, dm_half.low + c_low), min(r_high, dm_half.high + c_high)),
            confidence,
        ),
    }


# -- the logged lists ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedList:
    """One logged list as arrays over its *universe*: the candidates (0..C-1, best first) and then the shown
    items that were not among them (C..U-1; ε-greedy's replacements, cold items from outside the top N).

    ``shown`` [k] universe indices by slot; ``rewards`` [k] in-window reward per slot; ``slot_propensities`` [k]
    the logged P(slot j shows it) (NaN where the policy did not log it); ``candidates_logged``: False for an
    impression without candidates (the shown items then stand in for them).
    """

    recommendation_id: str
    policy: str
    settings: Mapping[str, Any]
    candidate_scores: np.ndarray
    n_universe: int
    shown: np.ndarray
    shown_scores: np.ndarray
    rewards: np.ndarray
    slot_propensities: np.ndarray
    slate_propensity: float
    n_eligible: int | None = None
    candidates_logged: bool = True

    @property
    def k(self) -> int:
        return len(self.shown)

    @property
    def n_candidates(self) -> int:
        return len(self.candidate_scores)

    @property
    def universe_scores(self) -> np.ndarray:
        """[U] the model's score of every universe item (NaN where none)."""
        extra = np.full(self.n_universe - self.n_candidates, np.nan)
        for slot, index in enumerate(self.shown.tolist()):
            if index >= self.n_candidates:
                extra[index - self.n_candidates] = self.shown_scores[slot]
        return np.concatenate([self.candidate_scores, extra])

    @classmethod
    def from_impression(cls, impression: Impression, rewards: Sequence[Reward]) -> LoggedList:
        """The list of ``impression`` with its in-window rewards (``rewards``: those joined to it)."""
        logged = bool(impression.candidates)
        names = list(impression.candidates) if logged else list(impression.items)
        raw_scores = impression.candidate_scores if logged else impression.scores
        index = {name: n for n, name in enumerate(names)}
        shown = []
        for item in impression.items:
            if item not in index:
                index[item] = len(index)
            shown.append(index[item])
        per_slot = list_reward(impression, rewards)["position_rewards"]
        slot = [math.nan if p is None else float(p) for p in impression.slot_propensities]
        if len(slot) != len(impression.items):
            slot = [math.nan] * len(impression.items)
        return cls(
            recommendation_id=impression.recommendation_id,
            policy=impression.policy,
            settings=dict(impression.policy_settings),
            candidate_scores=_floats(raw_scores),
            n_universe=len(index),
            shown=np.asarray(shown, dtype=np.int64),
            shown_scores=_floats(impression.scores),
            rewards=np.asarray(per_slot, dtype=np.float64),
            slot_propensities=np.asarray(slot, dtype=np.float64),
            slate_propensity=impression.slate_propensity,
            n_eligible=impression.n_eligible,
            candidates_logged=logged,
        )


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def logged_lists(
    impressions: Iterable[Impression], rewards: Mapping[str, Sequence[Reward]]
) -> tuple[list[LoggedList], dict[str, int]]:
    """The served lists among ``impressions`` with their rewards (``rewards``: by recommendation id), and what was
    left out (``shadow``: apprentice-mode lists, never shown)."""
    lists, skipped = [], {"shadow": 0}
    for impression in impressions:
        if impression.shadow:
            skipped["shadow"] += 1
            continue
        lists.append(LoggedList.from_impression(impression, rewards.get(impression.recommendation_id, ())))
    return lists, skipped


# -- the policies' distributions over a logged list --------------------------------------------------------------
@dataclass(frozen=True)
class TargetPolicy:
    """A policy to evaluate: its registered name and hyperparameters (the ``explore_*`` settings' names)."""

    name: str
    config: ExploreConfig = field(default_factory=ExploreConfig)

    @property
    def label(self) -> str:
        settings = POLICIES[self.name](self.config).settings()
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in settings.items()) if settings else "")


def parse_policy(text: str) -> TargetPolicy:
    """``"softmax:temperature=0.5,candidates=20"`` -> the policy (settings default to :class:`ExploreConfig`'s)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name == "cold":
        raise UsageError("--policy: cold cannot be evaluated off-policy (the items' ages are not logged)")
    if name not in TARGETS:
        raise UsageError(f"--policy: expected one of {', '.join(sorted(TARGETS))}[:NAME=VALUE,...], got {text!r}")
    known = {f.name: f.type for f in fields(ExploreConfig)}
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, _, raw = part.partition("=")
        key = key.strip()
        if key not in known:
            raise UsageError(f"--policy: unknown setting {key!r} in {text!r}; expected one of {', '.join(known)}")
        try:
            values[key] = int(raw) if key == "candidates" else float(raw)
        except ValueError:
            raise UsageError(f"--policy: {key} expects a number, got {raw!r}") from None
    try:
        return TargetPolicy(name, ExploreConfig(**values))
    except ValueError as error:
        raise UsageError(f"--policy: {error}") from None


def _config(policy: str, settings: Mapping[str, Any]) -> ExploreConfig:
    names = {f.name for f in fields(ExploreConfig)}
    return ExploreConfig(**{k: v for k, v in settings.items() if k in names})


class Distribution(ABC):
    """A policy's distribution over the lists of ``k`` it could draw on a logged list's candidates.

    :meth:`marginals` [U, k] P(slot j shows universe item x) and [k] the mass on eligible ids outside the universe;
    :meth:`support` the same as booleans (> 0), cheap; :meth:`slate_probability` P(one ordered list).
    """

    name: ClassVar[str]
    deterministic: ClassVar[bool] = False

    def __init__(self, config: ExploreConfig, logged: LoggedList) -> None:
        self.config = config
        self.logged = logged
        self.k = logged.k

    @abstractmethod
    def marginals(self) -> tuple[np.ndarray, np.ndarray]: ...

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        matrix, outside = self.marginals()
        return matrix > 0, outside > 0

    @abstractmethod
    def slate_probability(self, slate: np.ndarray) -> float: ...


#: Policy name -> its distribution on a logged list (cold: only as the logging policy, see :class:`Logged`).
TARGETS: dict[str, type[Distribution]] = {}


def _target(cls: type[Distribution]) -> type[Distribution]:
    TARGETS[cls.name] = cls
    return cls


@_target
class GreedyDistribution(Distribution):
    """The first k candidates, with probability 1."""

    name = "greedy"
    deterministic = True

    def _top(self) -> int:
        return min(self.k, self.logged.n_candidates)

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((self.logged.n_universe, self.k))
        top = self._top()
        matrix[np.arange(top), np.arange(top)] = 1.0
        return matrix, np.zeros(self.k)

    def slate_probability(self, slate: np.ndarray) -> float:
        return float(np.array_equal(slate, np.arange(self._top())))


@_target
class SoftmaxDistribution(Distribution):
    """Plackett–Luce over the first ``candidates`` candidates (:meth:`Softmax.marginals`)."""

    name = "softmax"

    def __init__(self, config: ExploreConfig, logged: LoggedList) -> None:
        super().__init__(config, logged)
        self.policy = Softmax(config)
        n = min(config.candidates, logged.n_candidates)
        self.weights = self.policy.weights(logged.candidate_scores[:n]) if n else np.zeros(0)

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((self.logged.n_universe, self.k))
        found = self.policy.marginals(self.logged.candidate_scores, self.k)
        matrix[: found.shape[0], : found.shape[1]] = found
        return matrix, np.zeros(self.k)

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((self.logged.n_universe, self.k), dtype=bool)
        positive = self.weights > 0
        matrix[: len(positive), : min(self.k, int(positive.sum()))] = positive[:, None]
        return matrix, np.zeros(self.k, dtype=bool)

    def slate_probability(self, slate: np.ndarray) -> float:
        n = len(self.weights)
        if len(slate) != min(self.k, n) or (slate >= n).any() or len(set(slate.tolist())) < len(slate):
            return 0.0
        factors = Softmax.cascade(self.weights, slate)
        return float(np.prod(np.nan_to_num(factors, nan=0.0)))


@_target
class EpsilonDistribution(Distribution):
    """ε-greedy slot replacement: the greedy list is the first k candidates, the pool every other eligible id (m of
    them: ``n_eligible`` − k); the pool items in the universe are the other candidates and the shown extras."""

    name = "epsilon"

    def __init__(self, config: ExploreConfig, logged: LoggedList) -> None:
        super().__init__(config, logged)
        if logged.n_eligible is None:
            raise UsageError(
                "epsilon: evaluating ε-greedy needs the number of eligible items, which this log's lists do not "
                "hold (it is logged only where the serving policy was epsilon or cold)"
            )
        self.top = min(self.k, logged.n_candidates)
        self.pool = max(logged.n_eligible - self.top, 0)
        self.replaced = EpsilonGreedy(config).replacement_probabilities(self.top, self.pool)

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((self.logged.n_universe, self.k))
        matrix[np.arange(self.top), np.arange(self.top)] = 1.0 - self.replaced
        in_universe = self.logged.n_universe - self.top
        if self.pool:
            share = np.zeros(self.k)
            share[: self.top] = self.replaced / self.pool
            matrix[self.top :] = share[None, :]
            outside = share * max(self.pool - in_universe, 0)
        else:
            outside = np.zeros(self.k)
        return matrix, outside

    def slate_probability(self, slate: np.ndarray) -> float:
        if len(slate) != self.top or len(set(slate.tolist())) < len(slate):
            return 0.0
        eps, drawn, probability = self.config.epsilon, 0, 1.0
        for j, item in enumerate(slate.tolist()):
            if item == j:
                probability *= 1.0 - eps if drawn < self.pool else 1.0
            elif item >= self.top and drawn < self.pool:
                probability *= eps / (self.pool - drawn)
                drawn += 1
            else:
                return 0.0
        return probability


class LoggedDeterministic(Distribution):
    """A deterministic logging policy that OPE cannot recompute (``cold``: the ages are not logged): its only
    list is the one it showed."""

    name = "logged"
    deterministic = True

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((self.logged.n_universe, self.k))
        matrix[self.logged.shown, np.arange(self.k)] = 1.0
        return matrix, np.zeros(self.k)

    def slate_probability(self, slate: np.ndarray) -> float:
        return float(np.array_equal(slate, self.logged.shown))


def logging_distribution(logged: LoggedList) -> Distribution:
    """The distribution the list was drawn from (its policy and settings, as logged)."""
    cls = TARGETS.get(logged.policy)
    if cls is None or (cls is EpsilonDistribution and logged.n_eligible is None):
        return LoggedDeterministic(ExploreConfig(), logged)
    return cls(_config(logged.policy, logged.settings), logged)


# -- the reward model ------------------------------------------------------------------------------------------------
class RewardModel:
    """q̂(x, j) = r_max · σ(β₀ + β₁·score + β₂·[no score] + γ_j): the served model's score calibrated to the reward
    at each slot (Platt scaling with a per-slot intercept), fitted on the logged slots by Newton's method on the
    cross-entropy with the rewards scaled to [0, 1] by the largest slot reward (r_max), with a 1e-6 ridge."""

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.coef = np.zeros(3 + max(n_slots - 1, 0))
        self.scale = 0.0

    def _features(self, scores: np.ndarray, slots: np.ndarray) -> np.ndarray:
        missing = ~np.isfinite(scores)
        x = np.zeros((len(scores), len(self.coef)))
        x[:, 0] = 1.0
        x[:, 1] = np.where(missing, 0.0, scores)
        x[:, 2] = missing
        later = slots > 0
        x[np.flatnonzero(later), 2 + slots[later]] = 1.0
        return x

    def fit(self, scores: np.ndarray, slots: np.ndarray, rewards: np.ndarray) -> RewardModel:
        """``scores``, ``slots``, ``rewards`` [n_observations]: the logged slots."""
        self.scale = float(rewards.max()) if len(rewards) else 0.0
        if self.scale <= 0:
            return self
        x, y = self._features(scores, slots), rewards / self.scale
        ridge = 1e-6 * len(y) * np.eye(x.shape[1])
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-(x @ self.coef)))
            gradient = x.T @ (p - y) + ridge @ self.coef
            hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge
            step = np.linalg.solve(hessian, gradient)
            self.coef -= step
            if np.abs(step).max() < 1e-10:
                break
        return self

    def predict(self, scores: np.ndarray, slots: np.ndarray) -> np.ndarray:
        if self.scale <= 0:
            return np.zeros(len(scores))
        return self.scale / (1.0 + np.exp(-(self._features(scores, slots) @ self.coef)))

    def table(self, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[U, k] q̂ of each universe item (``scores`` [U]) at each slot, and [k] q̂ of an item with no score."""
        u = len(scores)
        slots = np.tile(np.arange(k), u)
        grid = self.predict(np.repeat(scores, k), slots).reshape(u, k)
        return grid, self.predict(np.full(k, np.nan), np.arange(k))


# -- evaluation --------------------------------------------------------------------------------------------------------
@dataclass
class OPEReport:
    """The estimates of one target policy on a log."""

    policy: str
    lists: int
    slots: int
    observed_reward: float  # the logging policy's mean list reward
    item: dict[str, Estimate]
    list: dict[str, Estimate]
    support_deficit: dict[str, Any]
    effective_lists: dict[str, float]  # (Σw)² / Σw²: how many lists the weighted estimates rest on
    notes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "lists": self.lists,
            "slots": self.slots,
            "observed_reward": self.observed_reward,
            "item_level": {name: e.to_json() for name, e in self.item.items()},
            "list_level": {name: e.to_json() for name, e in self.list.items()},
            "support_deficit": self.support_deficit,
            "effective_lists": self.effective_lists,
            "notes": self.notes,
        }


def evaluate(
    lists: Sequence[LoggedList],
    targets: Sequence[TargetPolicy],
    *,
    confidence: float = 0.95,
    reward_model: RewardModel | None = None,
) -> list[OPEReport]:
    """Estimate each target policy's expected list reward on the logged ``lists`` (see the module docstring)."""
    if not lists:
        raise UsageError("no served lists to evaluate (the log holds no impressions)")
    if not 0 < confidence < 1:
        raise UsageError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    n, width = len(lists), max(item.k for item in lists)
    mask = np.zeros((n, width), dtype=bool)
    rewards = np.zeros((n, width))
    for i, item in enumerate(lists):
        mask[i, : item.k] = True
        rewards[i, : item.k] = item.rewards
    if reward_model is None:
        reward_model = RewardModel(width).fit(
            np.concatenate([item.shown_scores for item in lists]),
            np.concatenate([np.arange(item.k) for item in lists]),
            np.concatenate([item.rewards for item in lists]),
        )
    logging = [logging_distribution(item) for item in lists]
    cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    logging_slot = np.ones((n, width))
    logging_slate = np.array([item.slate_propensity for item in lists])
    for i, (item, dist) in enumerate(zip(lists, logging, strict=True)):
        known = item.slot_propensities
        if np.isnan(known).any():
            matrix, _ = _marginals(dist, cache)
            known = np.where(np.isnan(known), matrix[item.shown, np.arange(item.k)], known)
        logging_slot[i, : item.k] = known
    tables = [reward_model.table(item.universe_scores, item.k) for item in lists]
    reward_hat = np.zeros((n, width))
    for i, (item, (grid, _)) in enumerate(zip(lists, tables, strict=True)):
        reward_hat[i, : item.k] = grid[item.shown, np.arange(item.k)]
    reports = []
    for target in targets:
        target_slot, target_slate = np.zeros((n, width)), np.zeros(n)
        direct = np.zeros((n, width))
        item_deficit, list_low, list_high = np.zeros(n), np.zeros(n), np.zeros(n)
        notes = {"candidates_missing": 0, "candidates_short": 0}
        for i, (item, dist0, (grid, outside_hat)) in enumerate(zip(lists, logging, tables, strict=True)):
            notes["candidates_missing"] += not item.candidates_logged
            notes["candidates_short"] += target.name == "softmax" and target.config.candidates > item.n_candidates
            dist = TARGETS[target.name](target.config, item)
            matrix, outside = _marginals(dist, cache)
            target_slot[i, : item.k] = matrix[item.shown, np.arange(item.k)]
            target_slate[i] = dist.slate_probability(item.shown)
            direct[i, : item.k] = (matrix * grid).sum(axis=0) + outside * outside_hat
            supported, supported_outside = dist0.support()
            per_slot = (matrix * ~supported).sum(axis=0) + outside * ~supported_outside
            item_deficit[i] = per_slot.sum() / item.k
            list_low[i], list_high[i] = _list_deficit(dist, dist0, item, per_slot)
        reports.append(
            OPEReport(
                policy=target.label,
                lists=n,
                slots=int(mask.sum()),
                observed_reward=float(rewards.sum(axis=1).mean()),
                item=item_level(rewards, target_slot, logging_slot, reward_hat, direct, mask, confidence),
                list=list_level(rewards, target_slate, logging_slate, reward_hat, direct, mask, confidence),
                support_deficit={
                    "item_level": float(item_deficit.mean()),
                    "list_level": {"low": float(list_low.mean()), "high": float(list_high.mean())},
                    "lists_with_deficit": int((item_deficit > 1e-12).sum()),
                },
                effective_lists={
                    "item_level": _effective(np.where(mask, target_slot / logging_slot, 0.0)),
                    "list_level": _effective((target_slate / logging_slate)[:, None]),
                },
                notes={key: int(value) for key, value in notes.items()},
            )
        )
    return reports


def _list_deficit(
    target: Distribution, logging: Distribution, logged: LoggedList, per_slot: np.ndarray
) -> tuple[float, float]:
    """P_t(a list the logging policy cannot draw): exact when either policy is deterministic or no slot has a
    deficit (the logging supports are products over slots of distinct items), else [max_j, Σ_j] of the slot
    deficits."""
    if logging.deterministic:  # its only list is the one it showed
        exact = 1.0 - target.slate_probability(logged.shown)
        return exact, exact
    if target.deterministic:  # greedy: the first k candidates
        exact = float(logging.slate_probability(np.arange(min(logged.k, logged.n_candidates))) == 0)
        return exact, exact
    if per_slot.max(initial=0.0) <= 1e-12:
        return 0.0, 0.0
    return float(per_slot.max()), float(min(1.0, per_slot.sum()))


def _effective(weights: np.ndarray) -> float:
    """Kish's effective sample size (Σw)² / Σw² of the weights [n, slots], the smallest over the slots."""
    squares = (weights**2).sum(axis=0)
    sizes = np.where(squares > 0, weights.sum(axis=0) ** 2 / np.where(squares > 0, squares, 1.0), 0.0)
    return float(sizes.min()) if sizes.size else 0.0


def _marginals(dist: Distribution, cache: dict[Any, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``dist.marginals()``, computed once per policy and candidate list (a softmax's costs ~1 ms)."""
    if isinstance(dist, LoggedDeterministic):
        return dist.marginals()
    logged = dist.logged
    key = (dist.name, dist.config, logged.candidate_scores.tobytes(), logged.n_universe, logged.k, logged.n_eligible)
    found = cache.get(key)
    if found is None:
        found = cache[key] = dist.marginals()
    return found
