"""The test-then-train replay equals a plain predict-then-learn loop written out event by event.

The reference loop below shares no code with ``liverec.evaluation.replay`` except the models and the
online learner (what is being measured): it sorts and renumbers the events with Python, keeps each
user's history in a list, scores one event at a time with ``model.score``, excludes the seen items
and computes the target's rank itself.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liverec.cli import main
from liverec.data.interactions import Dataset, Histories, IdMap, Interactions
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.evaluation.replay import ARMS, ReplayConfig, replay
from liverec.models import Recommender, create_model
from liverec.online import LearnerConfig, OnlineLearner

SMALL_SASREC = {
    "dim": 16,
    "max_len": 20,
    "batch_size": 32,
    "max_epochs": 3,
    "patience": 3,
    "n_threads": 1,
    "seed": 0,
}


def reference_replay(
    dataset: Dataset,
    params: dict[str, Any],
    pretrain_fraction: float,
    update_every: int,
    retrain_every: int,
    window_days: float,
    learner_config: LearnerConfig,
) -> dict[str, dict[int, tuple[float, float]]]:
    """Per arm: replayed event index -> (hit@10, ndcg@10), for events that are not repeats."""
    events = dataset.interactions
    order = sorted(range(len(events)), key=lambda e: events.timestamps[e])  # Python's sort is stable
    user_of: dict[int, int] = {}
    item_of: dict[int, int] = {}
    users = [user_of.setdefault(int(events.user_ids[e]), len(user_of)) for e in order]
    items = [item_of.setdefault(int(events.item_ids[e]), len(item_of)) for e in order]
    times = [float(events.timestamps[e]) for e in order]
    n = len(order)
    n_pretrain = int(pretrain_fraction * n)

    def prefix(end: int) -> Interactions:
        return Interactions.from_arrays(
            users[:end], items[:end], times[:end], n_users=len(set(users[:end])), n_items=len(set(items[:end]))
        )

    def fit(name: str, end: int, **model_params: Any) -> Recommender:
        return create_model(name, **model_params).fit(prefix(end))

    pretrained = fit("sasrec", n_pretrain, **params)
    first = prefix(n_pretrain)
    learner = OnlineLearner(
        copy.deepcopy(pretrained),
        [f"i{j}" for j in range(first.n_items)],
        [f"u{j}" for j in range(first.n_users)],
        history=first,
        config=learner_config,
    )
    models: dict[str, Recommender] = {
        "static": pretrained,
        "online": learner.model,
        "retrain": pretrained,
        "popularity": fit("pop-recent", n_pretrain, window_days=window_days),
    }
    history: dict[int, list[int]] = defaultdict(list)
    for e in range(n_pretrain):
        history[users[e]].append(items[e])
    out: dict[str, dict[int, tuple[float, float]]] = {arm: {} for arm in models}
    for start in range(n_pretrain, n, update_every):
        stop = min(start + update_every, n)
        for e in range(start, stop):
            user, item, seen = users[e], items[e], history[users[e]]
            if item not in seen:
                for arm, model in models.items():
                    scores = model.score(Histories.from_lists([seen], users=[user]))[0].astype(np.float64)
                    for j in seen:
                        if j < len(scores):
                            scores[j] = -np.inf
                    rank = math.inf
                    if item < len(scores):
                        target = scores[item]
                        rank = sum(1 for j, s in enumerate(scores) if s > target or (s == target and j < item))
                    out[arm][e - n_pretrain] = (1.0, 1.0 / math.log2(rank + 2)) if rank < 10 else (0.0, 0.0)
            seen.append(item)
        if stop == n:
            break
        learner.observe([f"u{u}" for u in users[start:stop]], [f"i{i}" for i in items[start:stop]], times[start:stop])
        learner.update()
        models["popularity"] = fit("pop-recent", stop, window_days=window_days)
        if (stop - n_pretrain) // retrain_every > (start - n_pretrain) // retrain_every:
            models["retrain"] = fit("sasrec", stop, **params)
    return out


@pytest.mark.parametrize(
    ("n_events", "pretrain_fraction", "update_every", "retrain_every"),
    [(600, 0.5, 100, 100), (500, 0.8, 1, 40)],
    ids=["chunks-of-100", "update-every-1"],
)
def test_replay_equals_reference_loop(
    n_events: int, pretrain_fraction: float, update_every: int, retrain_every: int
) -> None:
    dataset, _ = generate(SyntheticConfig(n_users=40, n_items=60, n_events=n_events, seed=3))
    learner_config = LearnerConfig(rehearsal_ratio=1.0, lr_multiplier=2.0, seed=5)
    config = ReplayConfig(
        model="sasrec",
        params=SMALL_SASREC,
        pretrain_fraction=pretrain_fraction,
        update_every=update_every,
        retrain_every=retrain_every,
        window_days=20.0,
        windows=4,
        learner=learner_config,
    )
    result = replay(dataset, config)
    expected = reference_replay(
        dataset, SMALL_SASREC, pretrain_fraction, update_every, retrain_every, 20.0, learner_config
    )
    n_replayed = n_events - int(pretrain_fraction * n_events)
    assert sorted(expected["static"]) == list(np.flatnonzero(result.scored))
    for arm in ARMS:
        hits = np.array([expected[arm][e][0] for e in sorted(expected[arm])])
        ndcg = np.array([expected[arm][e][1] for e in sorted(expected[arm])])
        np.testing.assert_array_equal(result.hits[arm][result.scored], hits, err_msg=arm)
        np.testing.assert_allclose(result.ndcg[arm][result.scored], ndcg, atol=1e-12, err_msg=arm)
    # the arms really differ (otherwise the comparison above proves little), and the counts add up
    assert not np.array_equal(result.hits["static"], result.hits["online"])
    assert not np.array_equal(result.hits["static"], result.hits["popularity"])
    counts = result.counts
    assert counts["replayed_events"] == n_replayed == counts["scored_events"] + counts["skipped_repeats"]
    assert counts["skipped_repeats"] > 0 and counts["new_item_events"] > 0
    assert counts["retrains"] == (n_replayed - 1) // retrain_every
    assert counts["updates"] == math.ceil(n_replayed / update_every) - 1
    report = result.to_dict()
    assert sum(window["events"] for window in report["windows"]) == n_replayed
    assert sum(window["scored"] for window in report["windows"]) == counts["scored_events"]


def leakage_stream(n_old_users: int = 20, n_chunks: int = 4, chunk: int = 10) -> Dataset:
    """Pretraining: old users on items o0..o79. Then each chunk: ``chunk`` new users all take one item new in it."""
    rng = np.random.default_rng(0)
    users = [f"old{u}" for u in range(n_old_users) for _ in range(8)]
    items = [f"o{rng.integers(80)}" for _ in range(len(users))]
    for c in range(n_chunks):
        users += [f"new{c}_{u}" for u in range(chunk)]
        items += [f"n{c}"] * chunk
    events = Interactions.from_arrays(
        IdMap.from_values(users).to_internal(users), IdMap.from_values(items).to_internal(items)
    )
    return Dataset(events, IdMap.from_values(users), IdMap.from_values(items), name="leakage")


def test_no_model_learns_an_event_before_predicting_it() -> None:
    """Within a chunk the item is seen only inside the chunk: a model that had learned it would hit."""
    dataset = leakage_stream()
    n_old = 20 * 8
    fraction = n_old / len(dataset.interactions)
    params = {**SMALL_SASREC, "max_epochs": 1}
    result = replay(dataset, ReplayConfig(params=params, pretrain_fraction=fraction, update_every=10, windows=4))
    assert result.counts["new_item_events"] == 4 and result.counts["scored_events"] == 40
    for arm in ARMS:
        assert result.hits[arm].sum() == 0, arm
    # learning after every event: the popularity arm ranks the chunk's item in its top 10 once it leads
    every = replay(dataset, ReplayConfig(params=params, pretrain_fraction=fraction, update_every=1, windows=4))
    assert every.hits["popularity"].sum() == 20  # from the 6th event of each chunk on (5 events outrank all old items)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_replay_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "replay.png"
    code, out, _ = run_cli(
        capsys,
        "replay",
        "--synthetic",
        "3000",
        "--json",
        "--quiet",
        "--param",
        "max_epochs=2",
        "--param",
        "n_threads=1",
        "--update-every",
        "500",
        "--windows",
        "3",
        "--plot",
        str(plot),
    )
    assert code == 0
    report = json.loads(out)
    assert list(report) == ["dataset", "setting", "arms", "windows", "updater_events_per_s", "counts", "seconds"]
    assert set(report["arms"]) == set(ARMS)
    for values in [*report["arms"].values(), *(w["arms"][arm] for w in report["windows"] for arm in ARMS)]:
        assert set(values) == {"hr@10", "ndcg@10"}
        assert all(0.0 <= value <= 1.0 for value in values.values())
    assert len(report["windows"]) == 3 and report["counts"]["replayed_events"] == 1500
    assert report["counts"]["updates"] == 2 and report["updater_events_per_s"] > 0
    assert report["setting"]["parameters"]["max_epochs"] == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_replay_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "replay",
        "--synthetic",
        "2000",
        "--quiet",
        "--arms",
        "static,popularity",
        "--param",
        "max_epochs=1",
        "--param",
        "n_threads=1",
    )
    assert code == 0
    assert "static" in out and "popularity" in out and "online" not in out and "window" in out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--pretrain-fraction", "1.5", "--pretrain-fraction: expected a number between 0 and 1"),
        ("--update-every", "0", "--update-every: expected a positive integer"),
        ("--arms", "static,bogus", "--arms: expected distinct names"),
    ],
)
def test_cli_replay_usage_errors(flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "replay", "--synthetic", "3000", flag, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
