"""Exploration policies: how a served list is drawn from the model's ranking, and with what probability.

A policy turns the greedy ranking (the model's candidates, best first) into the ``k`` items shown, and says for
each shown item how likely it was to be shown there. Pure NumPy, no I/O: serving calls it on every list, and
anything that evaluates a policy on logged lists (off-policy evaluation) can call the same code.

Three probabilities are reported per list (:class:`Slate`):

* ``propensities[j]``: P(slot ``j`` shows this item | the items of slots ``0..j-1``): the policy's factor for
  slot ``j`` (a cascade). Exact for every policy.
* ``slate_propensity``: P(the whole ordered list) = the product of ``propensities``. Exact for every policy.
* ``slot_propensities[j]``: P(slot ``j`` shows this item), marginal over the policy's randomness (what
  independent-position estimators weigh by). Exact for greedy, ε-greedy and cold; for softmax exact at the
  first slot (the cascade factor) and NaN below it in the served :class:`Slate`: Plackett–Luce marginals have
  no closed form, and their exact value (:func:`plackett_luce_marginals`, an integral over an exponential race,
  ~1e-13) costs about as much as the rest of a request, so :meth:`Softmax.marginals` computes them where they
  are used: off-policy evaluation (:mod:`liverec.ope`), from the logged candidates' scores.
* ``list_propensities[j]``: P(the item appears anywhere in the list), marginal over the policy's randomness.
  Exact for greedy, ε-greedy and cold; NaN for softmax in the served slate (the row sums of
  :meth:`Softmax.marginals`).

The policies (:data:`POLICIES`, by name; :func:`create_policy`):

* ``greedy``: the top ``k``. Every propensity is 1.
* ``epsilon``: ε-greedy slot replacement (:class:`EpsilonGreedy`).
* ``softmax``: Plackett–Luce sampling without replacement over the top ``candidates`` (:class:`Softmax`).
* ``cold``: a deterministic boost of young items, à la AWS Personalize's ``explorationWeight`` with an
  item-age cut-off (:class:`ColdBoost`).

An item is *explored* when the greedy list would not have had it in that slot. Randomness comes only from the
``rng`` passed in (one seeded generator per request), so a list is reproducible from its seed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "POLICIES",
    "Candidates",
    "ColdBoost",
    "EpsilonGreedy",
    "ExploreConfig",
    "Greedy",
    "Policy",
    "Slate",
    "Softmax",
    "create_policy",
    "plackett_luce_marginals",
    "register",
]


@dataclass(frozen=True)
class ExploreConfig:
    """Every policy's hyperparameters (the ``explore_*`` settings): one source for all of them."""

    epsilon: float = 0.1  # ε-greedy: probability that a slot is replaced
    temperature: float = 1.0  # softmax: scores are divided by it before the softmax
    candidates: int = 50  # softmax and cold: how many of the model's top items are considered
    cold_age_s: float = 7 * 86_400.0  # cold: items younger than this are boosted
    cold_weight: float = 0.3  # cold: the boost, as a fraction of the candidates' score range

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a probability in [0, 1], got {self.epsilon!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature: expected a finite number > 0, got {self.temperature!r}")
        if self.candidates < 1:
            raise ValueError(f"candidates: expected >= 1, got {self.candidates!r}")
        if not self.cold_age_s > 0:
            raise ValueError(f"cold_age_s: expected > 0 seconds, got {self.cold_age_s!r}")
        if not (self.cold_weight >= 0 and math.isfinite(self.cold_weight)):
            raise ValueError(f"cold_weight: expected a finite number >= 0, got {self.cold_weight!r}")


@dataclass(frozen=True)
class Candidates:
    """What a policy chooses from.

    ``items`` [n] (int64 ids, best first: the greedy order, deterministic ties) and their ``scores`` [n];
    ``eligible`` [n_ids] bool: every id the list may hold (ε-greedy draws replacements from it); ``cold`` [n_ids]
    bool: the ids younger than the age cut-off (the cold boost). Either may be None when the policy needs none.
    ``cold_scores`` [n_ids] float (optional): this user's estimated score of each cold id outside ``items`` — the
    model's own score where it knows the item, else its estimate from the item's categories (NaN: none) — so the
    cold boost raises a young item from where it stands for this user, not from one tied floor.
    """

    items: np.ndarray
    scores: np.ndarray
    eligible: np.ndarray | None = None
    cold: np.ndarray | None = None
    cold_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.items) != len(self.scores):
            raise ValueError(f"items and scores differ in length: {len(self.items)} != {len(self.scores)}")


@dataclass(frozen=True)
class Slate:
    """The list a policy shows and its probabilities (see the module docstring), each [k'] with k' <= k.

    ``scores`` are the model's (NaN for an item drawn from outside the candidates: ε-greedy's replacements).
    ``candidates`` [n] / ``candidate_scores`` [n]: the ranked items the policy chose from (the first
    ``candidates_needed(k)`` of :class:`Candidates`), and ``n_eligible`` the number of eligible ids when the policy
    was given them (None otherwise): what off-policy evaluation needs to recompute any policy's choice on this list.
    """

    items: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray
    list_propensities: np.ndarray
    explored: np.ndarray
    from_candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [k'] index, -1: none
    slot_propensities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [k'] P(slot j shows it)
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [n] chosen from
    candidate_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n]
    n_eligible: int | None = None

    @property
    def slate_propensity(self) -> float:
        """P(this whole ordered list) under the policy: the product of the per-slot factors."""
        return float(np.prod(self.propensities))


class Policy(ABC):
    """How a list is drawn from the candidates. Subclasses register under a name (:func:`register`)."""

    name: ClassVar[str]
    #: whether :meth:`select` reads ``Candidates.eligible`` / ``Candidates.cold`` (the caller builds them only then)
    needs_eligible: ClassVar[bool] = False
    needs_cold: ClassVar[bool] = False

    def __init__(self, config: ExploreConfig) -> None:
        self.config = config

    def candidates_needed(self, k: int) -> int:
        """How many ranked candidates :meth:`select` wants for a list of ``k``."""
        return k

    def settings(self) -> dict[str, Any]:
        """The hyperparameters this policy uses (logged with every impression)."""
        return {}

    @abstractmethod
    def select(self, candidates: Candidates, k: int, rng: np.random.Generator) -> Slate:
        """The list shown for ``candidates`` (at most ``k`` items; fewer when fewer exist)."""

    def _with_candidates(self, slate: Slate, candidates: Candidates, k: int) -> Slate:
        """``slate`` with what the policy chose from (:attr:`Slate.candidates`), for the impression."""
        n = min(self.candidates_needed(k), len(candidates.items))
        eligible = candidates.eligible
        return replace(
            slate,
            candidates=np.asarray(candidates.items[:n], dtype=np.int64),
            candidate_scores=np.asarray(candidates.scores[:n], dtype=np.float64),
            n_eligible=None if eligible is None else int(np.count_nonzero(eligible)),
        )


#: Policy name -> class.
POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available under its ``name``."""
    if cls.name in POLICIES:
        raise ValueError(f"policy {cls.name!r} is registered twice")
    POLICIES[cls.name] = cls
    return cls


def create_policy(name: str, config: ExploreConfig | None = None) -> Policy:
    """The policy called ``name`` with the hyperparameters of ``config``."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"explore: expected one of {', '.join(sorted(POLICIES))}, got {name!r}") from None
    return cls(config or ExploreConfig())


def _greedy_part(candidates: Candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(k, len(candidates.items))
    return np.asarray(candidates.items[:n], dtype=np.int64), np.asarray(candidates.scores[:n], dtype=np.float64)


@register
class Greedy(Policy):
    """The top ``k`` candidates: today's behaviour. Every propensity is 1."""

    name = "greedy"

    def select(self, candidates: Candidates, k: int, rng: np.random.Generator) -> Slate:
        items, scores = _greedy_part(candidates, k)
        ones = np.ones(len(items))
        explored = np.zeros(len(items), dtype=bool)
        slate = Slate(items, scores, ones, ones.copy(), explored, np.arange(len(items)), ones.copy())
        return self._with_candidates(slate, candidates, k)


@register
class EpsilonGreedy(Policy):
    """ε-greedy slot replacement.

    Let g_0..g_{k-1} be the greedy list and P the *pool*: the eligible items not in it (m = |P|). Slot by slot,
    with probability ε the slot's greedy item is replaced by an item drawn uniformly from the pool items not
    drawn yet; once the pool is spent (m draws made) the remaining slots keep their greedy item. With r draws
    made before slot j:

    * per slot: P(slot j shows g_j | above) = 1 − ε if r < m, else 1; P(slot j shows x | above) = ε / (m − r)
      for each pool item x not drawn yet. These sum to 1 at every slot.
    * in the slot (marginal): slot j is replaced with probability q_j = ε · P(Binomial(j, ε) <= m − 1) (fewer
      than m of the j slots above were replaced); so P(slot j shows g_j) = 1 − q_j and, by symmetry of the
      draws, P(slot j shows x) = q_j / m for every pool item x.
    * in the list: P(g_j in the list) = 1 − q_j (it can only be in slot j) and P(x in the list) =
      (q_0 + ... + q_{k-1}) / m for every pool item x. Over all items these sum to k.
    """

    name = "epsilon"
    needs_eligible = True

    def settings(self) -> dict[str, Any]:
        return {"epsilon": self.config.epsilon}

    def select(self, candidates: Candidates, k: int, rng: np.random.Generator) -> Slate:
        greedy, greedy_scores = _greedy_part(candidates, k)
        pool = self.pool(candidates, greedy)
        eps, m, n = self.config.epsilon, len(pool), len(greedy)
        replace = rng.random(n) < eps
        draws = rng.choice(pool, size=min(int(replace.sum()), m), replace=False) if m else pool
        items, scores = greedy.copy(), greedy_scores.copy()
        propensities = np.ones(n)
        from_candidates = np.arange(n)
        used = 0
        for slot in range(n):
            if used < m and replace[slot]:
                propensities[slot] = eps / (m - used)
                items[slot], scores[slot], from_candidates[slot] = draws[used], np.nan, -1
                used += 1
            elif used < m:
                propensities[slot] = 1.0 - eps
        q = self.replacement_probabilities(n, m)
        kept = from_candidates >= 0
        list_propensities = np.where(kept, 1.0 - q, q.sum() / max(m, 1))
        slot_propensities = np.where(kept, 1.0 - q, q / max(m, 1))
        slate = Slate(items, scores, propensities, list_propensities, ~kept, from_candidates, slot_propensities)
        return self._with_candidates(slate, candidates, k)

    @staticmethod
    def pool(candidates: Candidates, greedy: np.ndarray) -> np.ndarray:
        """The eligible ids outside the greedy list, ascending."""
        if candidates.eligible is None:
            raise ValueError("epsilon: Candidates.eligible is needed (the items replacements are drawn from)")
        eligible = candidates.eligible.copy()
        eligible[greedy] = False
        return np.flatnonzero(eligible)

    def replacement_probabilities(self, n_slots: int, pool_size: int) -> np.ndarray:
        """q_j = P(slot j is replaced) = ε · P(Binomial(j, ε) <= m − 1), j = 0..n_slots-1."""
        eps = self.config.epsilon
        q = np.zeros(n_slots)
        if pool_size == 0:
            return q
        for slot in range(n_slots):
            below = sum(
                math.comb(slot, r) * eps**r * (1 - eps) ** (slot - r) for r in range(min(slot, pool_size - 1) + 1)
            )
            q[slot] = eps * below
        return q

    def inclusion(self, candidates: Candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every id that can appear and P(it is in the list): the greedy items, then the pool (ascending)."""
        greedy, _ = _greedy_part(candidates, k)
        pool = self.pool(candidates, greedy)
        q = self.replacement_probabilities(len(greedy), len(pool))
        share = q.sum() / len(pool) if len(pool) else 0.0
        return np.concatenate([greedy, pool]), np.concatenate([1.0 - q, np.full(len(pool), share)])


#: Gauss–Legendre nodes and weights on [-1, 1] for one panel of :func:`plackett_luce_marginals`' quadrature.
_LEGENDRE = np.polynomial.legendre.leggauss(10)


def plackett_luce_marginals(weights: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """P(item i is drawn at position j), j < k, for Plackett–Luce sampling without replacement with ``weights``.

    ``weights`` [n] (>= 0; an item weighing 0 is never drawn while others remain, and gets 0 here); returns
    [len(rows), min(k, n)] for the items ``rows`` (default all n). Each column sums to 1 over all items (while
    positive weights remain) and each row's sum is the item's inclusion probability in a list of ``k``.

    The exponential race: give item m an arrival time T_m ~ Exp(w_m); the order of arrival is a Plackett–Luce
    draw. So P(i at j) = ∫_0^∞ w_i e^{-w_i t} P(exactly j others arrived by t) dt, where the number of others
    arrived is Poisson-binomial with p_m(t) = 1 − e^{-w_m t}: a DP over the items, truncated to counts < k, from
    the front (items < i) and the back (items > i), combined per item. The integral runs over [0, t_lo] in t and
    over [t_lo, t_hi] in log t (where the integrand is smooth on a scale of ~1/sqrt(k)) with composite 10-point
    Gauss–Legendre panels of width min(1, 3/sqrt(k)); t_lo = 0.01 / Σw, and past t_hi fewer than k others have
    arrived with probability < e^-40. Accurate to ~1e-13 (checked against enumeration and a much finer grid);
    cost O(n · k · nodes), nodes growing with log(max w / min w).
    """
    weights = np.asarray(weights, dtype=np.float64)
    n = len(weights)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), min(k, n)))
    positive = np.flatnonzero(weights > 0)
    w = weights[positive]
    m, depth = len(w), min(k, len(w))
    if depth == 0:
        return out
    nodes, node_weights = _race_nodes(w, depth)
    held = np.exp(-np.outer(nodes, w))  # [nodes, m] P(item not arrived by t)
    arrived = -np.expm1(-np.outer(nodes, w))
    # counts[s, 0]: items 0..s-1 arrived (front); counts[s, 1]: items m-s..m-1 arrived (back); [m+1, 2, nodes, depth]
    counts = np.zeros((m + 1, 2, len(nodes), depth))
    counts[0, :, :, 0] = 1.0
    held_both = np.stack([held, held[:, ::-1]])[..., None]  # [2, nodes, m, 1]
    arrived_both = np.stack([arrived, arrived[:, ::-1]])[..., None]
    for step in range(m):
        before, after = counts[step], counts[step + 1]
        np.multiply(before, held_both[:, :, step], out=after)
        after[:, :, 1:] += before[:, :, :-1] * arrived_both[:, :, step]
    where = np.full(n, -1)
    where[positive] = np.arange(m)
    wanted = where[rows]
    inside = wanted >= 0
    index = wanted[inside]
    front = counts[index, 0]  # [r, nodes, depth] among items before i
    back = counts[m - 1 - index, 1]  # among items after i
    density = held[:, index].T * (w[index, None] * node_weights[None, :])  # [r, nodes]: w_i e^{-w_i t} dt
    weighted = front * density[:, :, None]
    result = np.empty((len(index), depth))
    for slot in range(depth):  # exactly `slot` others: a from the front, slot - a from the back
        result[:, slot] = np.einsum("rta,rta->r", weighted[:, :, : slot + 1], back[:, :, slot::-1])
    out[np.flatnonzero(inside), :depth] = result
    return out


def _race_nodes(weights: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes t and weights (dt included) for the exponential race of :func:`plackett_luce_marginals`."""
    legendre_x, legendre_w = _LEGENDRE
    m = len(weights)
    low = 0.01 / weights.sum()
    if depth < m:  # fewer than `depth` others arrived needs m - depth of them held: ≤ C(m-1, depth-1) e^{-t Σ smallest}
        smallest = np.sort(weights)[: m - depth].sum()
        log_ways = math.lgamma(m) - math.lgamma(depth) - math.lgamma(m - depth + 1)
        high = (40.0 + log_ways) / smallest
    else:
        high = 40.0 / weights.min()
    high = max(high, 2 * low)
    start, stop = math.log(low), math.log(high)
    panels = max(1, math.ceil((stop - start) / min(1.0, 3.0 / math.sqrt(depth))))
    half = (stop - start) / panels / 2
    x = (start + half * (2 * np.arange(panels) + 1))[:, None] + half * legendre_x[None, :]  # log t
    nodes = np.concatenate([low * (legendre_x + 1) / 2, np.exp(x).ravel()])
    node_weights = np.concatenate([low * legendre_w / 2, (half * legendre_w[None, :] * np.exp(x)).ravel()])
    return nodes, node_weights


@register
class Softmax(Policy):
    """Plackett–Luce sampling without replacement from softmax(score / temperature) over the top ``candidates``.

    With weights w_i = exp((s_i − max s) / T) over the N candidates, slot j shows item i with probability
    P(slot j = i | slots above) = w_i / (W − w_{i_0} − ... − w_{i_{j-1}}), W = Σ w: the per-slot factors, and
    their product is P(the ordered list). Sampled with the Gumbel-max trick (order by log w_i + Gumbel noise),
    which draws exactly this distribution. The marginals (``slot_propensities``: P(slot j shows i);
    ``list_propensities``: P(i in the list), their sum over the k slots) have no closed form below the first slot:
    :meth:`marginals` integrates them exactly (:func:`plackett_luce_marginals`), but at 0.7-1.2 ms for 50
    candidates and k = 10 that would double a request's cost, so :meth:`select` leaves them NaN below the first
    slot and off-policy evaluation computes them from the logged candidates' scores and the settings.
    """

    name = "softmax"

    def candidates_needed(self, k: int) -> int:
        return max(k, self.config.candidates)

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.config.temperature, "candidates": self.config.candidates}

    def weights(self, scores: np.ndarray) -> np.ndarray:
        """w_i = exp((s_i − max s) / T), the largest being 1 (non-finite scores weigh nothing)."""
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        if not np.isfinite(finite).any():
            return np.ones(len(scores))
        return np.exp((finite - finite.max()) / self.config.temperature)

    def select(self, candidates: Candidates, k: int, rng: np.random.Generator) -> Slate:
        n = min(self.config.candidates, len(candidates.items))
        top = np.asarray(candidates.items[:n], dtype=np.int64)
        scores = np.asarray(candidates.scores[:n], dtype=np.float64)
        weights = self.weights(scores)
        keys = np.log(np.maximum(weights, 1e-300)) + rng.gumbel(size=n)
        keys[weights <= 0] = -np.inf
        order = np.argsort(-keys, kind="stable")[: min(k, n)]
        propensities = self.cascade(weights, order)
        explored = order != np.arange(len(order))
        # the marginals below the first slot cost ~1 ms (as much as the rest of a request): left NaN here, and
        # computed where they are used (off-policy evaluation) by :meth:`marginals` from the logged candidates
        list_propensities = np.full(len(order), np.nan)
        slot_propensities = list_propensities.copy()
        slot_propensities[:1] = propensities[:1]
        slate = Slate(top[order], scores[order], propensities, list_propensities, explored, order, slot_propensities)
        return self._with_candidates(slate, candidates, k)

    def marginals(self, scores: np.ndarray, k: int) -> np.ndarray:
        """[n, min(k, n')] P(slot j shows candidate i) for the ranked candidates' ``scores`` [n] (only the first
        ``candidates`` can be drawn: n' = min(n, candidates)); a row's sum is P(i in the list)."""
        n = min(self.config.candidates, len(scores))
        out = np.zeros((len(scores), min(k, n)))
        out[:n] = plackett_luce_marginals(self.weights(np.asarray(scores[:n], dtype=np.float64)), k)
        return out

    @staticmethod
    def cascade(weights: np.ndarray, order: np.ndarray) -> np.ndarray:
        """P(slot j shows ``order[j]`` | slots above) = w / (the weight not drawn yet), summed from the smallest
        up (no cancellation when one weight dwarfs the rest)."""
        rest = np.ones(len(weights), dtype=bool)
        rest[order] = False
        tail = np.sort(weights[rest]).sum()
        remaining = np.cumsum(weights[order][::-1])[::-1] + tail
        with np.errstate(divide="ignore", invalid="ignore"):
            return weights[order] / remaining


@register
class ColdBoost(Policy):
    """A deterministic boost of young items, à la AWS Personalize's ``explorationWeight``.

    Among the top ``candidates`` and every eligible cold item (younger than ``cold_age_s``; the caller marks
    them), each cold item's score is raised by ``cold_weight`` × (max − min of the candidates' scores), and the
    top ``k`` by boosted score are shown (ties keep the greedy order). A cold item outside the candidates starts
    from this user's estimate of it when the caller gives one (``Candidates.cold_scores``: the model's score, or
    the score of its categories' known items), else from the lowest candidate score — the tied floor of
    AWS-style boosts, which shows every user the same young items. The policy is deterministic: every
    propensity is 1.
    """

    name = "cold"
    needs_cold = True

    def candidates_needed(self, k: int) -> int:
        return max(k, self.config.candidates)

    def settings(self) -> dict[str, Any]:
        return {
            "cold_age_s": self.config.cold_age_s,
            "cold_weight": self.config.cold_weight,
            "candidates": self.config.candidates,
        }

    def select(self, candidates: Candidates, k: int, rng: np.random.Generator) -> Slate:
        n = min(self.config.candidates, len(candidates.items))
        top = np.asarray(candidates.items[:n], dtype=np.int64)
        scores = np.asarray(candidates.scores[:n], dtype=np.float64)
        if candidates.cold is None:
            raise ValueError("cold: Candidates.cold is needed (the items younger than the cut-off)")
        cold = candidates.cold.copy()
        if candidates.eligible is not None:
            cold &= candidates.eligible
        outside = cold.copy()
        outside[top] = False
        extra = np.flatnonzero(outside)
        finite = scores[np.isfinite(scores)]
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
        spread = high - low if high > low else 1.0
        start = np.full(len(extra), low)
        if candidates.cold_scores is not None and len(extra):
            estimate = np.asarray(candidates.cold_scores, dtype=np.float64)[extra]
            start = np.where(np.isfinite(estimate), estimate, low)
        items = np.concatenate([top, extra])
        base = np.concatenate([scores, start])
        boosted = base + self.config.cold_weight * spread * cold[items]
        order = np.argsort(-boosted, kind="stable")[: min(k, len(items))]
        shown = items[order]
        greedy = top[:k]
        explored = np.array([j >= len(greedy) or shown[j] != greedy[j] for j in range(len(shown))], dtype=bool)
        shown_scores = np.where(order < n, base[order], np.nan)
        ones = np.ones(len(order))
        slate = Slate(shown, shown_scores, ones, ones.copy(), explored, np.where(order < n, order, -1), ones.copy())
        return self._with_candidates(slate, candidates, k)
