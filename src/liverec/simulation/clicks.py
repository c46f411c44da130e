"""The simulated users' clicks, and what a list or a policy is truly worth under them.

A position-based click model: a user examines position ``j`` (1-based) of a list with probability
``examination(j) = j ** -examination_decay`` and clicks an examined item with probability ``relevance(user,
item, t)``, independently across positions. So a list's expected reward (clicks) is ``Σ_j examination(j) ·
relevance(item_j)``, and the best list (the *oracle*) puts the ``k`` most relevant eligible items in order of
relevance (by the rearrangement inequality, since examination decreases with position).

Relevance comes from the synthetic generator's truth (:class:`~liverec.data.synthetic.SyntheticTruth`): ``p``,
the probability that the user's next item is this one (taste clusters that drift, within-cluster popularity
waves, planted successors of the user's previous item, nothing before release), times a novelty factor
``1 + novelty_boost · 2^(-age / novelty_half_life_days)`` for items released mid-stream (new releases are
interesting for a while), saturated into a probability: ``relevance = 1 − exp(−relevance_scale · p · novelty)``.

:class:`Context` is one served list's situation — the candidates the policy was handed (in the engine's item
indices), the eligible and cold items, every item's relevance — and :func:`expected_reward` / :func:`true_value`
give the exact expected reward of any policy on contexts (Monte Carlo where a policy has no closed form). They
are the ground truth an off-policy estimate on simulator logs is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from liverec.data.synthetic import SECONDS_PER_DAY, SyntheticTruth
from liverec.policies import Candidates, EpsilonGreedy, Policy, Softmax

__all__ = ["ClickModel", "Context", "PolicyValue", "expected_reward", "list_reward", "oracle_reward", "true_value"]


@dataclass(frozen=True)
class ClickModel:
    """Position-biased clicks on relevance from the generator's truth (see the module docstring)."""

    examination_decay: float = 1.0  # P(examine position j) = j ** -decay (0: every position is examined)
    relevance_scale: float = 10.0  # relevance = 1 - exp(-scale * p * novelty)
    novelty_boost: float = 1.0  # a just-released item's p is multiplied by 1 + this ...
    novelty_half_life_days: float = 7.0  # ... and the extra halves every this many days

    def __post_init__(self) -> None:
        for name in ("examination_decay", "novelty_boost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        for name in ("relevance_scale", "novelty_half_life_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")

    def examination(self, k: int) -> np.ndarray:
        """P(position j is examined) for positions 1..k: ``[k]``, 1 at the top, non-increasing."""
        return np.arange(1, k + 1, dtype=np.float64) ** -self.examination_decay

    def novelty(self, truth: SyntheticTruth, times: np.ndarray) -> np.ndarray:
        """The novelty factor of every item at ``times`` ``[batch]`` -> ``[batch, n_items]`` (1 for items present
        from the start and before release)."""
        times = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        age_days = (times - truth.release_time) / SECONDS_PER_DAY
        fresh = (truth.release_time > 0) & (age_days >= 0)
        decay = np.exp2(-np.maximum(age_days, 0.0) / self.novelty_half_life_days)
        return 1.0 + self.novelty_boost * decay * fresh

    def relevance(
        self, truth: SyntheticTruth, users: np.ndarray, times: np.ndarray, previous_items: np.ndarray
    ) -> np.ndarray:
        """P(click | examined) of every item: ``users``, ``times``, ``previous_items`` ``[batch]`` (-1: none) ->
        ``[batch, n_items]`` in the truth's item ids."""
        p = truth.next_item_probabilities_batch(users, times, previous_items)
        return -np.expm1(-self.relevance_scale * p * self.novelty(truth, times))


def list_reward(relevance: np.ndarray, items: np.ndarray, examination: np.ndarray) -> float:
    """Expected clicks on ``items`` ``[k']`` shown in order: ``Σ_j examination[j] · relevance[items[j]]``."""
    items = np.asarray(items, dtype=np.int64)
    return float(examination[: len(items)] @ relevance[items])


def oracle_reward(relevance: np.ndarray, eligible: np.ndarray, examination: np.ndarray) -> float:
    """Expected clicks on the best list: the ``k`` most relevant ``eligible`` items, most relevant first."""
    k = len(examination)
    values = relevance[eligible]
    if len(values) > k:
        values = np.partition(values, len(values) - k)[-k:]
    return float(examination[: len(values)] @ np.sort(values)[::-1])


@dataclass(frozen=True)
class Context:
    """The situation of one served list, in the engine's item indices (state order).

    ``candidates``: what the serving engine handed the logging policy (the model's ranking, best first, with the
    popularity fill), with ``eligible`` (the items the list could hold: available, not seen by the user) and
    ``cold`` (unknown to the serving model, or young by ``created_at``) always filled in; ``relevance`` ``[n]``:
    every item's click probability when examined; ``examination`` ``[k]``; ``shown``: the list served and its
    ``recommendation_id`` in the log; ``user_id``, ``time`` (simulation seconds) and the ``policy`` that served it.
    """

    user_id: str
    time: float
    candidates: Candidates
    relevance: np.ndarray
    examination: np.ndarray
    shown: np.ndarray
    recommendation_id: str
    policy: str

    @property
    def k(self) -> int:
        return len(self.examination)

    def oracle(self) -> float:
        """Expected clicks of the best list in this context."""
        eligible = self.candidates.eligible
        if eligible is None:  # the simulator fills it in; a hand-made context may lack it
            raise ValueError("context: candidates.eligible is needed for the oracle")
        return oracle_reward(self.relevance, eligible, self.examination)


@dataclass(frozen=True)
class PolicyValue:
    """A policy's true value on contexts: mean expected clicks per list, and the Monte Carlo standard error of
    that mean (0 where every context was computed exactly)."""

    value: float
    standard_error: float
    contexts: int
    exact: bool


def _check_depth(policy: Policy, context: Context) -> None:
    needed = policy.candidates_needed(context.k)
    have = len(context.candidates.items)
    if have < needed and context.candidates.eligible is not None and have < int(context.candidates.eligible.sum()):
        raise ValueError(
            f"context: policy {policy.name!r} ranks {needed} candidates, the context holds {have} (log with a "
            f"policy that asks for at least as many, e.g. softmax or cold with the same candidates)"
        )


def _epsilon_exact(policy: Policy, context: Context) -> float:
    """ε-greedy by its slot marginals: slot j shows its greedy item with P 1 − q_j, each pool item with q_j / m."""
    if not isinstance(policy, EpsilonGreedy):
        raise TypeError(f"policy: expected an EpsilonGreedy, got {type(policy).__name__}")
    k, candidates = context.k, context.candidates
    greedy = np.asarray(candidates.items[:k], dtype=np.int64)
    pool = policy.pool(candidates, greedy)
    q = policy.replacement_probabilities(len(greedy), len(pool))
    pool_mean = float(context.relevance[pool].mean()) if len(pool) else 0.0
    per_slot = (1.0 - q) * context.relevance[greedy] + q * pool_mean
    return float(context.examination[: len(greedy)] @ per_slot)


def _deterministic_exact(policy: Policy, context: Context) -> float:
    """A policy whose every propensity is 1 (greedy, cold): its one list."""
    slate = policy.select(context.candidates, context.k, np.random.default_rng(0))
    if not np.all(slate.propensities == 1.0):
        raise ValueError(f"policy {policy.name!r} drew a list with propensity < 1: it is not deterministic")
    return list_reward(context.relevance, slate.items, context.examination)


#: Policies whose expected reward has a closed form (name -> function of policy and context).
EXACT: dict[str, Callable[[Policy, Context], float]] = {
    "greedy": _deterministic_exact,
    "cold": _deterministic_exact,
    "epsilon": _epsilon_exact,
}


def _softmax_draws(policy: Policy, context: Context, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Expected clicks of ``n_draws`` Plackett–Luce lists, drawn at once the way :meth:`Softmax.select` draws one
    (Gumbel-max over the top ``candidates`` with the policy's weights): ``[n_draws]``."""
    if not isinstance(policy, Softmax):
        raise TypeError(f"policy: expected a Softmax, got {type(policy).__name__}")
    n = min(policy.config.candidates, len(context.candidates.items))
    top = np.asarray(context.candidates.items[:n], dtype=np.int64)
    weights = policy.weights(np.asarray(context.candidates.scores[:n], dtype=np.float64))
    keys = np.log(np.maximum(weights, 1e-300)) + rng.gumbel(size=(n_draws, n))
    keys[:, weights <= 0] = -np.inf
    m = min(context.k, n)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :m]
    return context.relevance[top[order]] @ context.examination[:m]


def _generic_draws(policy: Policy, context: Context, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Expected clicks of ``n_draws`` lists drawn by the policy itself, one at a time: ``[n_draws]``."""
    rewards = np.empty(n_draws)
    for n in range(n_draws):
        shown = policy.select(context.candidates, context.k, rng).items
        rewards[n] = list_reward(context.relevance, shown, context.examination)
    return rewards


#: Policies without a closed form, sampled many lists at once (name -> function); others call ``select``.
SAMPLED: dict[str, Callable[[Policy, Context, int, np.random.Generator], np.ndarray]] = {"softmax": _softmax_draws}


def expected_reward(
    policy: Policy, context: Context, *, n_draws: int = 2000, rng: np.random.Generator | None = None
) -> tuple[float, float]:
    """The expected clicks of the list ``policy`` shows in ``context``, and its Monte Carlo standard error.

    Exact (standard error 0) for greedy, ε-greedy and cold; for softmax (and any policy without a closed form)
    the mean over ``n_draws`` lists drawn by the policy's own sampling.
    """
    _check_depth(policy, context)
    exact = EXACT.get(policy.name)
    if exact is not None:
        return exact(policy, context), 0.0
    if n_draws < 2:
        raise ValueError(f"n_draws: expected at least 2, got {n_draws!r}")
    draws = SAMPLED.get(policy.name, _generic_draws)(policy, context, n_draws, rng or np.random.default_rng(0))
    return float(draws.mean()), float(draws.std(ddof=1) / math.sqrt(n_draws))


def true_value(policy: Policy, contexts: Sequence[Context], *, n_draws: int = 2000, seed: int = 0) -> PolicyValue:
    """The policy's true value on ``contexts``: the mean of its expected clicks per list (see
    :func:`expected_reward`), with the Monte Carlo standard error of the mean."""
    if not contexts:
        raise ValueError("contexts: expected at least one")
    rng = np.random.default_rng(seed)
    values = np.empty(len(contexts))
    variances = np.empty(len(contexts))
    for n, context in enumerate(contexts):
        values[n], error = expected_reward(policy, context, n_draws=n_draws, rng=rng)
        variances[n] = error**2
    return PolicyValue(
        value=float(values.mean()),
        standard_error=float(math.sqrt(variances.sum()) / len(contexts)),
        contexts=len(contexts),
        exact=policy.name in EXACT,
    )
