"""Retrieval layer: filtered exact top-k and the exact / FAISS vector index (real FAISS, no mocks)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.retrieval import VectorIndex, exact_recall, top_k_allowed
from liverec.retrieval import index as index_module

N_CLUSTERED = 20_000
DIM = 32


def require_faiss() -> ModuleType:
    """The faiss module; skip when it is missing on a user's machine, fail in CI (CI set)."""
    try:
        import faiss
    except ImportError:
        message = "faiss is not installed: the ANN tests need the 'ann' extra (pip install 'liverec[ann]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return faiss


def reference_top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: per row, sort the eligible items by (score desc, id asc), keep k, pad with -1 / -inf."""
    rows = np.atleast_2d(scores).astype(np.float64)
    mask = np.ones(rows.shape, dtype=bool) if allowed is None else np.broadcast_to(allowed, rows.shape)
    ids = np.full((len(rows), k), -1, dtype=np.int64)
    out = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for r, (row, row_mask) in enumerate(zip(rows, mask, strict=True)):
        eligible = np.flatnonzero(row_mask & ~np.isnan(row) & (row > -np.inf))
        order = eligible[np.lexsort((eligible, -row[eligible]))][:k]
        ids[r, : len(order)] = order
        out[r, : len(order)] = row[order]
    return (ids[0], out[0]) if np.ndim(scores) == 1 else (ids, out)


def clustered(rng: np.random.Generator, n: int, n_clusters: int = 200) -> np.ndarray:
    """Gaussian clusters with unnormalised vectors, like the item embeddings of an inner-product model."""
    centers = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    noise = 0.7 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (centers[rng.integers(0, n_clusters, n)] + noise).astype(np.float32)


# ----------------------------------------------------------------- top_k_allowed
@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(0, 4),
    n_items=st.integers(0, 3000),
    k=st.integers(1, 40),
    distinct=st.sampled_from([2, 10, 1000]),
    density=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
    mask_kind=st.sampled_from(["none", "shared", "per_row"]),
    specials=st.booleans(),
)
def test_top_k_allowed_matches_brute_force(
    seed: int, n_rows: int, n_items: int, k: int, distinct: int, density: float, mask_kind: str, specials: bool
) -> None:
    rng = np.random.default_rng(seed)
    # few distinct values: many ties, including at the k-th place
    scores = rng.integers(0, distinct, (max(n_rows, 1), n_items)).astype(np.float32)
    if specials:
        scores[rng.random(scores.shape) < 0.05] = -np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
        scores[rng.random(scores.shape) < 0.01] = np.inf
    if n_rows == 0:  # one request: 1-D scores
        scores = scores[0]
    allowed = None
    if mask_kind == "shared":
        allowed = rng.random(n_items) < density
    elif mask_kind == "per_row":
        allowed = rng.random(scores.shape) < density
    ids, out = top_k_allowed(scores, k, allowed)
    expected_ids, expected_scores = reference_top_k(scores, k, allowed)
    assert ids.dtype == np.int64 and out.dtype == np.float32
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(out, expected_scores)


def test_top_k_allowed_large_row_never_returns_disallowed_items() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((3, 100_000)).astype(np.float32)
    allowed = rng.random(100_000) < 0.5
    ids, out = top_k_allowed(scores, 50, allowed)
    assert (ids >= 0).all() and allowed[ids].all()
    expected_ids, expected_scores = reference_top_k(scores, 50, allowed)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(out, expected_scores)


def test_top_k_allowed_pads_when_fewer_than_k_are_allowed() -> None:
    scores = np.arange(10, dtype=np.float32)
    allowed = np.zeros(10, dtype=bool)
    allowed[[2, 7, 4]] = True
    ids, out = top_k_allowed(scores, 5, allowed)
    np.testing.assert_array_equal(ids, [7, 4, 2, -1, -1])
    np.testing.assert_array_equal(out, np.array([7, 4, 2, -np.inf, -np.inf], dtype=np.float32))


def test_top_k_allowed_breaks_ties_towards_lower_ids() -> None:
    scores = np.zeros(50_000, dtype=np.float32)
    scores[[40_000, 3, 17, 25_000]] = 1.0
    ids, _ = top_k_allowed(scores, 6)
    np.testing.assert_array_equal(ids, [3, 17, 25_000, 40_000, 0, 1])


def test_top_k_allowed_rejects_bad_input() -> None:
    scores = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="k"):
        top_k_allowed(scores, 0)
    with pytest.raises(TypeError, match="boolean"):
        top_k_allowed(scores, 2, np.ones(5, dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        top_k_allowed(scores, 2, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        top_k_allowed(np.zeros((1, 2, 3)), 2)


# ----------------------------------------------------------------- vector index: shared fixtures
@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return clustered(rng, N_CLUSTERED), clustered(rng, 64)


@pytest.fixture(scope="module")
def ann_index(clustered_data: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
    require_faiss()
    index = VectorIndex(clustered_data[0], ann_threshold=1_000, seed=0)
    assert not index.is_exact
    return index


@pytest.fixture(scope="module")
def exact_index(clustered_data: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
    index = VectorIndex(clustered_data[0])
    assert index.is_exact
    return index


@pytest.fixture(params=["exact", "ann"])
def any_index(request: pytest.FixtureRequest) -> VectorIndex:
    index: VectorIndex = request.getfixturevalue(f"{request.param}_index")
    return index


@pytest.fixture
def fresh_faiss_loader() -> Iterator[None]:
    """Forget the cached faiss import before and after a test that changes whether faiss imports."""
    index_module._load_faiss.cache_clear()
    yield
    index_module._load_faiss.cache_clear()


# ----------------------------------------------------------------- exact index
@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_row"])
def test_exact_index_equals_brute_force(mask_kind: str) -> None:
    rng = np.random.default_rng(3)
    # small integer vectors: every dot product is exact in float32 and ties are common
    items = rng.integers(-3, 4, (3_000, 8)).astype(np.float32)
    queries = rng.integers(-3, 4, (20, 8)).astype(np.float32)
    allowed = {
        "none": None,
        "shared": rng.random(3_000) < 0.3,  # small enough to take the gather path
        "per_row": rng.random((20, 3_000)) < 0.8,
    }[mask_kind]
    index = VectorIndex(items)
    assert index.n_items == 3_000 and index.dim == 8
    ids, scores = index.search(queries, 25, allowed)
    expected_ids, expected_scores = reference_top_k(queries @ items.T, 25, allowed)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    single_ids, single_scores = index.search(queries[0], 25, None if allowed is None or allowed.ndim == 2 else allowed)
    assert single_ids.shape == (25,) and single_scores.shape == (25,)


def test_cosine_metric_normalises_items_and_queries() -> None:
    items = np.array([[10.0, 0.0], [1.0, 1.0], [0.0, 0.5]], dtype=np.float32)
    index = VectorIndex(items, metric="cosine")
    ids, scores = index.search(np.array([0.0, 2.0], dtype=np.float32), 3)
    np.testing.assert_array_equal(ids, [2, 1, 0])
    np.testing.assert_allclose(scores, [1.0, np.sqrt(0.5), 0.0], atol=1e-6)


def test_index_rejects_bad_input(exact_index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="queries"):
        exact_index.search(np.zeros((2, DIM + 1), dtype=np.float32), 5)
    with pytest.raises(ValueError, match="queries"):
        exact_index.search(np.full((1, DIM), np.nan, dtype=np.float32), 5)
    with pytest.raises(ValueError, match="allowed"):
        exact_index.search(np.zeros((2, DIM), dtype=np.float32), 5, np.ones(N_CLUSTERED - 1, dtype=bool))
    with pytest.raises(ValueError, match="unique"):
        exact_index.update(np.array([1, 1]), np.zeros((2, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="metric"):
        VectorIndex(np.zeros((3, 2), dtype=np.float32), metric="l2")  # type: ignore[arg-type]


def test_empty_index_returns_padding() -> None:
    ids, scores = VectorIndex(np.zeros((0, 4), dtype=np.float32)).search(np.ones((2, 4), dtype=np.float32), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


# ----------------------------------------------------------------- FAISS index
def test_ann_recall_at_10_against_exact(ann_index: VectorIndex, clustered_data: tuple[np.ndarray, np.ndarray]) -> None:
    assert exact_recall(ann_index, clustered_data[1], 10) >= 0.95


def test_ann_scores_are_the_inner_products(
    ann_index: VectorIndex, clustered_data: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = clustered_data
    ids, scores = ann_index.search(queries, 10)
    expected = np.einsum("bd,bkd->bk", queries, items[ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("density", [0.9, 0.3, 0.06])
def test_filters_never_return_disallowed_items_and_fill_k(
    any_index: VectorIndex, clustered_data: tuple[np.ndarray, np.ndarray], density: float
) -> None:
    queries = clustered_data[1]
    rng = np.random.default_rng(11)
    shared = rng.random(N_CLUSTERED) < density
    ids, _ = any_index.search(queries, 10, shared)
    assert (ids >= 0).all() and shared[ids].all()
    per_row = rng.random((len(queries), N_CLUSTERED)) < density
    ids, _ = any_index.search(queries, 10, per_row)
    assert (ids >= 0).all() and np.take_along_axis(per_row, ids, axis=1).all()


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("n_allowed,k", [(15, 20), (15, 10), (10, 10)])
def test_sparse_filters_return_every_allowed_item(
    any_index: VectorIndex, clustered_data: tuple[np.ndarray, np.ndarray], n_allowed: int, k: int, per_row: bool
) -> None:
    items, queries = clustered_data
    rng = np.random.default_rng(5)
    allowed = np.zeros((len(queries) if per_row else 1, N_CLUSTERED), dtype=bool)
    for row in allowed:  # n_allowed items scattered at random (different ones per row)
        row[rng.choice(N_CLUSTERED, n_allowed, replace=False)] = True
    allowed = allowed if per_row else allowed[0]
    ids, scores = any_index.search(queries, k, allowed)
    # the exact answer over the allowed items: all of them when k >= n_allowed, padded with -1
    expected_ids, _ = reference_top_k(queries @ items.T, k, allowed)
    np.testing.assert_array_equal(ids, expected_ids)
    assert (np.count_nonzero(ids >= 0, axis=1) == min(k, n_allowed)).all()
    assert np.isneginf(scores[ids < 0]).all()


def test_ann_falls_back_to_exact_when_the_probed_lists_hold_no_allowed_item(
    ann_index: VectorIndex, clustered_data: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = clustered_data
    query = queries[:1]
    # everything the IVF probes for this query is disallowed; what is left is far away from it
    _, reachable = ann_index._ann.search(query, N_CLUSTERED)
    allowed = np.ones(N_CLUSTERED, dtype=bool)
    allowed[reachable[reachable >= 0]] = False
    assert allowed.sum() >= 0.05 * N_CLUSTERED  # large enough to take the over-fetch path first
    ids, scores = ann_index.search(query, 10, allowed)
    expected_ids, expected_scores = reference_top_k(query @ items.T, 10, allowed)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_ties_go_to_the_lower_id_in_both_modes() -> None:
    require_faiss()
    rng = np.random.default_rng(2)
    items = clustered(rng, 5_000)
    query = items[100] / np.linalg.norm(items[100])
    items[[4_000, 17, 2_500]] = 50 * query  # three identical best items
    for index in (VectorIndex(items), VectorIndex(items, ann_threshold=1_000)):
        ids, _ = index.search(query, 4)
        np.testing.assert_array_equal(ids[:3], [17, 2_500, 4_000])


# ----------------------------------------------------------------- writes
@pytest.mark.parametrize("ann_threshold", [1_000, 200_000])
def test_added_items_are_retrievable(clustered_data: tuple[np.ndarray, np.ndarray], ann_threshold: int) -> None:
    if ann_threshold < N_CLUSTERED:
        require_faiss()
    items, queries = clustered_data
    index = VectorIndex(items, ann_threshold=ann_threshold)
    new_ids = index.add(20 * queries[:3])  # each new item is the best match for its query
    np.testing.assert_array_equal(new_ids, [N_CLUSTERED, N_CLUSTERED + 1, N_CLUSTERED + 2])
    assert index.n_items == N_CLUSTERED + 3
    ids, _ = index.search(queries[:3], 1)
    np.testing.assert_array_equal(ids[:, 0], new_ids)
    allowed = np.ones(index.n_items, dtype=bool)
    allowed[new_ids[0]] = False
    ids, _ = index.search(queries[0], 5, allowed)
    assert new_ids[0] not in ids and (ids >= 0).all()


@pytest.mark.parametrize("ann_threshold", [1_000, 200_000])
def test_updated_vectors_replace_the_old_ones(
    clustered_data: tuple[np.ndarray, np.ndarray], ann_threshold: int
) -> None:
    if ann_threshold < N_CLUSTERED:
        require_faiss()
    items, queries = clustered_data
    index = VectorIndex(items, ann_threshold=ann_threshold)
    index.update(np.array([123, 4_567]), 20 * queries[:2])
    ids, scores = index.search(queries[:2], 1)
    np.testing.assert_array_equal(ids[:, 0], [123, 4_567])
    np.testing.assert_allclose(scores[:, 0], 20 * (queries[:2] ** 2).sum(axis=1), rtol=1e-4)


def test_growing_past_the_threshold_builds_the_ann_index() -> None:
    require_faiss()
    rng = np.random.default_rng(4)
    index = VectorIndex(clustered(rng, 1_500), ann_threshold=2_000)
    assert index.is_exact
    index.add(clustered(rng, 600))
    assert not index.is_exact and index.n_items == 2_100
    ids, _ = index.search(clustered(rng, 3), 10)
    assert (ids >= 0).all()


# ----------------------------------------------------------------- FAISS missing
@pytest.mark.usefixtures("fresh_faiss_loader")
def test_missing_faiss_stays_exact_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clustered_data: tuple[np.ndarray, np.ndarray]
) -> None:
    items, queries = clustered_data
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="liverec.retrieval.index"):
        index = VectorIndex(items[:5_000], ann_threshold=1_000)
        VectorIndex(items[:5_000], ann_threshold=1_000)
    assert index.is_exact
    warnings = [record for record in caplog.records if "faiss is not installed" in record.getMessage()]
    assert len(warnings) == 1
    allowed = np.zeros(5_000, dtype=bool)
    allowed[::500] = True
    ids, _ = index.search(queries, 20, allowed)
    expected_ids, _ = reference_top_k(queries @ items[:5_000].T, 20, allowed)
    np.testing.assert_array_equal(ids, expected_ids)


# ----------------------------------------------------------------- exact scans from a float16 copy
@pytest.mark.parametrize("mask_kind", ["none", "shared", "sparse", "per_row"])
def test_compact_scan_equals_the_float32_scan(mask_kind: str) -> None:
    """Float16 candidates re-ranked in float32 give the float32 answer, including near-ties at the cut.

    The re-rank and the float32 scan sum in different orders, so two items whose scores differ by less than
    float32 rounding may swap: where the ids differ, their exact (float64) scores must be that close.
    """
    require_faiss()
    rng = np.random.default_rng(5)
    items = rng.standard_normal((4_000, 16)).astype(np.float32)
    items[100:140] = items[7] + rng.standard_normal((40, 16)).astype(np.float32) * 1e-4  # near-ties
    queries = np.vstack([rng.standard_normal((30, 16)).astype(np.float32), items[7:8] * 3])
    allowed = {
        "none": None,
        "shared": rng.random(4_000) < 0.9,
        "sparse": rng.random(4_000) < 0.004,  # fewer allowed items than fetched: every one is a candidate
        "per_row": rng.random((31, 4_000)) < 0.8,
    }[mask_kind]
    compact = VectorIndex(items, compact_threshold=1_000)
    assert compact.is_compact and compact.is_exact
    plain = VectorIndex(items)
    for k in (1, 10, 50):
        ids, scores = compact.search(queries, k, allowed)
        expected_ids, expected_scores = plain.search(queries, k, allowed)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
        rows, columns = np.nonzero(ids != expected_ids)
        assert len(rows) <= 0.01 * ids.size
        truth = queries.astype(np.float64) @ items.T.astype(np.float64)
        np.testing.assert_allclose(
            truth[rows, ids[rows, columns]], truth[rows, expected_ids[rows, columns]], rtol=1e-6, atol=1e-6
        )


def test_compact_scan_falls_back_where_the_rounding_bound_cannot_decide() -> None:
    """Items that differ below float16 precision: the float16 order is arbitrary, the answer is not."""
    require_faiss()
    base = np.ones((2_000, 4), dtype=np.float32)
    items = base + np.arange(2_000, dtype=np.float32)[:, None] * 1e-6  # all round to the same float16 vector
    compact = VectorIndex(items, compact_threshold=1)
    ids, _ = compact.search(np.ones(4, dtype=np.float32), 5)
    np.testing.assert_array_equal(ids, [1999, 1998, 1997, 1996, 1995])


def test_compact_copy_follows_added_and_updated_items() -> None:
    require_faiss()
    rng = np.random.default_rng(6)
    items = rng.standard_normal((1_500, 8)).astype(np.float32)
    compact = VectorIndex(items[:900], compact_threshold=1_000)
    assert not compact.is_compact  # below the threshold: the float32 scan
    compact.add(items[900:])
    assert compact.is_compact
    target = rng.standard_normal(8).astype(np.float32)
    compact.update(np.array([3, 1_200]), np.vstack([target * 10, target * 9]))
    ids, _ = compact.search(target, 2)
    np.testing.assert_array_equal(ids, [3, 1_200])
    grown = np.vstack([items, target[None] * 20])
    compact.add(grown[-1:])
    ids, _ = compact.search(target, 3)
    np.testing.assert_array_equal(ids, [1_500, 3, 1_200])


def test_vectors_beyond_float16_range_keep_the_float32_scan() -> None:
    require_faiss()
    rng = np.random.default_rng(7)
    items = rng.standard_normal((1_200, 8)).astype(np.float32)
    assert not VectorIndex(items * 1e5, compact_threshold=1).is_compact
    index = VectorIndex(items, compact_threshold=1)
    assert index.is_compact
    big = np.full((1, 8), 7e4, dtype=np.float32)  # would be inf in float16
    index.add(big)
    assert not index.is_compact
    ids, _ = index.search(np.ones(8, dtype=np.float32), 1)
    np.testing.assert_array_equal(ids, [1_200])
