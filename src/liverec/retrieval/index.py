"""Top-``k`` by inner product over item vectors (SASRec serves ``score = user_vector · item_vector``).

:class:`VectorIndex` is exact below ``ann_threshold`` items and uses a FAISS ``IndexIVFFlat`` at or above
it. Both modes give the same result guarantees as :func:`~liverec.retrieval.topk.top_k_allowed`: no
disallowed item, exactly ``k`` results whenever ``k`` items are allowed, padding (id -1, score -inf)
otherwise, ties towards the lower item id.

Design (the measurements behind each choice are in docs/results.md, "Retrieval: the measurements behind
``VectorIndex``"; ``benchmarks/bench_retrieval.py`` reproduces the main ones):

* Exact scoring is one NumPy (OpenBLAS) matmul plus :func:`top_k_allowed`: NumPy was as fast as torch or
  faster at every size and batch measured. BLAS threads are a process-wide setting
  (``OPENBLAS_NUM_THREADS``); this module leaves them alone.
* The ANN index is IVF-Flat (about sqrt(n) lists, nprobe=32), not HNSW: HNSW was faster on easy queries
  but took far longer to build (on every model swap), and lost much more recall on queries off the item
  clusters — inner product is not a metric, and graph search suffers from it when norms vary (they carry
  popularity in these models). IVF-Flat also supports what live serving needs: ``add`` continues the id
  range and ``update`` moves a vector to its new list in place (a direct map), where HNSW can neither
  remove nor change a vector. New items go to the nearest existing centroid; centroids are not retrained
  (a retrained model builds a new index anyway). ``nprobe`` trades latency for recall.
* Filters on the ANN path: rows whose allowed set is small (under 5 % of the catalogue, under 1024 items,
  or under ``k``) are scored exactly over the allowed items only, which is cheaper than searching the
  index for them. Other rows over-fetch ``over_fetch · k / allowed-fraction`` neighbours, drop disallowed
  ones, and double the fetch while short; once the probed lists are exhausted (FAISS pads with -1) or the
  fetch reaches the catalogue, the row falls back to exact scoring restricted to the allowed items, so a
  filter never leaves fewer than ``k`` results when ``k`` items are eligible.
* Exact scoring of large catalogues in float16 (``compact_threshold``): the scan reads the item vectors, a
  memory-bound pass (26 MB at 100k x 64 floats), so above ``compact_threshold`` items a FAISS scalar-quantizer
  index holds a float16 copy (half the bytes, and FAISS's scan fuses the top-k and the allowed-item bitmap).
  It fetches the best ``k + 32`` allowed items by float16 score and re-ranks them in float32. The answer is
  still the float32 scan's: the rounding of a vector to float16 moves a score by at most
  ``|q| * max|v| * (2^-11 + d * 2^-23)`` (``E``), so an item left out, whose float16 score is at most the last
  fetched one's ``c``, has an exact score of at most ``c + E``; when the k-th best re-ranked score is above
  ``c + 2E`` nothing left out can enter the top-k, and otherwise (rare: near-ties at the cut) the row is
  scored in float32. Per-row masks also take the float32 path. Figures: ``docs/results.md`` ("The running engine").
* The item vectors are also kept in NumPy (FAISS holds a second copy on the ANN path) for the exact
  fallbacks; in a growing buffer, so that adding live items one at a time costs amortised O(1), not a
  copy of the catalogue.

Not thread-safe for writes: ``add`` and ``update`` must not run concurrently with ``search`` (the engine
serialises them, or builds a new index and swaps the reference). Concurrent searches are fine.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from typing import Any, Literal

import numpy as np

from liverec.retrieval.topk import top_k_allowed, top_k_candidates

__all__ = ["Metric", "VectorIndex", "exact_recall", "limit_threads"]

logger = logging.getLogger(__name__)

Metric = Literal["ip", "cosine"]

#: ANN rows allowing fewer items than this fraction of the catalogue are scored exactly over those items.
_EXACT_FRACTION = 0.05
#: ... and so are rows allowing fewer items than this: scoring 1024 vectors costs less than one IVF probe.
_EXACT_MIN_COUNT = 1024
#: exact scoring copies out the allowed items' vectors when they are at most this fraction of the catalogue
#: (gather + matmul over s items costs about what a matmul over 2·s items does for one query).
_GATHER_FRACTION = 0.5
#: exact scoring works through the queries in chunks whose score matrix has at most this many entries (64 MB).
_CHUNK_ENTRIES = 1 << 24
#: candidates fetched beyond k by the float16 scan before the float32 re-rank.
_COMPACT_EXTRA = 32
#: largest coordinate stored in float16 (its maximum is 65504; beyond it vectors stay float32).
_FLOAT16_SAFE = 60_000.0
#: k-means training sample per IVF list (FAISS wants at least 39; more barely changes the centroids).
_TRAIN_POINTS_PER_LIST = 64


class VectorIndex:
    """Top-``k`` inner-product search over ``[n_items, d]`` item vectors with allowed-item masks.

    ``ann_threshold``: catalogues of at least this many items use FAISS IVF-Flat (extra ``ann``); if FAISS
    is not installed a warning is logged once and the index stays exact. ``metric``: ``"ip"`` (inner
    product) or ``"cosine"`` (vectors and queries are L2-normalised, then inner product). ``nlist``: IVF
    lists (default ~sqrt(n_items), at most n_items / 39 so that k-means has enough points per list);
    ``nprobe``: lists searched per query (recall vs latency). ``over_fetch``: neighbours fetched per
    wanted result on filtered ANN searches, before the allowed fraction is accounted for. ``seed``: drives
    the k-means training sample and initialisation.
    """

    def __init__(
        self,
        item_vectors: np.ndarray,
        *,
        ann_threshold: int = 200_000,
        metric: Metric = "ip",
        nlist: int | None = None,
        nprobe: int = 32,
        over_fetch: float = 2.0,
        seed: int = 0,
        compact_threshold: int | None = None,
    ) -> None:
        if metric not in ("ip", "cosine"):
            raise ValueError(f"metric: expected 'ip' or 'cosine', got {metric!r}")
        if ann_threshold < 0:
            raise ValueError(f"ann_threshold: expected a non-negative integer, got {ann_threshold}")
        if nlist is not None and nlist < 1:
            raise ValueError(f"nlist: expected a positive integer or None, got {nlist}")
        if nprobe < 1:
            raise ValueError(f"nprobe: expected a positive integer, got {nprobe}")
        if not over_fetch >= 1:
            raise ValueError(f"over_fetch: expected a number >= 1, got {over_fetch}")
        vectors = np.asarray(item_vectors)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ValueError(f"item_vectors: expected shape [n_items, d] with d >= 1, got {vectors.shape}")
        self._metric = metric
        self._ann_threshold = ann_threshold
        self._nlist = nlist
        self._nprobe = nprobe
        self._over_fetch = over_fetch
        self._seed = seed
        self._dim = vectors.shape[1]
        self._buffer = self._prepare(vectors, "item_vectors")
        self._n = len(self._buffer)
        self._ann: Any = None
        self._compact_threshold = compact_threshold
        self._compact: Any = None  # FAISS float16 copy for exact scans (module docstring)
        self._max_norm = 0.0
        self.compact_fallbacks = 0  # rows the float16 scan could not decide (scored in float32 instead)
        self._maybe_build_ann()
        self._maybe_build_compact()

    # ----------------------------------------------------------------- properties
    @property
    def n_items(self) -> int:
        """Number of items; ids are ``0 .. n_items - 1`` in the order the vectors were given."""
        return self._n

    @property
    def dim(self) -> int:
        """Vector dimension ``d``."""
        return self._dim

    @property
    def is_compact(self) -> bool:
        """True while exact searches scan a float16 copy and re-rank in float32 (``compact_threshold``)."""
        return self._ann is None and self._compact is not None

    @property
    def is_exact(self) -> bool:
        """True while searches score every item (below ``ann_threshold``, or FAISS missing)."""
        return self._ann is None

    # ----------------------------------------------------------------- writes
    def add(self, new_vectors: np.ndarray) -> np.ndarray:
        """Append items (``[m, d]``); returns their ids, which continue from ``n_items``.

        Reaching ``ann_threshold`` this way builds the FAISS index here, in the writer's call, rather than
        inside a later search.
        """
        new = self._prepare(new_vectors, "new_vectors")
        start, stop = self._n, self._n + len(new)
        if stop > len(self._buffer):
            grown = np.empty((max(stop, 2 * len(self._buffer)), self._dim), dtype=np.float32)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:stop] = new
        if self._ann is not None:
            self._ann.add(new)
        self._n = stop
        self._maybe_build_ann()
        if self._compact is not None:
            if np.abs(new).max(initial=0.0) > _FLOAT16_SAFE:
                self._compact = None  # float16 would overflow: exact scans stay float32 from now on
            else:
                self._compact.add(new)
                self._max_norm = max(self._max_norm, _max_norm(new))
        self._maybe_build_compact()
        return np.arange(start, stop, dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of existing items ``ids`` (unique) with ``vectors`` (``[len(ids), d]``).

        Exact mode writes in place; FAISS mode moves each vector to its nearest list in place too (the
        IVF index keeps a direct map from id to list entry), so no rebuild is needed.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self._n):
            raise ValueError(f"ids: expected values in [0, {self._n}), got min {ids.min()} max {ids.max()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids: expected unique ids")
        new = self._prepare(vectors, "vectors")
        if len(new) != len(ids):
            raise ValueError(f"vectors: expected {len(ids)} rows (one per id), got {len(new)}")
        self._buffer[ids] = new
        if self._ann is not None:
            self._ann.update_vectors(ids, new)
        if self._compact is not None:  # the scalar quantizer cannot replace vectors: re-encode (~ms at 100k)
            self._compact = None
            self._maybe_build_compact()

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids (int64) and scores (float32) per query, best first.

        ``queries`` is ``[b, d]`` (results ``[b, k]``) or ``[d]`` (results ``[k]``). ``allowed`` is a
        boolean ``[n_items]`` mask shared by all queries, a ``[b, n_items]`` mask, or None.
        """
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        raw = np.asarray(queries)
        single = raw.ndim == 1
        batch = self._prepare(raw[None, :] if single else raw, "queries")
        mask = _check_mask(allowed, len(batch), self._n, single)
        if self._ann is None and self._compact is not None and (mask is None or mask.ndim == 1):
            ids, scores = self._search_compact(batch, k, mask)
        elif self._ann is None:
            ids, scores = self._search_exact(batch, k, mask)
        else:
            ids, scores = self._search_ann(batch, k, mask)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _search_exact(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Score every (allowed) item: one matmul per chunk of queries, then :func:`top_k_allowed`."""
        vectors = self._buffer[: self._n]
        columns = None
        if allowed is not None:
            union = allowed if allowed.ndim == 1 else allowed.any(axis=0)
            # counting is ~10x cheaper than listing 100k flags, and most requests allow nearly everything
            if np.count_nonzero(union) <= _GATHER_FRACTION * self._n:
                allowed_ids = np.flatnonzero(union)
                columns, vectors = allowed_ids, vectors[allowed_ids]
                # a shared mask allows every gathered item; a per-row mask still differs between rows
                allowed = None if allowed.ndim == 1 else allowed[:, allowed_ids]
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        step = max(1, _CHUNK_ENTRIES // max(len(vectors), 1))
        for start in range(0, len(queries), step):
            rows = slice(start, start + step)
            mask = allowed[rows] if allowed is not None and allowed.ndim == 2 else allowed
            ids[rows], scores[rows] = top_k_allowed(queries[rows] @ vectors.T, k, mask)
        if columns is not None:
            found = ids >= 0
            ids[found] = columns[ids[found]]
        return ids, scores

    def _search_compact(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Float16 scan for candidates, float32 re-rank, float32 scan where the rounding bound cannot decide."""
        faiss = _load_faiss()
        n, n_rows = self._n, len(queries)
        fetch = min(n, k + _COMPACT_EXTRA)
        params = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)))
        approximate, found = self._compact.search(queries, fetch, params=params)
        ids = np.full((n_rows, k), -1, dtype=np.int64)
        scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
        valid = found >= 0
        # the candidates in ascending id order (padding -1 first) for the lower-id tie rule
        keys = np.where(valid, found, -1)
        order = np.argsort(keys, axis=1)
        keys = np.take_along_axis(keys, order, axis=1)
        exact = np.einsum("rd,rcd->rc", queries, self._buffer[np.maximum(keys, 0)])
        exact = np.where(keys >= 0, exact, -np.inf).astype(np.float32)
        ids[:], scores[:] = top_k_candidates(keys, exact, k)
        # every allowed item was fetched (a padded row) -> exact; else the bound must separate the cut
        complete = ~valid.all(axis=1) | (fetch >= n)
        bound = np.linalg.norm(queries, axis=1) * self._max_norm * (2.0**-11 + self._dim * 2.0**-23)
        last_fetched = approximate[:, -1]
        decided = complete | ((scores[:, -1] > last_fetched + 2 * bound) & (ids[:, -1] >= 0))
        undecided = np.flatnonzero(~decided)
        if len(undecided):
            self.compact_fallbacks += len(undecided)
            ids[undecided], scores[undecided] = self._search_exact(queries[undecided], k, allowed)
        return ids, scores

    def _search_ann(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """IVF search with over-fetching for filters, and exact scoring where the filter leaves few items."""
        n, n_rows = self._n, len(queries)
        ids = np.full((n_rows, k), -1, dtype=np.int64)
        scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
        if allowed is None:
            counts = np.full(n_rows, n)
        elif allowed.ndim == 1:
            counts = np.full(n_rows, np.count_nonzero(allowed))
        else:
            counts = np.count_nonzero(allowed, axis=1)
        few = counts < max(k, _EXACT_FRACTION * n, _EXACT_MIN_COUNT)
        exact_rows = [np.flatnonzero(few)]
        pending = np.flatnonzero(~few)
        # expect over_fetch·k allowed hits when the filter is independent of the score
        fetch = min(n, math.ceil(self._over_fetch * k * n / counts[pending].min())) if len(pending) else n
        while len(pending):
            distances, found = self._ann.search(queries[pending], fetch)
            valid = found >= 0
            if allowed is not None:
                where = np.maximum(found, 0)
                valid &= allowed[where] if allowed.ndim == 1 else np.take_along_axis(allowed[pending], where, axis=1)
            enough = np.count_nonzero(valid, axis=1) >= k
            if enough.any():
                # order each row's candidates by id (rejected ones first, as -1) for the lower-id tie rule
                keys = np.where(valid[enough], found[enough], -1)
                order = np.argsort(keys, axis=1)
                candidate_scores = np.where(valid[enough], distances[enough], -np.inf)
                ids[pending[enough]], scores[pending[enough]] = top_k_candidates(
                    np.take_along_axis(keys, order, axis=1),
                    np.take_along_axis(candidate_scores, order, axis=1),
                    k,
                )
            # FAISS pads with -1 once the probed lists hold no more items: fetching more cannot help then
            exhausted = ~enough & ((found < 0).any(axis=1) | (fetch >= n))
            exact_rows.append(pending[exhausted])
            pending = pending[~enough & ~exhausted]
            fetch = min(n, 2 * fetch)
        rows = np.concatenate(exact_rows)
        if len(rows):
            mask = allowed[rows] if allowed is not None and allowed.ndim == 2 else allowed
            ids[rows], scores[rows] = self._search_exact(queries[rows], k, mask)
        return ids, scores

    # ----------------------------------------------------------------- internals
    def _prepare(self, vectors: np.ndarray, name: str) -> np.ndarray:
        """``vectors`` as a new C-contiguous float32 ``[m, d]`` array, checked finite, normalised for cosine."""
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape[1] != self._dim:
            raise ValueError(f"{name}: expected shape [m, {self._dim}], got {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ValueError(f"{name}: expected finite real numbers")
        array = np.array(array, dtype=np.float32, order="C", copy=True)
        if self._metric == "cosine":
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            np.divide(array, norms, out=array, where=norms > 0)
        return array

    def _maybe_build_ann(self) -> None:
        """Build the IVF-Flat index once the catalogue reaches ``ann_threshold`` (and FAISS is installed)."""
        if self._ann is not None or self._n < max(self._ann_threshold, 1):
            return
        faiss = _load_faiss()
        if faiss is None:
            return
        vectors = self._buffer[: self._n]
        nlist = min(self._nlist or max(1, min(round(math.sqrt(self._n)), self._n // 39)), self._n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self._dim), self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self._seed
        n_train = min(self._n, _TRAIN_POINTS_PER_LIST * nlist)
        if n_train < self._n:
            rng = np.random.default_rng(self._seed)
            index.train(vectors[np.sort(rng.choice(self._n, n_train, replace=False))])
        else:
            index.train(vectors)
        index.set_direct_map_type(faiss.DirectMap.Array)  # id -> list entry, for update()
        index.add(vectors)
        index.nprobe = min(self._nprobe, nlist)
        self._ann = index

    def _maybe_build_compact(self) -> None:
        """Keep a float16 copy for exact scans once the catalogue reaches ``compact_threshold`` (with FAISS)."""
        if self._compact is not None or self._compact_threshold is None or self._n < max(self._compact_threshold, 1):
            return
        faiss = _load_faiss()
        vectors = self._buffer[: self._n]
        if faiss is None or np.abs(vectors).max(initial=0.0) > _FLOAT16_SAFE:
            return
        index = faiss.IndexScalarQuantizer(self._dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors)
        self._compact = index
        self._max_norm = _max_norm(vectors)


def _max_norm(vectors: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max(initial=0.0)))


def exact_recall(index: VectorIndex, queries: np.ndarray, k: int = 10) -> float:
    """Mean recall@k of ``index.search`` against exact scoring of the same vectors (1.0 for exact indexes).

    Recall of a query is the share of its exact top-``k`` ids that the index also returns.
    """
    found, _ = index.search(queries, k)
    batch = index._prepare(np.atleast_2d(queries), "queries")
    truth, _ = index._search_exact(batch, k, None)
    found = np.atleast_2d(found)
    relevant = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & relevant[:, None, :]).any(axis=2).sum(axis=1)
    recall = hits / np.maximum(relevant.sum(axis=1), 1)
    return float(recall.mean()) if len(recall) else 1.0


def limit_threads(threads: int) -> None:
    """Give retrieval's native thread pools (NumPy's BLAS, FAISS's OpenMP) at most ``threads`` threads.

    Their default, one thread per core, spin-waits on a core another process is using (a load generator, a
    worker, another replica): exact top-k's matrix-vector product then takes several times longer (see
    docs/results.md). FAISS is imported first, so that the OpenMP limit reaches its runtime too.
    """
    from threadpoolctl import threadpool_limits

    _load_faiss()
    threadpool_limits(limits=threads, user_api="blas")
    threadpool_limits(limits=threads, user_api="openmp")


@functools.cache
def _load_faiss() -> Any:
    """The ``faiss`` module, imported on first use; None (with one warning per process) if it is missing."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        logger.warning(
            "faiss is not installed (pip install 'liverec[ann]'): vector search stays exact above ann_threshold"
        )
        return None


def _check_mask(allowed: np.ndarray | None, n_rows: int, n_items: int, single: bool) -> np.ndarray | None:
    """``allowed`` validated as a boolean ``[n_items]`` or ``[n_rows, n_items]`` mask."""
    if allowed is None:
        return None
    mask = np.asarray(allowed)
    if mask.dtype != np.bool_:
        raise TypeError(f"allowed: expected a boolean mask, got dtype {mask.dtype}")
    shapes = ((n_items,),) if single else ((n_items,), (n_rows, n_items))
    if mask.shape not in shapes:
        raise ValueError(f"allowed: expected shape {' or '.join(map(str, shapes))}, got {mask.shape}")
    return mask
