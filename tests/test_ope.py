"""Off-policy evaluation: exact Plackett–Luce marginals (enumeration, normalisation, frequencies), the estimators
against the Open Bandit Pipeline on the same arrays, coverage of the true value on logs with a known click model,
the support deficit, and ``liverec ope``."""

from __future__ import annotations

import collections
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from liverec.cli import main
from liverec.events.impressions import Impression, Reward
from liverec.events.log import SQLiteEventLog
from liverec.ope import (
    TARGETS,
    Estimate,
    LoggedList,
    TargetPolicy,
    evaluate,
    item_level,
    likelihood_interval,
    list_level,
    logged_lists,
    parse_policy,
)
from liverec.policies import (
    Candidates,
    EpsilonGreedy,
    ExploreConfig,
    Policy,
    Softmax,
    create_policy,
    plackett_luce_marginals,
)

DRAWS = 20_000


def close(observed: int, probability: float, draws: int = DRAWS) -> bool:
    """Whether a count is within 5 binomial standard errors of its expectation (plus a hair near 0 or 1)."""
    return abs(observed / draws - probability) <= 5 * math.sqrt(probability * (1 - probability) / draws) + 1e-3


def enumerated(weights: np.ndarray, k: int) -> np.ndarray:
    """P(i at slot j) by summing the Plackett–Luce probability of every ordered list of k (small n only)."""
    n = len(weights)
    out = np.zeros((n, k))
    for ordered in itertools.permutations(range(n), k):
        probability, left = 1.0, list(range(n))
        for item in ordered:
            total = math.fsum(weights[x] for x in left)
            probability *= weights[item] / total if total > 0 else 0.0
            left.remove(item)
        for slot, item in enumerate(ordered):
            out[item, slot] += probability
    return out


# -- exact Plackett–Luce marginals -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "k", "spread"),
    [(5, 3, 1.0), (6, 6, 2.0), (7, 4, 5.0), (8, 3, 40.0), (7, 1, 1.0), (6, 4, 0.001)],
)
def test_plackett_luce_marginals_equal_enumeration(n: int, k: int, spread: float) -> None:
    rng = np.random.default_rng(n * 100 + k)
    scores = rng.normal(size=n) * spread
    weights = np.exp(scores - scores.max())
    weights[rng.integers(n)] = 0.0 if spread == 1.0 else weights[0]  # a zero weight is never drawn
    exact = enumerated(weights, k)
    assert np.abs(plackett_luce_marginals(weights, k) - exact).max() < 1e-10
    rows = rng.permutation(n)[:3]
    assert np.abs(plackett_luce_marginals(weights, k, rows=rows) - exact[rows]).max() < 1e-10


def test_plackett_luce_marginals_normalise() -> None:
    rng = np.random.default_rng(3)
    for spread in (0.01, 1.0, 4.0):
        scores = rng.normal(size=50) * spread
        marginals = plackett_luce_marginals(np.exp(scores - scores.max()), 10)
        assert marginals.shape == (50, 10) and (marginals >= 0).all()
        assert np.abs(marginals.sum(axis=0) - 1).max() < 1e-10, "each slot shows exactly one item"
        inclusion = marginals.sum(axis=1)
        assert abs(inclusion.sum() - 10) < 1e-9 and inclusion.max() <= 1 + 1e-12, "a list of 10 holds 10 items"


def test_softmax_marginals_match_frequencies() -> None:
    policy = Softmax(ExploreConfig(temperature=0.8, candidates=10))
    scores = np.linspace(2.0, -1.0, 12)
    candidates = Candidates(np.arange(100, 112), scores)
    k = 4
    marginals = policy.marginals(scores, k)  # [12, 4]; the last two are not candidates
    assert np.abs(marginals[10:]).max() == 0
    rng = np.random.default_rng(5)
    in_slot: collections.Counter[tuple[int, int]] = collections.Counter()
    for _ in range(DRAWS):
        slate = policy.select(candidates, k, rng)
        assert math.isclose(slate.slot_propensities[0], marginals[slate.from_candidates[0], 0], rel_tol=1e-9)
        in_slot.update((int(i), j) for j, i in enumerate(slate.from_candidates.tolist()))
    for item, slot in itertools.product(range(12), range(k)):
        assert close(in_slot[(item, slot)], marginals[item, slot]), (item, slot, in_slot[(item, slot)])
    inclusion = marginals.sum(axis=1)
    for item in range(12):
        count = sum(in_slot[(item, slot)] for slot in range(k))
        assert close(count, inclusion[item]), (item, count, inclusion[item])


def test_softmax_cascade_has_no_cancellation() -> None:
    """One weight dwarfing the rest: P(second | first) is w_2 / (w_2 + w_3), not w_2 / (W - w_1) = 0/0."""
    weights = np.array([1.0, 1e-17, 3e-17])
    factors = Softmax.cascade(weights, np.array([0, 1]))
    assert factors.tolist() == pytest.approx([1.0, 0.25], rel=1e-12)


# -- estimators against the Open Bandit Pipeline -----------------------------------------------------------------
def random_arrays(seed: int, n: int = 400, n_actions: int = 6, k: int = 3) -> dict[str, np.ndarray]:
    """A logged bandit per slot: actions drawn from the logging distribution, with target distributions and a
    reward model, as OBP takes them ([n, n_actions, k])."""
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(n_actions), size=(n, k)).transpose(0, 2, 1)
    target = rng.dirichlet(np.ones(n_actions) * 0.5, size=(n, k)).transpose(0, 2, 1)
    actions = np.stack([[rng.choice(n_actions, p=logging[i, :, j]) for j in range(k)] for i in range(n)])
    q_hat = rng.uniform(0, 1, size=(n, n_actions, k))
    rewards = rng.binomial(1, 0.3, size=(n, k)).astype(float)
    return {"logging": logging, "target": target, "actions": actions, "q_hat": q_hat, "rewards": rewards}


def test_item_level_estimators_equal_obp_per_slot() -> None:
    ope = pytest.importorskip("obp.ope")
    arrays = random_arrays(1)
    rows = np.arange(len(arrays["actions"]))
    target_slot = np.stack([arrays["target"][rows, arrays["actions"][:, j], j] for j in range(3)], axis=1)
    logging_slot = np.stack([arrays["logging"][rows, arrays["actions"][:, j], j] for j in range(3)], axis=1)
    q_shown = np.stack([arrays["q_hat"][rows, arrays["actions"][:, j], j] for j in range(3)], axis=1)
    direct = (arrays["target"] * arrays["q_hat"]).sum(axis=1)
    ours = item_level(arrays["rewards"], target_slot, logging_slot, q_shown, direct)
    theirs = dict.fromkeys(("ips", "snips", "dm", "dr"), 0.0)
    for j in range(3):  # one bandit per slot; the list's value is the sum over its slots
        common = {
            "reward": arrays["rewards"][:, j],
            "action": arrays["actions"][:, j],
            "pscore": logging_slot[:, j],
            "action_dist": arrays["target"][:, :, j : j + 1],
        }
        q = arrays["q_hat"][:, :, j : j + 1]
        theirs["ips"] += ope.InverseProbabilityWeighting().estimate_policy_value(**common)
        theirs["snips"] += ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common)
        theirs["dm"] += ope.DirectMethod().estimate_policy_value(
            action_dist=common["action_dist"], estimated_rewards_by_reg_model=q
        )
        theirs["dr"] += ope.DoublyRobust().estimate_policy_value(**common, estimated_rewards_by_reg_model=q)
    for name, value in theirs.items():
        assert abs(ours[name].value - value) < 1e-9, (name, ours[name].value, value)
    # the same with OBP's slate estimator over (list, slot) rows
    flat = {
        "slate_id": np.repeat(rows, 3),
        "reward": arrays["rewards"].ravel(),
        "position": np.tile(np.arange(3), len(rows)),
        "pscore_item_position": logging_slot.ravel(),
        "evaluation_policy_pscore_item_position": target_slot.ravel(),
    }
    independent = ope.SlateIndependentIPS(len_list=3).estimate_policy_value(**flat)
    assert abs(ours["ips"].value - independent) < 1e-9


def test_list_level_estimators_equal_obp() -> None:
    ope = pytest.importorskip("obp.ope")
    rng = np.random.default_rng(2)
    n, k = 500, 3
    logging = rng.uniform(0.01, 0.3, n)  # π_0(s_i) of the logged list
    target = rng.uniform(0.0, 0.5, n)  # π_t(s_i)
    rewards = rng.binomial(1, 0.25, size=(n, k)).astype(float)
    q_shown = rng.uniform(0, 0.5, size=(n, k))
    direct = rng.uniform(0, 0.5, size=(n, k))
    ours = list_level(rewards, target, logging, q_shown, direct)
    flat = {
        "slate_id": np.repeat(np.arange(n), k),
        "reward": rewards.ravel(),
        "position": np.tile(np.arange(k), n),
        "pscore": np.repeat(logging, k),
        "evaluation_policy_pscore": np.repeat(target, k),
    }
    assert abs(ours["ips"].value - ope.SlateStandardIPS(len_list=k).estimate_policy_value(**flat)) < 1e-9
    # a list as one action among two (the logged list, and every other list), for the single-action estimators
    total, total_hat, dm = rewards.sum(axis=1), q_shown.sum(axis=1), direct.sum(axis=1)
    action_dist = np.stack([target, 1 - target], axis=1)[:, :, None]
    other = np.where(target < 1, (dm - target * total_hat) / np.where(target < 1, 1 - target, 1), 0.0)
    q = np.stack([total_hat, other], axis=1)[:, :, None]
    common = {"reward": total, "action": np.zeros(n, dtype=int), "pscore": logging, "action_dist": action_dist}
    theirs = {
        "ips": ope.InverseProbabilityWeighting().estimate_policy_value(**common),
        "snips": ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common),
        "dm": ope.DirectMethod().estimate_policy_value(action_dist=action_dist, estimated_rewards_by_reg_model=q),
        "dr": ope.DoublyRobust().estimate_policy_value(**common, estimated_rewards_by_reg_model=q),
    }
    for name, value in theirs.items():
        assert abs(ours[name].value - value) < 1e-9, (name, ours[name].value, value)


# -- logs with a known click model -----------------------------------------------------------------------------------
class World:
    """A pool of contexts (each: every eligible item's model score, best first, and its true click probability
    when examined) and a position-based click model: P(click at slot j) = examination[j] · relevance[item]."""

    def __init__(self, seed: int, n_contexts: int = 200, n_items: int = 8) -> None:
        rng = np.random.default_rng(seed)
        self.scores = -np.sort(-rng.normal(size=(n_contexts, n_items)) * 1.5, axis=1)
        # the model's scores are informative but not calibrated: item noise on the logit
        self.relevance = 1 / (1 + np.exp(-(0.8 * self.scores - 1.0 + rng.normal(0, 0.7, self.scores.shape))))
        self.examination = 0.9 / (1 + np.arange(n_items)) ** 0.7
        self.n_items = n_items

    def true_value(self, target: TargetPolicy, k: int) -> float:
        """The target's expected clicks per list over the context pool, from enumeration (softmax, greedy) or the
        ε-greedy slot marginals (checked against frequencies in tests/test_policies.py)."""
        values = []
        for scores, relevance in zip(self.scores, self.relevance, strict=True):
            if target.name == "epsilon":
                policy = EpsilonGreedy(target.config)
                q = policy.replacement_probabilities(k, self.n_items - k)
                marginals = np.zeros((self.n_items, k))
                marginals[np.arange(k), np.arange(k)] = 1 - q
                marginals[k:] = q / (self.n_items - k)
            elif target.name == "greedy":
                marginals = np.eye(self.n_items, k)
            else:
                n = min(target.config.candidates, self.n_items)
                marginals = np.zeros((self.n_items, k))
                marginals[:n] = enumerated(Softmax(target.config).weights(scores[:n]), k)
            values.append(float((marginals * relevance[:, None] * self.examination[None, :k]).sum()))
        return float(np.mean(values))

    def log(self, policy: Policy, n_lists: int, k: int, seed: int) -> list[tuple[Impression, list[Reward]]]:
        """Lists drawn by ``policy`` on contexts drawn uniformly from the pool, as impressions with their clicks."""
        rng = np.random.default_rng(seed)
        out = []
        for n in range(n_lists):
            context = int(rng.integers(len(self.scores)))
            candidates = Candidates(
                np.arange(self.n_items), self.scores[context], eligible=np.ones(self.n_items, dtype=bool)
            )
            slate = policy.select(candidates, k, rng)
            clicks = (
                rng.random(len(slate.items))
                < self.examination[: len(slate.items)] * self.relevance[context, slate.items]
            )
            impression = impression_of(slate, policy, f"r{n}", context)
            rewards = [
                Reward(impression.recommendation_id, impression.items[j], "click", j + 1, 1.0, 1.0, False, n)
                for j in np.flatnonzero(clicks).tolist()
            ]
            out.append((impression, rewards))
        return out


def impression_of(slate: object, policy: Policy, recommendation_id: str, context: int) -> Impression:
    """The impression the engine logs for a slate (item ids: ``c<context>-<index>``)."""
    from liverec.policies import Slate

    assert isinstance(slate, Slate)
    name = [f"c{context}-{i}" for i in range(1000)]
    nan_none = [None if math.isnan(s) else float(s) for s in slate.scores.tolist()]
    return Impression(
        recommendation_id=recommendation_id,
        user_id=f"u{context}",
        kind="user",
        items=[name[i] for i in slate.items.tolist()],
        scores=nan_none,
        propensities=slate.propensities.tolist(),
        list_propensities=[None if math.isnan(p) else p for p in slate.list_propensities.tolist()],
        slot_propensities=[None if math.isnan(p) else p for p in slate.slot_propensities.tolist()],
        explored=slate.explored.tolist(),
        model_version="v1",
        policy=policy.name,
        policy_settings=policy.settings(),
        served_at=1000.0 + int(recommendation_id[1:]),
        candidates=[name[i] for i in slate.candidates.tolist()],
        candidate_scores=slate.candidate_scores.tolist(),
        n_eligible=slate.n_eligible,
    )


def lists_of(log: list[tuple[Impression, list[Reward]]]) -> list[LoggedList]:
    lists, _ = logged_lists([i for i, _ in log], {i.recommendation_id: r for i, r in log})
    return lists


TARGET_POLICIES = [
    "greedy",
    "softmax:temperature=0.25,candidates=8",
    "softmax:temperature=0.5,candidates=8",
    "softmax:temperature=0.75,candidates=8",
    "softmax:temperature=1.5,candidates=8",
    "softmax:temperature=3,candidates=8",
    "softmax:temperature=0.5,candidates=4",
    "softmax:temperature=1,candidates=5",
    "epsilon:epsilon=0.05",
    "epsilon:epsilon=0.2",
    "epsilon:epsilon=0.5",
    "epsilon:epsilon=0.9",
]


def test_ips_of_the_logging_policy_is_its_observed_reward() -> None:
    world = World(0)
    logging_policy = create_policy("softmax", ExploreConfig(temperature=1.0, candidates=8))
    lists = lists_of(world.log(logging_policy, 600, 3, seed=1))
    [report] = evaluate(lists, [parse_policy("softmax:temperature=1,candidates=8")])
    observed = np.mean([item.rewards.sum() for item in lists])
    assert report.observed_reward == pytest.approx(observed, abs=1e-12)
    for level in (report.item, report.list):
        for name in ("ips", "snips"):
            assert abs(level[name].value - observed) < 1e-9, (name, level[name].value, observed)
    assert report.support_deficit["item_level"] == 0 and report.support_deficit["list_level"]["high"] == 0


def test_support_deficit_is_reported_not_hidden() -> None:
    world = World(1)
    greedy_log = lists_of(world.log(create_policy("greedy"), 50, 3, seed=2))
    [report] = evaluate(greedy_log, [parse_policy("softmax:temperature=1,candidates=8")])
    # greedy logged only its top 3: the softmax target is evaluated on them (and counted) ...
    assert report.notes["candidates_short"] == 50
    # ... and its mass on other lists than the greedy one is the list-level deficit, exactly
    expected = np.mean(
        [1 - TARGETS["softmax"](ExploreConfig(), item).slate_probability(item.shown) for item in greedy_log]
    )
    deficit = report.support_deficit
    assert deficit["list_level"]["low"] == deficit["list_level"]["high"] == pytest.approx(expected, abs=1e-12)
    assert 0 < deficit["item_level"] < 1 and deficit["lists_with_deficit"] == 50
    # a softmax log supports every greedy list: no deficit the other way round
    softmax_log = lists_of(world.log(create_policy("softmax", ExploreConfig(candidates=8)), 50, 3, seed=3))
    [back] = evaluate(softmax_log, [parse_policy("greedy")])
    assert back.support_deficit["item_level"] == 0 and back.support_deficit["list_level"]["high"] == 0


def coverage(seeds: range, n_lists: int, min_effective: float = 0.0) -> dict[str, float]:
    """Share of (target, seed) pairs whose 95 % interval covers the true value, per level and estimator; list
    level: among the pairs whose effective number of lists is at least ``min_effective``."""
    world = World(42)
    logging_policy = create_policy("softmax", ExploreConfig(temperature=1.0, candidates=8))
    targets = [parse_policy(text) for text in TARGET_POLICIES]
    truth = [world.true_value(target, 3) for target in targets]
    covered: collections.Counter[str] = collections.Counter()
    counted: collections.Counter[str] = collections.Counter()
    for seed in seeds:
        reports = evaluate(lists_of(world.log(logging_policy, n_lists, 3, seed=seed)), targets)
        for report, value in zip(reports, truth, strict=True):
            assert report.support_deficit["item_level"] == 0 and report.support_deficit["list_level"]["high"] == 0
            for name in ("ips", "snips", "dr"):
                covered[f"item.{name}"] += report.item[name].covers(value)
                counted[f"item.{name}"] += 1
                if report.effective_lists["list_level"] >= min_effective:
                    covered[f"list.{name}"] += report.list[name].covers(value)
                    counted[f"list.{name}"] += 1
    return {key: covered[key] / counted[key] for key in sorted(counted)}


def test_intervals_cover_the_true_value() -> None:
    """12 target policies on one log of 3,000 lists: the 95 % intervals cover the truth for >= 90 % of them."""
    shares = coverage(range(1), 3000)
    assert all(share >= 0.9 for share in shares.values()), shares


@pytest.mark.slow
def test_intervals_cover_the_true_value_over_seeds() -> None:
    """12 targets × 10 independent logs of 3,000 lists (120 intervals per estimator): every level and estimator
    covers the truth >= 90 % of the time (nominal 95 %). List level needs the empirical-likelihood interval: the
    slate weights are heavy-tailed (effective lists down to 9 of 3,000 for ε = 0.9) and the normal interval
    covered 83 % (IPS) / 88 % (SNIPS) here; with it, 95.8 % / 95.8 % / 100 % (DR) — docs/results.md."""
    shares = coverage(range(10), 3000)
    assert all(share >= 0.9 for share in shares.values()), shares


def test_the_likelihood_interval_widens_where_the_log_cannot_tell() -> None:
    """A target the log never drew (every weight 0) has an interval over the whole reward range, where the normal
    one collapses to [0, 0]; a target drawn once in a few hundred lists, an interval much wider than on-policy."""
    rng = np.random.default_rng(5)
    rewards = rng.binomial(3, 0.2, size=2000).astype(float)
    low, high = likelihood_interval(np.zeros(2000), rewards, (0.0, 3.0), 0.95)
    assert low == pytest.approx(0.0, abs=1e-6) and high == pytest.approx(3.0, abs=1e-2)
    assert Estimate.normal(0.0, np.zeros(2000), 0.95).high == 0.0
    on_policy = likelihood_interval(np.ones(2000), rewards, (0.0, 3.0), 0.95)
    rare = np.where(rng.random(2000) < 1 / 300, 300.0, 0.0)
    off_policy = likelihood_interval(rare, rewards, (0.0, 3.0), 0.95)
    assert on_policy[0] < rewards.mean() < on_policy[1]
    assert off_policy[1] - off_policy[0] > 5 * (on_policy[1] - on_policy[0])


def test_on_policy_the_likelihood_interval_matches_the_normal_one() -> None:
    """Every weight 1 (the logging policy itself): the interval is the usual one for a mean, to within 5 %."""
    rewards = np.random.default_rng(6).binomial(3, 0.2, size=5000).astype(float)
    low, high = likelihood_interval(np.ones(5000), rewards, (0.0, 3.0), 0.95)
    normal = Estimate.normal(rewards.mean(), rewards, 0.95)
    assert low == pytest.approx(normal.low, rel=0.05) and high == pytest.approx(normal.high, rel=0.05)


def test_recomputed_propensities_equal_the_logged_ones() -> None:
    """What OPE recomputes for the logging policy from a stored list is what the policy logged when it drew it."""
    from liverec.ope import logging_distribution

    world = World(4)
    for policy in (
        create_policy("epsilon", ExploreConfig(epsilon=0.4)),
        create_policy("softmax", ExploreConfig(temperature=0.7, candidates=6)),
        create_policy("greedy"),
    ):
        for item in lists_of(world.log(policy, 200, 3, seed=5)):
            dist = logging_distribution(item)
            assert dist.name == policy.name
            assert math.isclose(dist.slate_probability(item.shown), item.slate_propensity, rel_tol=1e-12)
            marginals, _ = dist.marginals()
            known = np.isfinite(item.slot_propensities)
            assert known[0], "the first slot's marginal is always logged"
            recomputed = marginals[item.shown, np.arange(item.k)]
            assert np.abs(recomputed[known] - item.slot_propensities[known]).max() < 1e-12


# -- records, parsing, the command line ------------------------------------------------------------------------------
def test_impressions_keep_what_the_policy_chose_from() -> None:
    world = World(2)
    [(impression, _)] = world.log(create_policy("epsilon", ExploreConfig(epsilon=0.5)), 1, 3, seed=0)
    again = Impression.from_json(json.loads(json.dumps(impression.to_json())))
    assert again == impression and len(again.candidates) == 3 and again.n_eligible == world.n_items
    older = {key: value for key, value in impression.to_json().items() if key not in ("candidates", "n_eligible")}
    [item] = logged_lists([Impression.from_json(older)], {})[0]
    assert not item.candidates_logged and item.n_candidates == 3, "an older record: the shown items stand in"


def test_parse_policy() -> None:
    target = parse_policy("softmax:temperature=0.5, candidates=20")
    assert target.name == "softmax" and target.config.temperature == 0.5 and target.config.candidates == 20
    assert parse_policy("greedy").label == "greedy"
    for text, message in [
        ("thompson", "expected one of"),
        ("cold", "cannot be evaluated"),
        ("softmax:heat=2", "unknown setting 'heat'"),
        ("softmax:temperature=hot", "expects a number"),
        ("epsilon:epsilon=2", "epsilon"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_policy(text)


def write_log(data_dir: Path, log: list[tuple[Impression, list[Reward]]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.log_impressions([impression for impression, _ in log])
        event_log.log_rewards([reward for _, rewards in log for reward in rewards])
        event_log.flush()


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    world = World(3)
    log = world.log(create_policy("softmax", ExploreConfig(temperature=1.0, candidates=8)), 300, 3, seed=4)
    write_log(tmp_path / "data", log)
    argv = ["ope", "--data-dir", str(tmp_path / "data"), "--policy", "greedy", "--policy", "softmax:temperature=0.5"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["impressions"] == 300 and out["logging_policies"] == {"softmax": 300}
    assert [p["policy"] for p in out["policies"]] == ["greedy", "softmax:temperature=0.5,candidates=50"]
    expected = evaluate(lists_of(log), [parse_policy("greedy"), parse_policy("softmax:temperature=0.5")])
    for got, want in zip(out["policies"], expected, strict=True):
        assert set(got) == {
            "policy",
            "lists",
            "slots",
            "observed_reward",
            "item_level",
            "list_level",
            "support_deficit",
            "effective_lists",
            "notes",
        }
        assert got["effective_lists"] == pytest.approx(want.effective_lists, rel=1e-12)
        for level, estimates in (("item_level", want.item), ("list_level", want.list)):
            assert set(got[level]) == {"ips", "snips", "dm", "dr"}
            for name, estimate in estimates.items():
                want_json = estimate.to_json()
                assert got[level][name].pop("interval") == want_json.pop("interval")
                assert got[level][name] == pytest.approx(want_json, rel=1e-12)
                assert got[level][name]["low"] <= got[level][name]["high"]
                if estimate.interval == "normal":  # the likelihood interval is centred on no one estimate
                    assert got[level][name]["low"] <= got[level][name]["value"] <= got[level][name]["high"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "softmax:temperature=0.5,candidates=50" in table and "support deficit" in table


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_log(tmp_path / "empty", [])
    for argv, message in [
        (["--data-dir", str(tmp_path / "empty"), "--policy", "greedy"], "no served lists"),
        (["--data-dir", str(tmp_path / "missing"), "--policy", "greedy"], "no event log"),
        (["--data-dir", str(tmp_path / "empty"), "--policy", "cold"], "cannot be evaluated"),
        (["--data-dir", str(tmp_path / "empty"), "--policy", "greedy", "--confidence", "95"], "--confidence"),
    ]:
        assert main(["ope", *argv, "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1, captured.err
