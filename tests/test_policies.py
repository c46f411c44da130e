"""Exploration policies: what each shows, that its propensities normalise as its docstring says, and that they
match the frequencies of 20,000 seeded draws (tolerance: 5 binomial standard errors)."""

from __future__ import annotations

import collections
import itertools
import math
import typing

import numpy as np
import pytest

from liverec.policies import POLICIES, Candidates, ColdBoost, EpsilonGreedy, ExploreConfig, Softmax, create_policy
from liverec.serving.schemas import ExploreName

DRAWS = 20_000


def close(observed: int, probability: float, draws: int = DRAWS) -> bool:
    """Whether a count is within 5 standard errors of its expectation (plus a hair for p near 0 or 1)."""
    error = math.sqrt(probability * (1 - probability) / draws)
    return abs(observed / draws - probability) <= 5 * error + 1e-3


def ranked(n_ids: int = 8, k_candidates: int = 8) -> Candidates:
    items = np.arange(k_candidates, dtype=np.int64)[::-1].copy()  # best first: 7, 6, 5, ...
    scores = np.linspace(2.0, 0.0, k_candidates)
    return Candidates(items, scores, eligible=np.ones(n_ids, dtype=bool))


def test_the_registry_names_every_policy_the_api_accepts() -> None:
    assert set(POLICIES) == set(typing.get_args(ExploreName)) == {"greedy", "epsilon", "softmax", "cold"}
    with pytest.raises(ValueError, match="explore: expected one of"):
        create_policy("thompson")
    with pytest.raises(ValueError, match="epsilon"):
        ExploreConfig(epsilon=1.5)


def test_greedy_is_the_top_k_with_propensity_one() -> None:
    slate = create_policy("greedy").select(ranked(), 3, np.random.default_rng(0))
    assert slate.items.tolist() == [7, 6, 5] and slate.propensities.tolist() == [1.0, 1.0, 1.0]
    assert slate.slate_propensity == 1.0 and not slate.explored.any()


@pytest.mark.parametrize("n_ids", [8, 4])  # a pool of 5, and a pool of 1 that runs out before the list does
def test_epsilon_propensities_normalise_and_match_frequencies(n_ids: int) -> None:
    policy = EpsilonGreedy(ExploreConfig(epsilon=0.3))
    candidates = ranked(n_ids, k_candidates=n_ids)
    k = 3
    ids, inclusion = policy.inclusion(candidates, k)
    assert math.isclose(inclusion.sum(), k), "the inclusion probabilities sum to the list's length"
    rng = np.random.default_rng(7)
    in_list: collections.Counter[int] = collections.Counter()
    slates: collections.Counter[tuple[int, ...]] = collections.Counter()
    first_slot: collections.Counter[int] = collections.Counter()
    logged: dict[tuple[int, ...], float] = {}
    in_slot: collections.Counter[tuple[int, int]] = collections.Counter()
    slot_logged: dict[tuple[int, int], float] = {}
    for _ in range(DRAWS):
        slate = policy.select(candidates, k, rng)
        shown = tuple(slate.items.tolist())
        assert len(set(shown)) == k, "no item twice"
        in_list.update(shown)
        slates[shown] += 1
        first_slot[shown[0]] += 1
        logged[shown] = slate.slate_propensity
        for item, propensity in zip(shown, slate.list_propensities.tolist(), strict=True):
            assert math.isclose(propensity, inclusion[ids.tolist().index(item)])
        for j, (item, marginal) in enumerate(zip(shown, slate.slot_propensities.tolist(), strict=True)):
            in_slot[(j, item)] += 1
            slot_logged[(j, item)] = marginal
        greedy = candidates.items[:k].tolist()
        assert slate.explored.tolist() == [item != greedy[j] for j, item in enumerate(shown)]
    for item, probability in zip(ids.tolist(), inclusion.tolist(), strict=True):
        assert close(in_list[item], probability), (item, in_list[item], probability)
    pool = n_ids - k
    assert close(first_slot[n_ids - 1], 0.7) and all(close(first_slot[x], 0.3 / pool) for x in range(pool))
    for shown, count in slates.most_common(6):
        assert close(count, logged[shown]), (shown, count, logged[shown])
    for (slot, item), marginal in slot_logged.items():
        assert close(in_slot[(slot, item)], marginal), (slot, item, in_slot[(slot, item)], marginal)
    for slot in range(k):  # every item that can fill a slot was seen there: the marginals of a slot sum to 1
        assert math.isclose(sum(p for (j, _), p in slot_logged.items() if j == slot), 1.0)


def test_softmax_slate_probabilities_are_plackett_luce_and_match_frequencies() -> None:
    config = ExploreConfig(temperature=0.7, candidates=4)
    policy = Softmax(config)
    candidates = ranked(6, k_candidates=6)  # only the top 4 are candidates
    weights = np.exp((np.linspace(2.0, 0.0, 6)[:4] - 2.0) / 0.7)
    exact = {}
    for first, second in itertools.permutations(range(4), 2):
        exact[(5 - first, 5 - second)] = (
            weights[first] / weights.sum() * weights[second] / (weights.sum() - weights[first])
        )
    assert math.isclose(sum(exact.values()), 1.0), "the ordered lists' probabilities sum to 1"
    rng = np.random.default_rng(11)
    counts: collections.Counter[tuple[int, ...]] = collections.Counter()
    for _ in range(DRAWS):
        slate = policy.select(candidates, 2, rng)
        shown = tuple(slate.items.tolist())
        counts[shown] += 1
        assert math.isclose(slate.slate_propensity, exact[shown], rel_tol=1e-9)
        first = 5 - shown[0]
        assert math.isclose(slate.propensities[0], weights[first] / weights.sum(), rel_tol=1e-9)
        assert np.isnan(slate.list_propensities).all()
        assert slate.explored.tolist() == [shown[0] != 5, shown[1] != 4]
    assert set(counts) <= set(exact)
    for shown, probability in exact.items():
        assert close(counts[shown], probability), (shown, counts[shown], probability)


def test_draws_are_reproducible_from_the_seed() -> None:
    policy = create_policy("softmax", ExploreConfig(candidates=8))
    a = [policy.select(ranked(), 3, np.random.default_rng([5, n])).items.tolist() for n in range(20)]
    b = [policy.select(ranked(), 3, np.random.default_rng([5, n])).items.tolist() for n in range(20)]
    assert a == b and len({tuple(x) for x in a}) > 1


def test_cold_boost_lifts_young_items_deterministically() -> None:
    cold = np.zeros(10, dtype=bool)
    cold[[5, 9]] = True  # 5 is a low candidate, 9 is outside the candidates
    candidates = Candidates(
        np.array([7, 6, 5, 4], dtype=np.int64), np.array([4.0, 3.0, 2.0, 0.0]), eligible=np.ones(10, bool), cold=cold
    )
    slate = ColdBoost(ExploreConfig(cold_weight=0.5, candidates=4)).select(candidates, 3, np.random.default_rng(0))
    # spread 4: item 5 -> 2 + 2 = 4 (ties item 7, keeps the greedy order), item 9 -> 0 + 2 = 2
    assert slate.items.tolist() == [7, 5, 6]
    assert slate.explored.tolist() == [False, True, True]
    assert slate.propensities.tolist() == [1.0, 1.0, 1.0] and slate.slate_propensity == 1.0
    strong = ColdBoost(ExploreConfig(cold_weight=2.0, candidates=4)).select(candidates, 3, np.random.default_rng(0))
    assert strong.items.tolist() == [5, 9, 7] and np.isnan(strong.scores[1])


def test_cold_boost_starts_young_items_from_the_users_estimate() -> None:
    """With ``cold_scores`` a young item outside the candidates starts from this user's estimate of it, so the
    boost lifts the young items this user is likely to like and leaves the others down; NaN: the floor."""
    cold = np.zeros(12, dtype=bool)
    cold[[9, 10, 11]] = True  # all outside the candidates
    estimates = np.full(12, np.nan)
    estimates[9], estimates[10] = 3.5, -5.0  # 9: the user's kind of item; 10: not; 11: no estimate (the floor)
    candidates = Candidates(
        np.array([7, 6, 5, 4], dtype=np.int64),
        np.array([4.0, 3.0, 2.0, 0.0]),
        eligible=np.ones(12, bool),
        cold=cold,
        cold_scores=estimates,
    )
    policy = ColdBoost(ExploreConfig(cold_weight=0.25, candidates=4))
    slate = policy.select(candidates, 3, np.random.default_rng(0))
    # spread 4, boost 1: item 9 -> 4.5, item 11 -> 0 + 1 = 1, item 10 -> -4
    assert slate.items.tolist() == [9, 7, 6]
    assert slate.explored.tolist() == [True, True, True] and np.isnan(slate.scores[0])
    assert slate.propensities.tolist() == [1.0, 1.0, 1.0]
    everything = policy.select(candidates, 7, np.random.default_rng(0))
    assert everything.items.tolist() == [9, 7, 6, 5, 11, 4, 10]
    floor = Candidates(candidates.items, candidates.scores, eligible=candidates.eligible, cold=cold)
    without = policy.select(floor, 7, np.random.default_rng(0))
    assert without.items.tolist() == [7, 6, 5, 9, 10, 11, 4]  # one tied floor (0 + 1) for every young item
