"""``AllowedItems``: a shared base mask less a query's own ids, read without a pass over the catalogue.

It must say exactly what the dense mask says (its count, its packed bits, membership), and every search path must
answer a query filtered by it exactly as it answers the same query filtered by the dense mask.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.retrieval import AllowedBase, AllowedItems, VectorIndex
from liverec.state import Catalogue

from .test_hnsw import check_result, graph_for_every_row, hnsw, varied_norms


def dense(base: np.ndarray, removed: np.ndarray) -> np.ndarray:
    mask = base.copy()
    inside = removed[(removed >= 0) & (removed < len(base))]
    mask[inside] = False
    return mask


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(0, 70),
    density=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    n_removed=st.integers(0, 30),
    prefix=st.integers(0, 80),
)
def test_the_filter_says_what_its_dense_mask_says(
    seed: int, n_items: int, density: float, n_removed: int, prefix: int
) -> None:
    rng = np.random.default_rng(seed)
    base_mask = rng.random(n_items) < density
    removed = rng.integers(-3, n_items + 3, size=n_removed)  # repeats, and ids outside the catalogue: ignored
    allowed = AllowedItems(AllowedBase(base_mask), removed)
    expected = dense(base_mask, removed)
    assert len(allowed) == n_items
    np.testing.assert_array_equal(allowed.mask, expected)
    assert allowed.count == int(expected.sum())
    np.testing.assert_array_equal(allowed.bits(), np.packbits(expected, bitorder="little"))
    if n_items:
        ids = rng.integers(0, n_items, size=(3, 5))
        np.testing.assert_array_equal(allowed.contains(ids), expected[ids])
    head = allowed.prefix(prefix)
    np.testing.assert_array_equal(head.mask, expected[:prefix])
    assert head.count == int(expected[:prefix].sum())
    np.testing.assert_array_equal(head.bits(), np.packbits(expected[:prefix], bitorder="little"))


def test_the_base_and_the_dense_mask_are_read_only_and_bits_are_the_callers() -> None:
    source = np.array([True, False, True, True])
    base = AllowedBase(source)
    allowed = AllowedItems(base, [0])
    source[1] = True  # the caller's array: the base keeps its own view, which it does not let anyone write
    with pytest.raises(ValueError, match="read-only"):
        base.mask[0] = False
    with pytest.raises(ValueError, match="read-only"):
        allowed.mask[2] = False
    bits = allowed.bits()
    bits[0] = 0xFF  # a copy: the base's packed bits are untouched
    np.testing.assert_array_equal(allowed.bits(), np.packbits([False, False, True, True], bitorder="little"))
    with pytest.raises(TypeError, match="1-D boolean"):
        AllowedBase(np.ones(3, dtype=np.int8))


PATHS = ["exact", "float16", "ivf", "hnsw", "hnsw-head", "hnsw-removed"]


def index_of_kind(kind: str, items: np.ndarray, rng: np.random.Generator) -> VectorIndex:
    """An index over ``items`` whose searches take one of the :data:`PATHS` (``hnsw-removed``: 40 items removed)."""
    if kind.startswith("hnsw"):
        index = hnsw(items, hnsw_head_share=0.05 if kind == "hnsw-head" else 0.0)
    else:
        options = {
            "exact": {"ann_threshold": 10**6},
            "float16": {"ann_threshold": 10**6, "compact_threshold": 1},
            "ivf": {"ann_threshold": 0, "ann_kind": "ivf"},
        }[kind]
        index = VectorIndex(items, **options)  # type: ignore[arg-type]
    if kind == "hnsw-removed":
        index.remove(rng.choice(len(items), size=40, replace=False))
    return index


@pytest.mark.parametrize("kind", PATHS)
def test_every_search_path_answers_a_filter_as_it_answers_its_dense_mask(kind: str) -> None:
    rng = np.random.default_rng(11)
    n_items, dim = 3000, 16
    items = varied_norms(rng, n_items, dim)
    queries = rng.standard_normal((12, dim)).astype(np.float32)
    index = index_of_kind(kind, items, rng)
    base = AllowedBase(rng.random(n_items) < 0.9)
    for row in range(len(queries)):
        # the query's own nearest items removed, as a user's seen items are: the filter must be read, not skipped
        nearest = np.argsort(-(items @ queries[row]))[:25]
        removed = np.concatenate([nearest, rng.choice(n_items, size=20)])
        allowed = AllowedItems(base, removed)
        with graph_for_every_row():
            by_filter = index.search(queries[row], 10, allowed)
            by_mask = index.search(queries[row], 10, allowed.mask.copy())
        np.testing.assert_array_equal(by_filter[0], by_mask[0])
        np.testing.assert_array_equal(by_filter[1], by_mask[1])
        check_result(index, queries[row : row + 1], 10, allowed.mask, by_filter[0][None], by_filter[1][None])
    with pytest.raises(ValueError, match="expected 3000 items"):
        index.search(queries[0], 10, AllowedItems(AllowedBase(np.ones(n_items - 1, dtype=bool))))


@pytest.mark.parametrize("every_row_to_the_graph", [False, True])
@pytest.mark.parametrize("kind", PATHS)
def test_one_filter_per_query_answers_each_row_as_it_is_answered_alone(kind: str, every_row_to_the_graph: bool) -> None:
    """A batch of queries, each with its own :class:`AllowedItems` (a server's batch of requests): every row's answer
    is the one it gets searched alone, on every path, with the head, removed items, a few-item row and an empty
    one."""
    rng = np.random.default_rng(12)
    n_items, dim = 3000, 16
    items = varied_norms(rng, n_items, dim)
    queries = rng.standard_normal((9, dim)).astype(np.float32)
    index = index_of_kind(kind, items, rng)
    shared, few = AllowedBase(rng.random(n_items) < 0.9), AllowedBase(rng.random(n_items) < 0.002)
    filters = []
    for row in range(len(queries)):
        nearest = np.argsort(-(items @ queries[row]))[: 5 * row]  # a user's seen items: the best ones, 0 to 40
        base = few if row == 3 else AllowedBase(np.zeros(n_items, dtype=bool)) if row == 5 else shared
        filters.append(AllowedItems(base, nearest))
    with graph_for_every_row() if every_row_to_the_graph else nullcontext():
        ids, scores = index.search(queries, 10, filters)
        for row, allowed in enumerate(filters):
            alone = index.search(queries[row], 10, allowed)
            np.testing.assert_array_equal(ids[row], alone[0])
            np.testing.assert_array_equal(scores[row], alone[1])
            check_result(index, queries[row : row + 1], 10, allowed.mask, ids[row][None], scores[row][None])
        with pytest.raises(ValueError, match="one AllowedItems per query"):
            index.search(queries, 10, filters[:-1])
        with pytest.raises(ValueError, match="one AllowedItems per query"):
            index.search(queries[0], 10, filters[:1])
        with pytest.raises(TypeError, match="AllowedItems per query"):
            index.search(queries[:2], 10, [filters[0], filters[1].mask])


def test_a_catalogue_shares_one_base_until_it_changes() -> None:
    catalogue = Catalogue()
    for index in range(6):
        catalogue.set(index, {"categories": ["shoes" if index % 2 else "hats"]})
    first = catalogue.allowed_base(6)
    assert catalogue.allowed_base(6) is first and first.count == 6  # built once, shared by every request
    shoes = catalogue.allowed_base(6, include=["shoes"])
    np.testing.assert_array_equal(shoes.mask, [False, True, False, True, False, True])
    np.testing.assert_array_equal(catalogue.allowed_base(6, exclude=["shoes"]).mask, ~shoes.mask)
    catalogue.set(3, {"categories": ["shoes"], "available": False})  # a withdrawn item leaves every base at once
    assert catalogue.allowed_base(6) is not first and catalogue.allowed_base(6).count == 5
    np.testing.assert_array_equal(catalogue.allowed_base(6, include=["shoes"]).mask, [0, 1, 0, 0, 0, 1])
    catalogue.remove(5)
    np.testing.assert_array_equal(catalogue.allowed_base(6, include=["shoes"]).mask, [0, 1, 0, 0, 0, 0])
    grown = catalogue.allowed_base(2000)  # an item first seen in an event: available, in no category
    assert len(grown) == 2000 and grown.count == 2000 - 2
    assert np.array_equal(first.mask, np.ones(6, dtype=bool))  # a base handed out earlier never changes
    for n_items in range(7, 7 + 2 * Catalogue.ALLOWED_BASES):  # a bounded cache
        catalogue.allowed_base(n_items)
    assert len(catalogue._bases) == Catalogue.ALLOWED_BASES
