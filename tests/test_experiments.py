"""Experiments without a server: sticky assignment by hash (its split, its stability across processes), the
statistics against SciPy's own tests and a hand-made fixture, validation, and both stores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from liverec.events.impressions import Impression, Reward, join_rewards
from liverec.experiments import (
    SRM_ALPHA,
    Arm,
    Experiment,
    ExperimentConflict,
    RedisExperimentStore,
    SQLiteExperimentStore,
    assignment_point,
    experiment_report,
    mean_interval,
    sample_ratio_test,
    welch_test,
)


def three_arms(experiment_id: str = "exp-a") -> Experiment:
    return Experiment(
        experiment_id,
        (Arm("control", 0.5), Arm("b", 0.3, policy="epsilon"), Arm("c", 0.2, model_version="v0002")),
        created_at=1000.0,
    )


# -- assignment -------------------------------------------------------------------------------------------------
def test_assignment_over_100k_users_is_sticky_and_within_one_percent_of_the_shares() -> None:
    experiment = three_arms()
    users = [f"user-{n}" for n in range(100_000)]
    arms = [experiment.assign(user).name for user in users]
    counts = {arm.name: arms.count(arm.name) for arm in experiment.arms}
    for arm in experiment.arms:
        assert abs(counts[arm.name] / len(users) - arm.share) <= 0.01, counts
    assert [experiment.assign(user).name for user in users[:2000]] == arms[:2000], "sticky"
    _, p = sample_ratio_test([counts[arm.name] for arm in experiment.arms], [arm.share for arm in experiment.arms])
    assert p is not None and p > SRM_ALPHA


def test_another_experiment_id_reshuffles_the_users_independently() -> None:
    first, second = three_arms("exp-a"), three_arms("exp-b")
    users = [f"user-{n}" for n in range(20_000)]
    table = np.zeros((3, 3))
    names = [arm.name for arm in first.arms]
    for user in users:
        table[names.index(first.assign(user).name), names.index(second.assign(user).name)] += 1
    # independent assignments: the contingency table shows no association
    assert stats.chi2_contingency(table).pvalue > SRM_ALPHA
    same = np.trace(table) / len(users)
    assert abs(same - (0.5**2 + 0.3**2 + 0.2**2)) < 0.02


def test_assignment_is_the_same_in_another_process() -> None:
    users = [f"u{n}" for n in range(200)] + ["ps-0f3a", "ünïcode", "x" * 300]
    here = [assignment_point("exp-a", user) for user in users]
    code = (
        "import json, sys; from liverec.experiments import assignment_point; "
        "print(json.dumps([assignment_point('exp-a', u) for u in json.loads(sys.stdin.read())]))"
    )
    # another interpreter with another hash seed: nothing may depend on Python's own (salted) hash
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(users),
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        check=True,
    )
    assert json.loads(done.stdout) == here
    assert all(0.0 <= point < 1.0 for point in here)


# -- statistics -------------------------------------------------------------------------------------------------
def test_welch_test_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    for n_a, n_b, shift in ((40, 60, 0.0), (500, 300, 0.2), (7, 9, 1.0)):
        a = rng.exponential(1.0, n_a)
        b = rng.exponential(1.0, n_b) + shift
        ours = welch_test(a, b)
        theirs = stats.ttest_ind(b, a, equal_var=False)
        assert ours.t == pytest.approx(theirs.statistic, rel=1e-9)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
        assert ours.df == pytest.approx(theirs.df, rel=1e-9)
        low, high = theirs.confidence_interval(0.95)
        assert (ours.low, ours.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
        assert ours.difference == pytest.approx(b.mean() - a.mean())


def test_welch_test_edge_cases() -> None:
    zeros = np.zeros(5)
    assert welch_test(zeros, zeros).p_value == 1.0
    assert welch_test(zeros, np.ones(5)).p_value == 0.0  # no noise at all: the difference is certain
    assert welch_test(np.array([]), zeros).difference is None
    single = welch_test(np.array([1.0]), zeros)
    assert single.difference == -1.0 and single.p_value is None


def test_mean_interval_equals_scipy_t_interval() -> None:
    values = np.random.default_rng(1).poisson(0.3, 250).astype(float)
    mean, low, high = mean_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    assert mean_interval(np.array([])) == (None, None, None)
    assert mean_interval(np.array([2.0])) == (2.0, None, None)


def test_sample_ratio_test_equals_scipy_and_flags_a_broken_split() -> None:
    statistic, p = sample_ratio_test([5_200, 4_800], [0.5, 0.5])
    theirs = stats.chisquare([5_200, 4_800], [5_000, 5_000])
    assert statistic == pytest.approx(theirs.statistic) and p == pytest.approx(theirs.pvalue)
    assert p is not None and p < SRM_ALPHA  # 4 % off over 10,000 users is no accident
    _, fine = sample_ratio_test([5_030, 2_990, 1_980], [0.5, 0.3, 0.2])
    assert fine is not None and fine > 0.05
    assert sample_ratio_test([0, 0], [0.5, 0.5]) == (None, None)


def impression(
    rid: str, user: str | None, arm: str | None, experiment: str | None = "exp-a", **extra: object
) -> Impression:
    return Impression(
        recommendation_id=rid,
        user_id=user,
        kind="user",
        items=["i1", "i2", "i3"],
        scores=[0.3, 0.2, 0.1],
        propensities=[1.0, 1.0, 1.0],
        list_propensities=[1.0, 1.0, 1.0],
        explored=[False, False, False],
        model_version="v0001",
        policy="greedy",
        policy_settings={},
        served_at=100.0,
        experiment_id=experiment,
        arm=arm,
        **extra,  # type: ignore[arg-type]
    )


def reward(rid: str, value: float, late: bool = False) -> Reward:
    return Reward(rid, "i2", "click", 2, value, 5.0, late, 1)


def test_report_by_hand() -> None:
    experiment = Experiment(
        "exp-a", (Arm("control", 0.5), Arm("treatment", 0.5), Arm("candidate", shadow=True, policy="softmax"))
    )
    impressions = [
        impression("c1", "u1", "control"),
        impression("c2", "u1", "control"),
        impression("c3", "u2", "control"),
        impression("t1", "u3", "treatment"),
        impression("t2", "u4", "treatment"),
        impression("s1", "u3", "candidate", shadow=True, live_recommendation_id="t1"),
        impression("x1", "u9", "control", experiment="exp-other"),  # another experiment's list
        impression("n1", "u9", None, experiment=None),  # outside any experiment
    ]
    rewards = {
        "c1": [reward("c1", 1.0)],
        "c3": [reward("c3", 5.0), reward("c3", 1.0, late=True)],  # the late one does not count
        "t1": [reward("t1", 1.0), reward("t1", 2.0)],
        "t2": [reward("t2", 1.0)],
        "s1": [reward("s1", 9.0)],  # cannot happen (never joined); even so a shadow earns nothing
        "x1": [reward("x1", 100.0)],
    }
    report = experiment_report(experiment, impressions, rewards)
    control, treatment, candidate = report["arms"]
    assert (control["impressions"], control["users"], control["reward"]) == (3, 2, 6.0)
    assert control["reward_rate"] == pytest.approx(2.0)
    assert (treatment["impressions"], treatment["users"], treatment["reward"]) == (2, 2, 4.0)
    assert treatment["reward_rate"] == pytest.approx(2.0) and treatment["difference"] == pytest.approx(0.0)
    expected = stats.ttest_ind([3.0, 1.0], [1.0, 0.0, 5.0], equal_var=False)
    assert treatment["p_value"] == pytest.approx(expected.pvalue)
    assert candidate["shadow"] and (candidate["impressions"], candidate["users"]) == (1, 1)
    assert candidate["reward"] is None and candidate["p_value"] is None
    assert report["control"] == "control" and "Welch" in report["test"]
    users = stats.chisquare([2, 2], [2, 2])
    assert report["sample_ratio"]["users_p_value"] == pytest.approx(users.pvalue)
    assert report["sample_ratio"]["mismatch"] is False


# -- validation and records -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ((Arm("a", 0.5), Arm("b", 0.4)), "shares must sum to 1, got 0.9 (a=0.5, b=0.4)"),
        ((Arm("a", 0.5), Arm("a", 0.5)), "arm names must be unique, 'a' repeated"),
        ((Arm("s", shadow=True), Arm("a", 1.0)), "the first arm is the control and must be live"),
        ((Arm("s", shadow=True),), "expected at least one live arm"),
    ],
)
def test_an_invalid_experiment_names_what_is_wrong(arms: tuple[Arm, ...], message: str) -> None:
    with pytest.raises(ValueError, match="arms: ") as error:
        Experiment("e", arms)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"share": 0.0}, "share: expected a number in (0, 1], got 0.0"),
        ({"share": 0.5, "shadow": True}, "a shadow arm gets no traffic, expected 0, got 0.5"),
        ({"share": 1.0, "policy": "bandit"}, "policy: expected one of cold, epsilon, greedy, softmax, got 'bandit'"),
        ({"share": 1.0, "policy_settings": {"eps": 0.1}}, "unknown setting(s) eps"),
        ({"share": 1.0, "policy_settings": {"epsilon": 2.0}}, "policy_settings.epsilon: expected a probability"),
        ({"share": 1.0, "policy_settings": {"candidates": 2.5}}, "candidates: expected an integer, got 2.5"),
    ],
)
def test_an_invalid_arm_names_the_field_and_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as error:
        Arm("a", **kwargs)  # type: ignore[arg-type]
    assert message in str(error.value)


def test_experiment_json_round_trip_and_status() -> None:
    experiment = three_arms()
    again = Experiment.from_json(json.loads(json.dumps(experiment.to_json())))
    assert again == experiment
    stopped = experiment.with_status("stopped")
    assert stopped.status == "stopped" and stopped.stopped_at is not None
    promoted = stopped.with_status("promoted", winner="b")
    assert promoted.stopped_at == stopped.stopped_at and promoted.winner == "b"


def test_impression_fields_are_additive_and_a_shadow_list_joins_nothing() -> None:
    plain = impression("r0", "u1", None, experiment=None)
    assert set(plain.to_json()) == set(Impression.from_json(plain.to_json()).to_json())
    assert "shadow" not in plain.to_json() and "experiment_id" not in plain.to_json()
    old = {k: v for k, v in plain.to_json().items() if k not in ("positions", "slate_propensity")}
    assert Impression.from_json(old) == plain  # a list logged before these fields reads as it was
    shadow = impression("s1", "u1", None, experiment=None, shadow=True, live_recommendation_id="r0")
    assert Impression.from_json(shadow.to_json()) == shadow and shadow.to_json()["shadow"] is True

    class Click:
        item_id, type, timestamp, offset = "i1", "click", 101.0, 7

        def __init__(self, rid: str) -> None:
            self.recommendation_id = rid

    report = join_rewards([Click("r0"), Click("s1")], {"r0": plain, "s1": shadow}, {"click": 1.0}, 60.0)
    assert [r.recommendation_id for r in report.rewards] == ["r0"] and report.unjoined == {"unknown": 1}


# -- stores -----------------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield SQLiteExperimentStore(tmp_path / "experiments.db")
        return
    from liverec.events.redis_log import redis_client

    client = redis_client(request.getfixturevalue("redis_url"))
    yield RedisExperimentStore(client, request.getfixturevalue("redis_prefix"))
    client.close()


def test_store_keeps_one_running_experiment_and_the_serving_policy(store) -> None:  # type: ignore[no-untyped-def]
    first = three_arms("exp-a")
    store.create(first)
    assert store.get("exp-a") == first and store.running() == first and store.get("nope") is None
    with pytest.raises(ExperimentConflict, match="'exp-a' is running"):
        store.create(three_arms("exp-b"))
    with pytest.raises(ExperimentConflict, match=r"exp-a.*exists"):
        store.create(three_arms("exp-a"))
    stopped = first.with_status("stopped")
    store.replace(first, stopped)
    with pytest.raises(ExperimentConflict, match="changed meanwhile"):
        store.replace(first, first.with_status("promoted", winner="b"))  # built on what is no longer stored
    assert store.running() is None and store.get("exp-a") == stopped
    second = Experiment("exp-b", first.arms, created_at=2000.0)
    store.create(second)
    assert [e.experiment_id for e in store.experiments()] == ["exp-a", "exp-b"]
    assert store.serving_policy() is None
    store.set_serving_policy("epsilon", {"epsilon": 0.2})
    assert store.serving_policy() == {"policy": "epsilon", "policy_settings": {"epsilon": 0.2}}
