"""The HNSW path of ``VectorIndex`` (real FAISS): filters, k results, live add / update / remove, recall.

The graph searches item vectors through the inner-product reduction (``index.py``'s docstring). Rows whose
allowed set is small are normally scored exactly; tests that must reach the graph search with any mask
switch that rule off (``graph_for_every_row``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss  # the 'ann' extra: a missing FAISS fails these tests rather than skipping them
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.retrieval import VectorIndex
from liverec.retrieval import index as index_module
from liverec.retrieval.topk import top_k

DIM = 16


@contextmanager
def graph_for_every_row() -> Iterator[None]:
    """Send every row to the graph search, however few items its mask allows (no small-set exact rule)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "_EXACT_FRACTION", 0.0)
        patch.setattr(index_module, "_EXACT_MIN_COUNT", 0)
        yield


def hnsw(items: np.ndarray, **options: object) -> VectorIndex:
    """An HNSW index; without the norm head unless ``hnsw_head_share`` is given (these catalogues are small, and
    default head's floor, and a head would leave less of the graph tested)."""
    options = {"hnsw_head_share": 0.0, **options}
    index = VectorIndex(items, ann_threshold=0, ann_kind="hnsw", **options)  # type: ignore[arg-type]
    assert index.ann_kind == "hnsw" and not index.is_exact
    return index


def exact(items: np.ndarray) -> VectorIndex:
    return VectorIndex(items, ann_threshold=len(items) + 1)


def varied_norms(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """Vectors whose norms vary over two orders of magnitude (popularity carried in the norm)."""
    directions = rng.standard_normal((n, dim)).astype(np.float32)
    scales = np.exp(rng.normal(0.0, 1.0, size=(n, 1))).astype(np.float32)
    return directions * scales


def check_result(
    index: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray, ids: np.ndarray, scores: np.ndarray
) -> None:
    """No disallowed item, no repeat, min(k, allowed) results, scores the inner products, best first."""
    stored = index._buffer[: index.n_items]
    for row in range(len(queries)):
        row_allowed = allowed if allowed.ndim == 1 else allowed[row]
        found = ids[row][ids[row] >= 0]
        assert len(found) == min(k, int(np.count_nonzero(row_allowed)))
        assert (ids[row][len(found) :] == -1).all() and np.isneginf(scores[row][len(found) :]).all()
        assert row_allowed[found].all()
        assert len(np.unique(found)) == len(found)
        np.testing.assert_allclose(scores[row][: len(found)], stored[found] @ queries[row], rtol=1e-4, atol=1e-5)
        assert (np.diff(scores[row][: len(found)]) <= 0).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(1, 200),
    n_queries=st.integers(1, 4),
    k=st.integers(1, 12),
    density=st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]),
    shared_mask=st.booleans(),
    n_updates=st.integers(0, 30),
    n_removed=st.integers(0, 10),
    head=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
)
def test_filtered_graph_search_never_returns_an_excluded_item_and_fills_k(
    seed: int,
    n_items: int,
    n_queries: int,
    k: int,
    density: float,
    shared_mask: bool,
    n_updates: int,
    n_removed: int,
    head: float,
) -> None:
    rng = np.random.default_rng(seed)
    items = varied_norms(rng, n_items, 4)
    queries = rng.standard_normal((n_queries, 4)).astype(np.float32)
    shape = (n_items,) if shared_mask else (n_queries, n_items)
    allowed = rng.random(shape) < density
    with graph_for_every_row():
        index = hnsw(items, hnsw_m=4, hnsw_ef_construction=8, hnsw_ef_search=4, hnsw_head_share=head)
        updated = rng.choice(n_items, size=min(n_updates, n_items), replace=False)
        index.update(updated, varied_norms(rng, len(updated), 4))  # stale nodes must stay out too
        removed = rng.choice(n_items, size=min(n_removed, n_items), replace=False)
        index.remove(removed)
        ids, scores = index.search(queries, k, allowed)
    present = np.ones(n_items, dtype=bool)
    present[removed] = False
    check_result(index, queries, k, allowed & present, ids, scores)


def test_allowed_sets_of_exactly_k_and_k_plus_one_are_returned_whole() -> None:
    rng = np.random.default_rng(1)
    items = varied_norms(rng, 3000)
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    k = 10
    allowed = np.zeros((6, 3000), dtype=bool)
    for row in range(6):  # scattered over the catalogue, far from the query's neighbourhood for the most part
        allowed[row, rng.choice(3000, size=k + row % 2, replace=False)] = True
    for force_graph in (False, True):
        index = hnsw(items)
        if force_graph:
            with graph_for_every_row():
                ids, scores = index.search(queries, k, allowed)
        else:
            ids, scores = index.search(queries, k, allowed)
        check_result(index, queries, k, allowed, ids, scores)
        np.testing.assert_array_equal(ids, exact(items).search(queries, k, allowed)[0])


def test_a_mask_that_excludes_the_whole_neighbourhood_still_gives_k() -> None:
    rng = np.random.default_rng(2)
    items = varied_norms(rng, 4000)
    queries = rng.standard_normal((8, DIM)).astype(np.float32)
    index = hnsw(items, hnsw_ef_search=16)
    allowed = np.ones((8, 4000), dtype=bool)
    neighbourhood = np.argsort(-(queries @ items.T), axis=1)[:, :1500]  # the best 1500 of each query
    np.put_along_axis(allowed, neighbourhood, False, axis=1)
    with graph_for_every_row():
        ids, scores = index.search(queries, 10, allowed)
    check_result(index, queries, 10, allowed, ids, scores)


def test_recall_on_planted_nearest_items_with_filters() -> None:
    """Each query has ten planted items it scores far above the rest; filters remove 5 % of the others."""
    rng = np.random.default_rng(3)
    n_queries, n_background = 40, 6000
    queries = rng.standard_normal((n_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    background = rng.standard_normal((n_background, DIM)).astype(np.float32)  # norms 0.1 .. 1.5: below 2
    background *= rng.uniform(0.1, 1.5, size=(n_background, 1)) / np.linalg.norm(background, axis=1, keepdims=True)
    planted = queries[:, None, :] * rng.uniform(3.0, 3.5, size=(n_queries, 10, 1)).astype(np.float32)
    planted += 0.01 * rng.standard_normal(planted.shape).astype(np.float32)
    items = np.concatenate([background, planted.reshape(-1, DIM)])
    planted_ids = n_background + np.arange(n_queries * 10).reshape(n_queries, 10)
    allowed = rng.random((n_queries, len(items))) >= 0.05
    np.put_along_axis(allowed, planted_ids, True, axis=1)
    index = hnsw(items)
    ids, _ = index.search(queries, 10, allowed)
    truth = exact(items).search(queries, 10, allowed)[0]
    assert (np.sort(truth, axis=1) == planted_ids).all()  # the planted items are the exact answer
    hits = [len(np.intersect1d(found, want)) / 10 for found, want in zip(ids, planted_ids, strict=True)]
    assert np.mean(hits) >= 0.95
    assert index.ann_fallbacks == 0  # the graph answered every row


def test_added_items_are_found_at_once_including_beyond_the_norm_headroom() -> None:
    rng = np.random.default_rng(4)
    items = rng.standard_normal((2000, DIM)).astype(np.float32)  # norms 0.5 .. 1.5, like trained vectors
    items *= rng.uniform(0.5, 1.5, size=(2000, 1)) / np.linalg.norm(items, axis=1, keepdims=True)
    index = hnsw(items)
    query = rng.standard_normal(DIM).astype(np.float32)
    radius = index._ann.radius
    inside = (query / np.linalg.norm(query) * 0.99 * radius)[None, :]  # fits the reduction: a graph insert
    (new_id,) = index.add(inside)
    assert index._ann.radius == radius and index._ann.n_nodes == 2001
    assert index.search(query, 1)[0][0] == new_id == 2000
    beyond = (query / np.linalg.norm(query) * 1.3 * radius)[None, :]  # does not fit: it joins the exact head
    (larger_id,) = index.add(beyond)
    assert index._ann.radius == radius and index._ann.n_nodes == 2001 and index._norm_head().tolist() == [larger_id]
    np.testing.assert_array_equal(index.search(query, 2)[0], [larger_id, new_id])
    index.update(np.array([new_id]), 2.0 * beyond)  # an item in the graph grown past the radius leaves it too
    assert index._ann.n_stale == 1 and index._norm_head().tolist() == [new_id, larger_id]
    np.testing.assert_array_equal(index.search(query, 2)[0], [new_id, larger_id])
    many = rng.standard_normal((1100, DIM)).astype(np.float32) * 10 * radius  # the head past its slack: rebuilt
    index.add(many)
    assert index._ann.n_stale == 0 and len(index._norm_head()) == 0 and index._ann.radius > radius


def test_update_moves_the_item_and_leaves_no_stale_copy() -> None:
    rng = np.random.default_rng(5)
    items = varied_norms(rng, 2000)
    index = hnsw(items)
    query = rng.standard_normal(DIM).astype(np.float32)
    best = int(index.search(query, 1)[0][0])
    away = (-query / np.linalg.norm(query) * np.linalg.norm(items[best]))[None, :]
    index.update(np.array([best]), away)  # the best item now points away from the query
    assert index._ann.n_stale == 1
    assert best not in index.search(query, 50)[0]
    assert index.search(-query, 1)[0][0] == best  # ... and is found where it moved
    ids, scores = index.search(-query, 20)
    assert len(np.unique(ids)) == 20
    np.testing.assert_allclose(scores, index._buffer[ids] @ -query, rtol=1e-5)


def test_many_updates_rebuild_the_graph() -> None:
    rng = np.random.default_rng(6)
    items = varied_norms(rng, 1000)
    index = hnsw(items)
    index.update(np.arange(300), varied_norms(rng, 300))  # 300 stale of 1300 nodes: under a quarter
    assert index._ann.n_stale == 300 and index._ann.n_nodes == 1300
    index.update(np.arange(300, 500), varied_norms(rng, 200))  # 500 of 1500: rebuilt over the 1000 items
    assert index._ann.n_stale == 0 and index._ann.n_nodes == 1000
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    truth = exact(index._buffer[:1000]).search(queries, 10)[0]
    found = index.search(queries, 10)[0]
    assert np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]) >= 9.5


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw", "float16"])
def test_removed_items_are_filtered_at_once_on_every_path(kind: str) -> None:
    rng = np.random.default_rng(7)
    items = varied_norms(rng, 3000)
    options = {
        "exact": {"ann_threshold": 10**6},
        "ivf": {"ann_threshold": 0, "ann_kind": "ivf"},
        "hnsw": {"ann_threshold": 0, "ann_kind": "hnsw"},
        "float16": {"ann_threshold": 10**6, "compact_threshold": 1},
    }[kind]
    index = VectorIndex(items, **options)  # type: ignore[arg-type]
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    before = index.search(queries, 10)[0]
    index.remove(before[:, 0])
    after, _ = index.search(queries, 10)
    assert not np.isin(after, before[:, 0]).any()
    assert (after >= 0).all() and index.n_removed == len(np.unique(before[:, 0]))
    (new_id,) = index.add(items[:1])  # ids continue after removed ones; the new item is not removed
    assert new_id == 3000 and index.n_removed == len(np.unique(before[:, 0]))
    assert index.search(queries, 10, np.arange(3001) == new_id)[0][:, 0].tolist() == [new_id] * 5


def test_hnsw_options_are_checked() -> None:
    items = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="ann_kind: expected one of 'ivf', 'hnsw', got 'lsh'"):
        VectorIndex(items, ann_kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hnsw_m: expected an integer >= 2, got 1"):
        VectorIndex(items, hnsw_m=1)
    with pytest.raises(ValueError, match="hnsw_ef_search: expected a positive integer, got 0"):
        VectorIndex(items, hnsw_ef_search=0)
    with pytest.raises(ValueError, match=r"hnsw_head_share: expected a number in \[0, 1\], got 1.5"):
        VectorIndex(items, hnsw_head_share=1.5)
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 4\), got min 0 max 4"):
        VectorIndex(items).remove(np.array([0, 4]))
    assert faiss.IndexHNSWFlat  # the graph this path builds


def test_a_carried_graph_serves_the_next_version_and_leaves_the_previous_untouched() -> None:
    """Vectors moved a little (an online update) and 50 new items: the successor carries the graph, finds the new
    version's exact top-10 (recall >= 0.95, every new item reachable), keeps the guarantees, and the previous
    index still answers exactly as before."""
    rng = np.random.default_rng(11)
    before = rng.standard_normal((3000, DIM)).astype(np.float32)
    previous = hnsw(before)
    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    previous.built_recall = index_module.exact_recall(previous, queries)
    answers_before = previous.search(queries, 10)
    after = np.concatenate([before + 0.03 * rng.standard_normal(before.shape), rng.standard_normal((50, DIM))])
    carried = VectorIndex.succeed(previous, after, queries=queries)
    assert carried.provenance == "carried" and carried.ann_kind == "hnsw" and carried.n_items == 3050
    assert carried.carried_recall is not None and carried.carried_recall >= 0.95
    assert carried.built_recall == previous.built_recall
    truth = exact(after)
    found, _ = carried.search(queries, 10)
    wanted, _ = truth.search(queries, 10)
    assert np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, wanted, strict=True)]) >= 0.95
    new_found, _ = carried.search(after[3000:] * 10, 1)  # each new item is the best answer in its own direction
    new_wanted, _ = truth.search(after[3000:] * 10, 1)
    assert np.mean(new_found[:, 0] == new_wanted[:, 0]) >= 0.95
    allowed = rng.random(3050) < 0.5
    ids, scores = carried.search(queries, 10, allowed)
    check_result(carried, queries, 10, allowed, ids, scores)
    for got, want in zip(previous.search(queries, 10), answers_before, strict=True):
        np.testing.assert_array_equal(got, want)
    again = VectorIndex.succeed(carried, after + 0.01 * rng.standard_normal(after.shape), queries=queries)
    assert again.provenance == "carried" and again.built_recall == previous.built_recall  # the fresh graph's
    grown = VectorIndex.succeed(previous, before * 1.5, queries=queries)  # norms past the radius: it moves out
    assert grown.provenance == "carried"


def test_a_graph_that_would_find_less_is_replaced_by_a_fresh_one() -> None:
    """Unrelated vectors (a model retrained from scratch): the carried graph's check falls, a graph is built
    and checked, and the better one is served — here the fresh one, whose check becomes the standard. With no
    graph to carry (an exact previous index, fewer items) the successor is built as the previous one's settings
    say."""
    rng = np.random.default_rng(12)
    before = rng.standard_normal((3000, DIM)).astype(np.float32)
    previous = hnsw(before)
    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    previous.built_recall = index_module.exact_recall(previous, queries)
    unrelated = rng.standard_normal((3000, DIM)).astype(np.float32)
    successor = VectorIndex.succeed(previous, unrelated, queries=queries)
    assert successor.provenance == "built" and successor.ann_kind == "hnsw"
    assert successor.built_recall == index_module.exact_recall(successor, queries) >= 0.95
    assert VectorIndex.carried(previous, before[:2000]) is None
    assert VectorIndex.succeed(previous, before[:2000]).provenance == "built"
    assert VectorIndex.succeed(exact(before), before).is_exact


def test_a_head_over_every_item_makes_any_graph_exact() -> None:
    """The norm head is scored exactly and merged with the graph's candidates: a head of the whole catalogue gives
    the exact answer however poor the graph (degree 2, a one-item candidate list), with shared and per-row masks
    and removed items."""
    rng = np.random.default_rng(3)
    items = varied_norms(rng, 2_000)
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    removed = rng.choice(2_000, size=50, replace=False)
    poor = hnsw(items, hnsw_m=2, hnsw_ef_construction=2, hnsw_ef_search=1)
    headed = hnsw(items, hnsw_m=2, hnsw_ef_construction=2, hnsw_ef_search=1, hnsw_head_share=1.0)
    truth = exact(items)
    for index in (poor, headed, truth):
        index.remove(removed)
    # allowed shares: the head's best 40 hold 10 allowed items for nearly every row (0.5, 0.97: their flags alone
    # are read) or for none (0.05: the whole head is masked)
    masks = [rng.random(shape) < share for share in (0.5, 0.05, 0.97) for shape in ((2_000,), (20, 2_000))]
    for allowed in masks:
        want, _ = truth.search(queries, 10, allowed)
        with graph_for_every_row():  # half the catalogue allowed: the graph searches every row
            got, scores = headed.search(queries, 10, allowed)
            missed, _ = poor.search(queries, 10, allowed)
        np.testing.assert_array_equal(got, want)
        present = np.ones(2_000, dtype=bool)
        present[removed] = False
        check_result(headed, queries, 10, allowed & present, got, scores)
        assert allowed.mean() < 0.1 or (missed != want).any()  # the graph alone misses: the head made it exact


def test_the_heads_float16_scan_never_changes_the_exact_answer() -> None:
    """The head is scanned as float16 codes first. Items that differ below float16's resolution look alike there
    (the scan's spare of 4 × k holds any of them), yet the answer is the exact one: a row whose k-th exact score is
    not clear of what an item outside the spare might score is scored over the whole head. Where the items are
    clearly apart, the spare settles every row without that scan."""
    rng = np.random.default_rng(21)
    base = 10.0 * rng.standard_normal(DIM).astype(np.float32)
    alike = base + 1e-4 * rng.standard_normal((150, DIM)).astype(np.float32)  # the head: the largest norms
    quiet = 0.1 * rng.standard_normal((150, DIM)).astype(np.float32)  # the graph's
    queries = base + rng.standard_normal((30, DIM)).astype(np.float32)
    spread = np.concatenate([varied_norms(rng, 150) * 10.0, quiet])
    widths: list[int] = []

    def recording_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        widths.append(scores.shape[1])
        return top_k(scores, k)

    for items, rescans in ((np.concatenate([alike, quiet]), True), (spread, False)):
        headed, truth = hnsw(items, hnsw_head_share=0.5), exact(items)
        assert set(headed._norm_head().tolist()) == set(range(150))
        for k in (1, 3, 10):
            for allowed in (None, rng.random(300) < 0.7):
                want, want_scores = truth.search(queries, k, allowed)
                widths.clear()
                with graph_for_every_row(), pytest.MonkeyPatch.context() as patch:
                    patch.setattr(index_module, "top_k", recording_top_k)
                    got, scores = headed.search(queries, k, allowed)
                np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
                # the exact answer up to float32's rounding: items whose true scores are equal to within it may
                # trade places (two float32 sums in different orders), any other difference fails
                true = queries.astype(np.float64) @ items.astype(np.float64).T
                for row in range(len(queries)):
                    assert len(set(got[row].tolist())) == k and (allowed is None or allowed[got[row]].all())
                    np.testing.assert_allclose(true[row, got[row]], true[row, want[row]], rtol=1e-6)
                assert (150 in widths) == rescans  # the whole head's 150 scored, or the spare's 4 × k alone


def test_the_head_is_the_largest_norms_and_follows_added_and_updated_items() -> None:
    rng = np.random.default_rng(4)
    items = varied_norms(rng, 1_000)
    index = hnsw(items, hnsw_m=2, hnsw_ef_construction=2, hnsw_ef_search=1, hnsw_head_share=0.008)
    norms = np.linalg.norm(items, axis=1)
    np.testing.assert_array_equal(index._norm_head(), np.sort(np.argsort(-norms)[:8]))
    direction = rng.standard_normal(DIM).astype(np.float32)
    loud = 100.0 * direction / np.linalg.norm(direction)
    index.update(np.array([17]), loud[None, :])  # item 17 now has by far the largest vector
    ids, _ = index.search(direction, 1)
    assert ids[0] == 17 and 17 in index._norm_head()
    (new,) = index.add(2.0 * loud[None, :])
    ids, _ = index.search(direction, 2)
    assert ids.tolist() == [new, 17]
    index.remove(np.array([new]))
    assert index.search(direction, 1)[0].tolist() == [17]


def test_a_graph_grown_by_live_adds_carries_every_new_item() -> None:
    """The graph's item table grows by doubling as items are added live; carrying it must insert the items past
    those it knows, not past its capacity (a session-22 graph counted its capacity and left them out)."""
    rng = np.random.default_rng(13)
    items = rng.standard_normal((2000, DIM)).astype(np.float32)
    index = hnsw(items)
    index.add(rng.standard_normal((1, DIM)).astype(np.float32))  # the item table's capacity doubles past 2001
    assert len(index._ann.item_node) > 2001 and index._ann.n_items == 2001
    after = np.concatenate([index._buffer[:2001], rng.standard_normal((50, DIM)).astype(np.float32)])
    carried = VectorIndex.carried(index, after)
    assert carried is not None and carried._ann.n_nodes == 2051
    assert (carried._ann.item_node[2001:2051] >= 0).all()
    found, _ = carried.search(after[2001:], 10)  # the graph reaches the new items: recall against exact scoring
    wanted, _ = exact(after).search(after[2001:], 10)
    assert np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, wanted, strict=True)]) >= 0.95
