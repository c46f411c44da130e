"""Ranking and beyond-accuracy metrics: hand-computed cases, properties, and agreement with ranx."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.data.interactions import Histories
from liverec.evaluation.metrics import (
    beyond_accuracy_metrics,
    gini,
    per_user_ranking_metrics,
    ranking_metrics,
    sampled_metrics,
)


def targets_of(*rows: list[int]) -> Histories:
    return Histories.from_lists([list(r) for r in rows], users=list(range(len(rows))))


def test_single_target_hand_computed() -> None:
    ranked = np.array([[5, 3, 9, 1], [2, 4, 6, 8], [7, 0, 1, 2]])
    targets = targets_of([9], [3], [7])
    m = per_user_ranking_metrics(ranked, targets, k=3)
    np.testing.assert_allclose(m["hr"], [1, 0, 1])
    np.testing.assert_allclose(m["recall"], [1, 0, 1])
    np.testing.assert_allclose(m["precision"], [1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(m["ndcg"], [1 / math.log2(4), 0, 1])
    np.testing.assert_allclose(m["mrr"], [1 / 3, 0, 1])
    np.testing.assert_allclose(m["map"], [1 / 3, 0, 1])


def test_multiple_targets_hand_computed() -> None:
    ranked = np.array([[1, 2, 3, 4, 5]])
    targets = targets_of([2, 4, 9])  # hits at ranks 2 and 4, one target never retrieved
    m = per_user_ranking_metrics(ranked, targets, k=5)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["recall"][0] == pytest.approx(2 / 3)
    assert m["precision"][0] == pytest.approx(2 / 5)
    assert m["ndcg"][0] == pytest.approx(dcg / idcg)
    assert m["mrr"][0] == pytest.approx(1 / 2)
    assert m["map"][0] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_padding_never_hits_and_k_bounds() -> None:
    ranked = np.array([[-1, -1, 3]])
    m = per_user_ranking_metrics(ranked, targets_of([3]), k=3)
    assert m["hr"][0] == 1 and m["mrr"][0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"k: expected 1\.\.3"):
        per_user_ranking_metrics(ranked, targets_of([3]), k=4)
    with pytest.raises(ValueError, match="at least one target"):
        per_user_ranking_metrics(ranked, targets_of([]), k=1)


def test_ranking_metrics_keys_and_means() -> None:
    ranked = np.array([[1, 2], [3, 4]])
    out = ranking_metrics(ranked, targets_of([1], [4]), ks=(1, 2))
    assert out["hr@1"] == pytest.approx(0.5)
    assert out["hr@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_sampled_metrics() -> None:
    out = sampled_metrics(np.array([0, 9, 10, 100]), ks=(10,))
    assert out["hr@10"] == pytest.approx(0.5)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(11)) / 4)


def test_gini() -> None:
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n-1)/n for all mass on one of n
    assert gini(np.zeros(3)) == 0.0


def test_beyond_accuracy_hand_computed() -> None:
    ranked = np.array([[0, 1], [0, 2]])
    popularity = np.array([10.0, 2.0, 0.0, 0.0, 8.0])  # head (top 20% of 5 items) = item 0
    out = beyond_accuracy_metrics(ranked, popularity, n_train_users=15, k=2)
    assert out["coverage@2"] == pytest.approx(3 / 5)
    assert out["arp@2"] == pytest.approx((10 + 2 + 10 + 0) / 4)
    assert out["long_tail@2"] == pytest.approx(2 / 4)
    expected_novelty = np.mean([-math.log2(11 / 16), -math.log2(3 / 16), -math.log2(11 / 16), -math.log2(1 / 16)])
    assert out["novelty@2"] == pytest.approx(expected_novelty)
    assert out["gini@2"] == pytest.approx(gini(np.array([2, 1, 1, 0, 0])))


@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[np.ndarray, Histories, int]:
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(3, 15))
    k = draw(st.integers(1, n_items))
    rows, target_rows = [], []
    for _ in range(n_users):
        rows.append(draw(st.permutations(range(n_items)))[:k])
        target_rows.append(sorted(draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))))
    return np.array(rows), targets_of(*target_rows), k


@settings(max_examples=200, deadline=None)
@given(ranking_case())
def test_metric_properties(case: tuple[np.ndarray, Histories, int]) -> None:
    ranked, targets, k = case
    m = per_user_ranking_metrics(ranked, targets, k)
    for name, values in m.items():
        assert np.all(values >= -1e-12) and np.all(values <= 1 + 1e-12), name
    assert np.all(m["mrr"] <= m["hr"] + 1e-12)
    assert np.all(m["ndcg"] <= m["hr"] + 1e-12)
    assert np.all((m["ndcg"] > 0) == (m["hr"] > 0))
    # a perfect ranking (targets first) scores 1 on ndcg and hr
    perfect = []
    for r in range(len(targets)):
        row_targets = list(targets.row(r))
        rest = [i for i in range(ranked.max() + len(row_targets) + 2) if i not in row_targets]
        perfect.append((row_targets + rest)[:k])
    best = per_user_ranking_metrics(np.array(perfect), targets, k)
    np.testing.assert_allclose(best["ndcg"], 1.0)
    assert np.all(best["ndcg"] >= m["ndcg"] - 1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_gini_bounds(values: list[float]) -> None:
    g = gini(np.array(values))
    assert -1e-9 <= g <= 1.0


#: ranx (the test-only peer implementation, extra "test") in a child process with numba's JIT off: the same
#: Python source, without 30 s of compiling its kernels on every fresh CI machine
RANX = """
import json, sys
import ranx
qrels, run, metrics = json.load(sys.stdin)
scores = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics)
print(json.dumps({name: float(value) for name, value in scores.items()}))
"""


def test_agrees_with_ranx_on_random_rankings() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 60, 40, 10
    ranked = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)])
    target_rows = [sorted(rng.choice(n_items, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(n_users)]
    qrels = {f"u{u}": {f"i{i}": 1 for i in target_rows[u]} for u in range(n_users)}
    run = {f"u{u}": {f"i{i}": float(k - j) for j, i in enumerate(ranked[u])} for u in range(n_users)}
    metrics = [f"{m}@{k}" for m in ("hit_rate", "recall", "precision", "ndcg", "mrr", "map")]
    child = subprocess.run(
        [sys.executable, "-c", RANX],
        input=json.dumps([qrels, run, metrics]),
        env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(child.stdout)
    ours = ranking_metrics(ranked, targets_of(*target_rows), ks=(k,))
    for our_name, their_name in [
        ("hr", "hit_rate"),
        ("recall", "recall"),
        ("precision", "precision"),
        ("ndcg", "ndcg"),
        ("mrr", "mrr"),
        ("map", "map"),
    ]:
        assert ours[f"{our_name}@{k}"] == pytest.approx(theirs[f"{their_name}@{k}"], abs=1e-9), our_name
