"""The simulator: its click model, the oracle and the true value of a policy, a run through the serving engine
(determinism, new items, logs as serving writes them), and ``liverec simulate`` on the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from liverec.cli import main
from liverec.data.synthetic import SECONDS_PER_DAY, SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.ope import parse_policy
from liverec.policies import Candidates, ExploreConfig, create_policy
from liverec.registry import ModelRegistry
from liverec.simulation import (
    ClickModel,
    Context,
    SimulationConfig,
    Simulator,
    expected_reward,
    list_reward,
    oracle_reward,
    true_value,
)

#: A world small enough for runs of about a second (MF learns online in it; the default model, SASRec, is slower).
TINY = SimulationConfig(
    n_users=60, n_items=60, n_clusters=4, past_events=1200, horizon=240, batch=8, update_every=40, gate_events=20,
    windows=4, new_item_fraction=0.3, model="mf-bpr", model_params={"n_epochs": 5}, gate_margin=1.0,
)  # fmt: skip


def test_examination_decays_with_position() -> None:
    model = ClickModel(examination_decay=1.0)
    assert model.examination(4).tolist() == [1.0, 0.5, 1 / 3, 0.25]
    assert ClickModel(examination_decay=0.0).examination(3).tolist() == [1.0, 1.0, 1.0]


def test_clicks_are_position_biased() -> None:
    """The same item, equally relevant everywhere, is clicked in proportion to its position's examination."""
    model = ClickModel(examination_decay=1.0)
    rng = np.random.default_rng(0)
    relevance, k, draws = 0.6, 5, 40_000
    clicks = rng.random((draws, k)) < model.examination(k) * relevance
    observed = clicks.mean(axis=0)
    expected = model.examination(k) * relevance
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / draws))
    assert np.all(np.diff(observed) < 0)


def test_relevance_is_a_probability_that_follows_the_truth_and_favours_new_releases() -> None:
    _, truth = generate(SyntheticConfig(n_users=20, n_items=40, n_events=200, n_clusters=4, seed=1))
    model = ClickModel(novelty_boost=2.0, novelty_half_life_days=5.0)
    new = int(np.flatnonzero(truth.release_time > 0)[0])
    release = truth.release_time[new]
    users = np.zeros(3, dtype=np.int64)
    times = np.array([release - 1.0, release, release + 5 * SECONDS_PER_DAY])
    relevance = model.relevance(truth, users, times, np.full(3, -1))
    assert relevance.shape == (3, truth.n_items) and np.all((relevance >= 0) & (relevance < 1))
    assert relevance[0, new] == 0.0, "nothing before its release"
    novelty = model.novelty(truth, times)[:, new]
    assert novelty.tolist() == pytest.approx([1.0, 3.0, 2.0]), "1 + boost at release, half the extra a half-life on"
    p = truth.next_item_probabilities_batch(users, times, np.full(3, -1))
    order = np.argsort(p[1] * model.novelty(truth, times)[1])
    assert np.all(np.diff(relevance[1][order]) >= 0), "monotone in the truth's probability times the novelty"


def test_oracle_reward_is_the_best_list_and_beats_every_policy() -> None:
    rng = np.random.default_rng(3)
    n, k = 30, 5
    examination = ClickModel().examination(k)
    relevance = rng.random(n) * 0.5
    eligible = rng.random(n) < 0.7
    best = oracle_reward(relevance, eligible, examination)
    by_hand = np.sort(relevance[eligible])[::-1][:k] @ examination
    assert best == pytest.approx(by_hand)
    for _ in range(200):  # any list of eligible items earns at most the oracle's
        shown = rng.choice(np.flatnonzero(eligible), size=k, replace=False)
        assert list_reward(relevance, shown, examination) <= best + 1e-12
    scores = rng.normal(size=n)
    ranked = np.argsort(-np.where(eligible, scores, -np.inf))[: int(eligible.sum())]
    context = Context(
        "u0", 0.0, Candidates(ranked, scores[ranked], eligible, rng.random(n) < 0.2), relevance, examination,
        ranked[:k], "r", "greedy",
    )  # fmt: skip
    assert context.oracle() == pytest.approx(best)
    for name in ("greedy", "epsilon", "softmax", "cold"):
        value, _ = expected_reward(create_policy(name, ExploreConfig(candidates=20)), context, n_draws=500)
        assert value <= best + 1e-12, name


def test_true_value_matches_the_lists_the_policies_draw() -> None:
    """The exact ε-greedy value and the vectorised softmax draws agree with lists drawn by ``select``."""
    rng = np.random.default_rng(5)
    n, k = 25, 4
    examination = ClickModel().examination(k)
    relevance = rng.random(n) * 0.4
    eligible = np.ones(n, dtype=bool)
    eligible[:3] = False
    scores = np.sort(rng.normal(size=n - 3))[::-1]
    ranked = np.arange(3, n)
    context = Context(
        "u0", 0.0, Candidates(ranked, scores, eligible, np.zeros(n, dtype=bool)), relevance, examination, ranked[:k],
        "r", "epsilon",
    )  # fmt: skip
    for name, config in (("epsilon", ExploreConfig(epsilon=0.3)), ("softmax", ExploreConfig(temperature=0.5))):
        policy = create_policy(name, config)
        draws = np.array(
            [list_reward(relevance, policy.select(context.candidates, k, rng).items, examination) for _ in range(6_000)]
        )
        value = true_value(policy, [context], n_draws=6_000, seed=1)
        bound = 5 * (draws.std() / np.sqrt(len(draws)) + value.standard_error)
        assert abs(value.value - draws.mean()) < bound, name
        assert value.exact == (name == "epsilon")


def test_a_target_policy_needing_more_candidates_than_logged_is_refused() -> None:
    n, k = 30, 5
    context = Context(
        "u0", 0.0, Candidates(np.arange(k), np.zeros(k), np.ones(n, dtype=bool), np.zeros(n, dtype=bool)),
        np.full(n, 0.1), ClickModel().examination(k), np.arange(k), "r", "greedy",
    )  # fmt: skip
    with pytest.raises(ValueError, match="softmax"):
        expected_reward(create_policy("softmax", ExploreConfig(candidates=20)), context)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulator, Path]:
    simulator = Simulator(TINY)
    prepared = tmp_path_factory.mktemp("prepared") / "data"
    simulator.prepare(0, prepared)
    return simulator, prepared


def test_a_run_is_deterministic_for_a_seed(tiny: tuple[Simulator, Path]) -> None:
    simulator, prepared = tiny
    first = simulator.run("epsilon", 0, prepared=prepared)
    second = simulator.run("epsilon", 0, prepared=prepared)
    for name in ("clicks", "expected", "oracle", "arrived_at", "first_click_at", "first_shown_at"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.clicks.sum() > 0 and first.versions >= 1, "clicks happen and the model is updated online"


def test_new_items_arrive_during_a_run_and_can_be_clicked(tiny: tuple[Simulator, Path], tmp_path: Path) -> None:
    simulator, prepared = tiny
    world = simulator.world(0)
    # the generator releases them after the past's share of its span; the first visit comes about then
    planned = np.flatnonzero(world.truth.release_time > 0)
    assert len(planned) == round(TINY.new_item_fraction * TINY.n_items) and len(world.new_items) >= 0.8 * len(planned)
    assert np.all(world.truth.release_time[world.new_items] > world.start)
    run = simulator.run("epsilon", 0, tmp_path / "run", prepared=prepared, record_contexts=True)
    assert np.all(run.arrived_at >= 0) and np.all(np.diff(run.arrived_at) >= 0), "released in order, all of them"
    assert (run.first_click_at >= 0).any(), "explored new items get clicks"
    clicked = run.first_click_at >= 0
    assert np.all(run.first_click_at[clicked] >= run.arrived_at[clicked])
    assert np.all(run.first_shown_at[clicked] <= run.first_click_at[clicked])
    assert np.all(run.oracle >= run.expected - 1e-12), "the oracle's list is worth at least the served one"
    # the log holds every served list with its propensities, and the rewards joined to them, as serving writes them
    assert run.data_dir is not None
    with SQLiteEventLog(run.data_dir / "events.db", readonly=True) as log:
        assert log.count_impressions() == TINY.horizon
        context = run.contexts[7]
        logged = log.get_impressions([context.recommendation_id])[context.recommendation_id]
        assert logged.policy == "epsilon" and len(logged.propensities) == TINY.k
        rewards = [log.get_rewards(c.recommendation_id) for c in run.contexts]
    assert sum(len(r) for r in rewards) == run.clicks.sum()
    # a context's relevance and candidates are in the engine's item indices: the served list's value agrees
    for visit in (0, 100, 200):
        context = run.contexts[visit]
        assert list_reward(context.relevance, context.shown, context.examination) == pytest.approx(run.expected[visit])
        assert context.oracle() == pytest.approx(run.oracle[visit])


def test_new_items_reach_a_side_feature_model_with_their_categories(tmp_path: Path) -> None:
    """The default model (SASRec with side features) learns the catalogue's category of every item it holds, new
    ones included: the simulator puts an item with its category before it can be shown, the updater hands the
    categories to the model when it grows its table."""
    config = dataclasses.replace(
        TINY, model="sasrec", model_params={"max_epochs": 2, "partial_fit_epochs": 1}, horizon=160, windows=2
    )
    assert SimulationConfig().params()["side_features"] is True and config.params()["side_features"] is True
    simulator = Simulator(config)
    run = simulator.run("cold", 0, tmp_path / "run")
    assert run.versions >= 1 and run.data_dir is not None
    loaded = ModelRegistry(run.data_dir / "models").load(ModelRegistry(run.data_dir / "models").promoted())
    model, truth = loaded.model, simulator.world(0).truth
    assert model.has_item_features() and model.feature_names is not None
    features = model.item_features.toarray()
    assert features.shape[0] == len(loaded.item_ids) == model.n_items
    for row, item_id in enumerate(loaded.item_ids):
        assert features[row].sum() == 1
        assert model.feature_names[int(features[row].argmax())] == f"cluster{truth.item_cluster[int(item_id[1:])]}"
    new = set(simulator.world(0).new_items.tolist())
    assert any(int(item_id[1:]) in new for item_id in loaded.item_ids), "a new item joined the model"


def test_cli_json_shape_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "simulate.png"
    code = main(
        ["simulate", "--json", "--quiet", "--policies", "greedy,epsilon", "--seeds", "0,1", "--horizon", "120",
         "--users", "50", "--items", "50", "--clusters", "4", "--past-events", "800", "--batch", "8", "--windows",
         "3", "--update-every", "40", "--gate-events", "20", "--model", "mf-bpr", "--param", "n_epochs=3", "--plot",
         str(plot)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seeds"] == [0, 1] and set(report["policies"]) == {"greedy", "epsilon"}
    epsilon = report["policies"]["epsilon"]
    assert len(epsilon["cumulative_reward"]["per_seed"]) == 2 and epsilon["cumulative_reward"]["se"] is not None
    assert len(epsilon["ctr_per_window"]["mean"]) == 3
    assert epsilon["regret"]["mean"] > 0 and "vs_greedy_pct" in epsilon
    assert set(epsilon["new_items"]) >= {"median_visits_to_first_click", "never_clicked_share", "sooner_than_greedy"}
    assert set(report["goal"]["policies"]) == {"epsilon"} and isinstance(report["goal"]["met"], bool)
    assert report["setting"]["horizon"] == 120 and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--policies", "greedy,bandit"], "--policies"),
        (["--seeds", "0,x"], "--seeds"),
        (["--horizon", "0"], "--horizon"),
        (["--epsilon", "1.5"], "--epsilon"),
        (["--new-item-fraction", "1.0"], "--new-item-fraction"),
        (["--param", "nope=1"], "--param"),
    ],
)
def test_cli_bad_option_is_one_line_and_exit_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--json", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err


@pytest.mark.slow  # 5 seeds x 2 policies at a small setting (about a minute)
def test_exploring_finds_new_items_sooner_than_greedy() -> None:
    """The direction the simulator is for: an exploring policy gets new items clicked sooner than greedy."""
    from liverec.simulation.report import simulate

    config = SimulationConfig(horizon=1500, model="mf-bpr", explore=ExploreConfig(epsilon=0.1))
    report = simulate(config, ["greedy", "epsilon"], [0, 1, 2, 3, 4])
    sooner = report["policies"]["epsilon"]["new_items"]["sooner_than_greedy"]
    assert sooner["mean"] - 2 * sooner["se"] > 1.0


@pytest.mark.slow  # two logged runs of 600 visits (MF) and 19 targets: about 15 s
def test_off_policy_intervals_cover_the_true_value_on_simulator_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liverec ope`` on a simulator's data folder against each target's true value on the recorded contexts (a
    small version of benchmarks/bench_ope_sim.py: item level covered all 19 targets when written; 96-99 % over 5
    seeds of 3,000 visits in docs/results.md, "On simulator logs", and list level, with its empirical-likelihood
    intervals, 100 %). The logging policy's IPS is its observed reward, which is the simulator's clicks."""
    explore = ExploreConfig(temperature=0.3, epsilon=0.2, candidates=50)
    simulator = Simulator(SimulationConfig(horizon=600, model="mf-bpr", explore=explore))
    prepared = tmp_path / "prepared"
    simulator.prepare(0, prepared)
    logs = {
        "softmax": [
            "greedy",
            *(f"softmax:temperature={t},candidates=50" for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)),
            "softmax:temperature=0.1,candidates=10",
            "softmax:temperature=0.3,candidates=20",
        ],
        "epsilon": ["greedy", *(f"epsilon:epsilon={e}" for e in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0))],
    }
    own = {"softmax": "softmax:temperature=0.3,candidates=50", "epsilon": "epsilon:epsilon=0.2"}
    covered = {(level, name): 0 for level in ("item_level", "list_level") for name in ("ips", "snips", "dr")}
    counted = 0
    for logging, targets in logs.items():
        run = simulator.run(logging, 0, tmp_path / logging, prepared=prepared, record_contexts=True)
        argv = ["ope", "--data-dir", str(run.data_dir), "--json"]
        assert main([*argv, *(arg for target in targets for arg in ("--policy", target))]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["impressions"] == len(run.contexts) == 600
        observed = report["policies"][0]["observed_reward"]
        assert observed * 600 == pytest.approx(run.clicks.sum(), abs=1e-9), "the joined rewards are the clicks"
        for text, estimate in zip(targets, report["policies"], strict=True):
            assert estimate["support_deficit"]["item_level"] == 0, text
            target = parse_policy(text)
            truth = true_value(create_policy(target.name, target.config), run.contexts, n_draws=500, seed=1)
            item = estimate["item_level"]
            if text == own[logging]:
                assert item["ips"]["value"] == pytest.approx(observed, abs=1e-9)
                assert item["snips"]["value"] == pytest.approx(observed, abs=1e-9)
                assert estimate["list_level"]["ips"]["value"] == pytest.approx(observed, abs=1e-9)
            for level, name in covered:
                interval = estimate[level][name]
                covered[level, name] += interval["low"] <= truth.value <= interval["high"]
            counted += 1
    assert counted >= 10
    assert all(hits / counted >= 0.8 for hits in covered.values()), (covered, counted)
