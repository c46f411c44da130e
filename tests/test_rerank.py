"""Re-ranking after retrieval (liverec.rerank): λ = 0 is the identity, filters hold, each re-ranker does what its
docstring says on small planted cases; and ``liverec evaluate --rerank``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from liverec.cli import main
from liverec.data.splits import make_split
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.evaluation.metrics import calibration_kl, category_distributions, category_weights
from liverec.evaluation.protocols import evaluate_ranking, item_interactions
from liverec.models import create_model
from liverec.rerank import (
    MMR,
    RERANKERS,
    Calibration,
    LongTailQuota,
    PopularityPenalty,
    RerankCatalogue,
    create_reranker,
    parse_rerank,
    rerank_lists,
)

N_ITEMS = 50


def random_catalogue(seed: int = 0, vectors: bool = True) -> RerankCatalogue:
    rng = np.random.default_rng(seed)
    categories = sp.csr_matrix((rng.random((N_ITEMS, 5)) < 0.3).astype(np.float32))
    popularity = rng.integers(0, 100, N_ITEMS).astype(np.float64)
    return RerankCatalogue(categories, popularity, rng.normal(size=(N_ITEMS, 8)) if vectors else None)


def random_candidates(seed: int, n: int = 30, pad: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct items with decreasing scores, then ``pad`` padding entries (-1, -inf)."""
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.permutation(N_ITEMS)[:n], np.full(pad, -1)])
    scores = np.concatenate([np.sort(rng.normal(size=n))[::-1], np.full(pad, -np.inf)]).astype(np.float32)
    return items, scores


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_strength_zero_is_no_reranking_exactly(name: str) -> None:
    catalogue = random_catalogue()
    reranker = create_reranker(name, 0.0, catalogue)
    for seed in range(5):
        items, scores = random_candidates(seed)
        history = np.random.default_rng(seed).integers(0, N_ITEMS, 12)
        shown, shown_scores = reranker.rerank(items, scores, 10, history)
        np.testing.assert_array_equal(shown, items[:10])
        np.testing.assert_array_equal(shown_scores, scores[:10])


@pytest.mark.parametrize("name", sorted(RERANKERS))
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_only_candidates_are_shown(name: str, strength: float) -> None:
    """Whatever λ: distinct items, all from the candidates (never the padding), as many as asked or available."""
    catalogue = random_catalogue(1)
    reranker = create_reranker(name, strength, catalogue)
    for seed in range(5):
        items, scores = random_candidates(seed, n=12)
        history = np.random.default_rng(seed).integers(0, N_ITEMS, 6)
        shown, shown_scores = reranker.rerank(items, scores, 10, history)
        assert len(shown) == 10 and len(set(shown.tolist())) == 10
        assert set(shown.tolist()) <= set(items[:12].tolist())
        assert np.isfinite(shown_scores).all()
        short, _ = reranker.rerank(items[:5], scores[:5], 10, history)  # fewer candidates than k
        assert sorted(short.tolist()) == sorted(items[:5].tolist())


def test_mmr_skips_near_duplicates() -> None:
    # items 0, 1, 2 point the same way; 3 and 4 another way
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    items = np.arange(5)
    scores = np.array([1.0, 0.99, 0.98, 0.9, 0.0])
    mmr = MMR(0.5, RerankCatalogue(vectors=vectors))
    assert mmr.similarity == "cosine of item vectors"
    # step 1: item 0 (gain 0.5); step 2: item 1 gains 0.5 * 0.99 - 0.5 = -0.005, item 3 gains 0.45 -> 3;
    # step 3: item 1 (-0.005) beats item 2 (-0.01) and item 4 (0 - 0.5)
    assert mmr.rerank(items, scores, 3)[0].tolist() == [0, 3, 1]
    categories = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32))
    by_genre = MMR(0.5, RerankCatalogue(categories=categories))
    assert by_genre.similarity == "Jaccard of categories"
    assert by_genre.rerank(items, scores, 3)[0].tolist() == [0, 3, 1]


def test_mmr_jaccard_by_hand() -> None:
    categories = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=np.float32))
    similarity = MMR(0.5, RerankCatalogue(categories=categories)).similarities(np.array([0, 1, 2, 3, 9]))
    assert similarity[0, 1] == pytest.approx(1 / 2)  # {a, b} vs {b}
    assert similarity[0, 3] == pytest.approx(2 / 3)  # {a, b} vs {a, b, c}
    assert similarity[1, 3] == pytest.approx(1 / 3)
    assert similarity[2, 2] == 0.0 and similarity[4, 0] == 0.0  # no category; an item newer than the catalogue


def test_calibration_follows_the_history_mix() -> None:
    # categories (A, B): items 0, 1 are B, items 2, 3 are A, item 4 is A and B; the history is all A
    categories = sp.csr_matrix(np.array([[0, 1], [0, 1], [1, 0], [1, 0], [1, 1]], dtype=np.float32))
    catalogue = RerankCatalogue(categories=categories)
    items, scores, history = np.arange(4), np.array([1.0, 0.9, 0.8, 0.7]), np.array([2, 3, 2])
    assert Calibration(0.99, catalogue).rerank(items, scores, 2, history)[0].tolist() == [2, 3]
    # relevance π = softmax(1, 0.9, 0.8, 0.7) = (0.289, 0.262, 0.237, 0.212). λ = 0.001: item 0 (B) gains
    # 0.999 * 0.289 - 0.001 log(100) = 0.284 > 0.999 * 0.237 for item 2 (A); then item 1 (B, KL still log 100)
    # gains 0.257 > item 2's 0.237 - 0.001 log(1 / 0.505): relevance wins
    np.testing.assert_allclose(Calibration(0.5, catalogue).relevance(scores), np.exp(scores) / np.exp(scores).sum())
    assert Calibration(0.001, catalogue).rerank(items, scores, 2, history)[0].tolist() == [0, 1]
    # λ = 0.01: item 0 first (0.286 - 0.046 = 0.240 > 0.235), then item 2 (0.235 - 0.007 > 0.259 - 0.046)
    assert Calibration(0.01, catalogue).rerank(items, scores, 2, history)[0].tolist() == [0, 2]
    # a history half A, half B: a calibrated two-item list takes one of each
    mixed = Calibration(0.9, catalogue).rerank(items, scores, 2, np.array([0, 2]))[0]
    assert mixed.tolist() == [0, 2]
    # nothing to calibrate to (history items without a category, or none): the first k
    assert Calibration(0.9, catalogue).rerank(items, scores, 2, np.array([9]))[0].tolist() == [0, 1]


def test_calibration_lowers_the_kl_it_reports() -> None:
    catalogue = random_catalogue(2)
    weights = category_weights(catalogue.categories)
    history = np.array([0, 1, 2, 3, 4, 5])
    p = category_distributions(sp.csr_matrix((np.ones(6), (np.zeros(6), history)), shape=(1, N_ITEMS)), weights)

    def kl_of(shown: np.ndarray) -> float:
        lists = sp.csr_matrix((np.ones(len(shown)), (np.zeros(len(shown)), shown)), shape=(1, N_ITEMS))
        return float(calibration_kl(p, category_distributions(lists, weights))[0])

    items, scores = random_candidates(4, n=40, pad=0)
    values = [kl_of(Calibration(strength, catalogue).rerank(items, scores, 10, history)[0]) for strength in (0, 0.5, 1)]
    assert values[2] <= values[1] <= values[0] and values[2] < values[0]


def test_popularity_penalty_by_hand() -> None:
    catalogue = RerankCatalogue(popularity=np.array([100.0, 0.0, 0.0]))
    items, scores = np.array([0, 1, 2]), np.array([1.0, 0.9, 0.0])
    # ŝ = (1, 0.9, 0), pop = (1, 0, 0): λ = 0.2 -> (0.8, 0.9, 0); λ = 0.05 -> (0.95, 0.9, 0)
    assert PopularityPenalty(0.2, catalogue).rerank(items, scores, 3)[0].tolist() == [1, 0, 2]
    assert PopularityPenalty(0.05, catalogue).rerank(items, scores, 3)[0].tolist() == [0, 1, 2]
    # an item newer than the catalogue counts as never interacted with
    assert PopularityPenalty(0.2, catalogue).rerank(np.array([0, 7, 2]), scores, 3)[0].tolist() == [7, 0, 2]


def test_long_tail_quota_by_hand() -> None:
    catalogue = RerankCatalogue(popularity=50.0 - np.arange(50))  # the head: the 10 most popular, items 0..9
    items = np.arange(14)
    scores = 20.0 - np.arange(14)
    quota = LongTailQuota(0.3, catalogue)
    # 0.3 * 10 = 3 tail items (not 4: the product is rounded before its ceiling); the head items 7, 8, 9 leave
    assert quota.rerank(items, scores, 10)[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 10, 11, 12]
    assert LongTailQuota(0.5, catalogue).rerank(np.array([0, 1, 10, 11]), scores[:4], 2)[0].tolist() == [0, 10]
    # asks for more tail items than the candidates hold: all of them, the rest head
    assert LongTailQuota(1.0, catalogue).rerank(items[:12], scores[:12], 5)[0].tolist() == [0, 1, 2, 10, 11]
    # already enough tail items: unchanged
    mixed = np.array([10, 0, 11, 1])
    assert LongTailQuota(0.5, catalogue).rerank(mixed, scores[:4], 4)[0].tolist() == mixed.tolist()


def test_strength_and_parse_errors() -> None:
    catalogue = random_catalogue()
    assert parse_rerank("mmr=0.3") == ("mmr", 0.3)
    assert parse_rerank("popularity=2") == ("popularity", 2.0)
    for text, message in [
        ("mmr", "NAME=λ"),
        ("diversity=0.3", "NAME=λ"),
        ("mmr=high", "λ a number"),
        ("mmr=1.5", r"mmr: λ expected a number in \[0, 1\]"),
        ("popularity=-1", "popularity: λ expected a finite number >= 0"),
        ("calibration=nan", "calibration: λ expected"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_rerank(text)
    with pytest.raises(ValueError, match="unknown re-ranker"):
        create_reranker("diversity", 0.3, catalogue)
    with pytest.raises(ValueError, match="calibration: needs item categories"):
        Calibration(0.5, RerankCatalogue(popularity=np.ones(3)))
    with pytest.raises(ValueError, match="mmr: needs item vectors"):
        MMR(0.5, RerankCatalogue(popularity=np.ones(3)))
    with pytest.raises(ValueError, match="long-tail: needs"):
        LongTailQuota(0.5, RerankCatalogue())


def test_rerank_lists_pads_short_rows() -> None:
    catalogue = random_catalogue()
    items = np.array([[3, 4, 5], [6, -1, -1]])
    scores = np.array([[3.0, 2.0, 1.0], [1.0, -np.inf, -np.inf]], dtype=np.float32)
    shown, shown_scores = rerank_lists(create_reranker("mmr", 0.5, catalogue), items, scores, None, 2)
    assert shown[1].tolist() == [6, -1] and np.isneginf(shown_scores[1, 1])
    assert set(shown[0].tolist()) <= {3, 4, 5}


# ------------------------------------------------------------------------------------ in the evaluation
@pytest.fixture(scope="module")
def fitted() -> tuple:
    dataset, _ = generate(SyntheticConfig(n_users=80, n_items=60, n_events=3_000, n_clusters=4, seed=1))
    split, validation = make_split(dataset, "loo", 0.2)
    model = create_model("itemknn", seed=0).fit(split.train, validation=validation)
    categories = dataset.items.genre_matrix()[0] if dataset.items is not None else None
    return model, split, RerankCatalogue(categories, item_interactions(split))


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_evaluation_at_zero_equals_the_plain_evaluation(fitted: tuple, name: str) -> None:
    model, split, catalogue = fitted
    plain = evaluate_ranking(model, split, (5, 10))
    reranked = evaluate_ranking(model, split, (5, 10), reranker=create_reranker(name, 0.0, catalogue))
    np.testing.assert_array_equal(reranked.ranked, plain.ranked)
    np.testing.assert_array_equal(reranked.scores, plain.scores)
    assert reranked.metrics == plain.metrics == reranked.baseline_metrics


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_seen_items_stay_excluded_after_reranking(fitted: tuple, name: str) -> None:
    model, split, catalogue = fitted
    strength = 1.0
    result = evaluate_ranking(model, split, (10,), reranker=create_reranker(name, strength, catalogue), n_candidates=30)
    assert result.baseline_ranked is not None
    for row in range(len(split.history)):
        shown = result.ranked[row][result.ranked[row] >= 0]
        assert not set(shown.tolist()) & set(split.history.row(row).tolist())
        assert len(set(shown.tolist())) == len(shown)
    assert not np.array_equal(result.ranked, result.baseline_ranked)  # λ = 1 changes something


# ------------------------------------------------------------------------------------------- the CLI
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_rerank_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", "--synthetic", "5000", "--model", "itemknn", "--rerank", "calibration=0.5", "--groups",
        "--rerank-candidates", "40", "--json", "--quiet",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    rerank = report["rerank"]
    assert (rerank["name"], rerank["strength"], rerank["candidates"]) == ("calibration", 0.5, 40)
    assert set(rerank["baseline_metrics"]) == set(report["metrics"])
    assert set(rerank["baseline_groups"]) == set(report["groups"]) == {"items", "users"}
    shown, plain = report["groups"]["items"], rerank["baseline_groups"]["items"]
    assert shown["calibration_kl@10"]["mean"] < plain["calibration_kl@10"]["mean"]


def test_cli_rerank_zero_reports_the_model_itself(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", "--synthetic", "5000", "--model", "itemknn", "--rerank", "mmr=0", "--json", "--quiet"
    )
    assert code == 0
    report = json.loads(out)
    assert report["metrics"] == report["rerank"]["baseline_metrics"]
    assert report["rerank"]["similarity"] == "Jaccard of categories"  # itemknn has no item vectors
    code, text, _ = run_cli(
        capsys, "evaluate", "--synthetic", "5000", "--model", "itemknn", "--rerank", "popularity=0.5", "--quiet"
    )
    assert code == 0 and "rerank    popularity λ=0.5 over the top 100" in text and "reranked" in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("diversity=0.3", "--rerank: expected NAME=λ with NAME one of calibration, long-tail, mmr, popularity"),
        ("mmr=lots", "--rerank: expected NAME=λ with λ a number, got 'mmr=lots'"),
        ("mmr=2", "--rerank: mmr: λ expected a number in [0, 1], got 2.0"),
    ],
)
def test_cli_bad_rerank_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    code, out, err = run_cli(capsys, "evaluate", "--synthetic", "5000", "--model", "pop", "--rerank", value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_cli_rerank_refuses_the_sampled_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "evaluate", "--synthetic", "5000", "--model", "pop", "--rerank", "mmr=0.5", "--sampled-negatives", "20"
    )
    assert code == 2 and "--sampled-negatives" in err and err.count("\n") == 1
