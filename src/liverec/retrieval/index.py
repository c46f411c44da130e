"""Top-``k`` by inner product over item vectors (SASRec serves ``score = user_vector · item_vector``).

:class:`VectorIndex` is exact below ``ann_threshold`` items and uses an approximate FAISS index at or above
it: ``IndexIVFFlat`` (``ann_kind="ivf"``, the default) or ``IndexHNSWFlat`` over the inner-product reduction
(``"hnsw"``). Every mode gives the result guarantees of :func:`~liverec.retrieval.topk.top_k_allowed`: no
disallowed (or removed) item, exactly ``k`` results whenever ``k`` items are allowed, padding (id -1, score
-inf) otherwise, scores the float32 inner products. What the approximate modes relax: which items make the
top ``k`` (an item the search did not reach is missing; recall is measured, not guaranteed), and so ties
go to the lower id only among the items found.

Design (the measurements behind each choice are in docs/results.md, "Retrieval: the measurements behind
``VectorIndex``"; ``benchmarks/bench_retrieval.py`` reproduces the main ones):

* Exact scoring is one NumPy (OpenBLAS) matmul plus :func:`top_k_allowed`: NumPy was as fast as torch or
  faster at every size and batch measured. BLAS threads are a process-wide setting
  (``OPENBLAS_NUM_THREADS``); this module leaves them alone.
* IVF-Flat (about sqrt(n) lists, nprobe=32): fast to build, and ``add`` continues the id range and
  ``update`` moves a vector to its new list in place (a direct map). New items go to the nearest existing
  centroid; centroids are not retrained (a retrained model builds a new index anyway). ``nprobe`` trades
  latency for recall. An earlier comparison rejected HNSW on plain inner product: slower to build, and
  far less recall when norms vary (they carry popularity in these models) — inner product is not a
  metric, and a graph built on it has no triangle inequality to lean on.
* HNSW over the inner-product reduction (Bachrach et al. 2014, "Speeding up the Xbox recommender system using
  a Euclidean transformation"): each item vector ``v`` is stored as ``[v, sqrt(M² - |v|²)]`` and a query ``q``
  searched as ``[q, 0]``; every stored vector then has norm ``M`` and ``|q' - v'|² = |q|² + M² - 2 q·v``, so
  the L2 nearest neighbours are exactly the inner-product best, and the graph is built and searched in a true
  metric. ``M`` is 1.05 times the largest norm at build: items added or updated later with norms up to that
  still fit as graph inserts; a larger one rebuilds the graph in the writer's call (a model swap builds a new
  index anyway). More headroom would mean fewer rebuilds but costs recall: the reduction moves small-norm
  items towards the pole of the sphere, and the larger ``M`` is, the more alike they look to the graph. The
  reduction's weak spot: one item whose norm is far above the rest puts every other item near the pole, and
  such an outlier can become hard for the graph search to reach (seen in a test with log-normal norms). So the
  graph does not hold the items of largest norm: the ``hnsw_head_share`` of them (1/16) form the *head*, scored
  exactly beside every graph search (FAISS's flat scan of float16 codes keeps its best few in a heap; they are
  re-scored in float32, with the rounding bound of the float16 scan below deciding each row), and the graph, built over
  the rest, takes its radius from the rest's largest norm. A trained model's popular items have the largest
  vectors and fill most users' top ten; with them in the graph (sessions 22-23) the radius was set by them, every
  other item sat near the pole, and the filtered search's candidate list filled with head nodes it had to skip,
  so it needed efSearch 512. Without them, at 917k trained items, efSearch 32-512 all find recall@10 0.979 with
  filters, and a query costs half as much (docs/results.md, "Session 24"). An item added, or updated, with a
  norm beyond the graph's radius joins the head instead of forcing a rebuild; once the head has grown past twice
  its share (plus 1,024 items) the graph is rebuilt. Filters run inside the search: the allowed mask becomes a
  FAISS ``IDSelectorBitmap`` over item ids, read through ``IDSelectorTranslated`` (node → item), so the search
  keeps walking until it has ``k`` allowed items or its candidate list (``efSearch``) is spent; a row left
  short is scored exactly over its allowed items. HNSW cannot move or delete a node: ``update`` inserts the new
  vector as a new node, maps the item to it and marks the old node stale (its label becomes -1, which no mask
  allows: routed through, never returned); once stale nodes exceed a quarter of the graph it is rebuilt over
  the current vectors: stale nodes cost memory and a share of each search's visits (reasoned, not measured:
  about their share of the graph), a rebuild costs one build time, and a quarter keeps the first bounded while
  making the second rare (figures in docs/results.md, "Session 19").
  FAISS was chosen over hnswlib by measurement: hnswlib filters through a Python callback per visited
  candidate (5 ms per search with a 10 % category filter at ef 256). ``VectorIndex`` defaults to IVF; the
  engine's setting ``ann_kind`` defaults to HNSW (recall@10 with filters 0.955-0.986 at efSearch 512 before the
  head left the graph, where IVF found 0.24-0.89; 0.979 at 917k items with efSearch 128, the default now).
* A new model version need not rebuild the graph (:meth:`VectorIndex.succeed`): an online update moves the item
  vectors and appends new items, and the previous version's graph — its links — still routes searches among
  the new vectors. ``carried`` clones it, overwrites each node's stored vector with its item's new one (the links
  stay; norms grown past the reduction's radius move the radius out), and inserts the new items; ``succeed``
  then *checks* it — recall@10 against exact scoring on the new model's query vectors — and keeps it while that
  stays within ``tolerance`` (0.02) of what the last fresh graph found on its own check. Below that it builds
  afresh, checks the fresh graph on the same queries, and keeps the better of the two (the fresh check becomes
  the standard): so repeated carries cannot drift down one tolerated step at a time, and a build happens only
  when the check says one might help (figures in docs/results.md, "Carrying the graph across versions").
* ``remove`` takes items out at once on every path: a removed-item mask is ANDed into the allowed mask of
  every search (no rebuild); ids stay taken.
* Filters on the ANN paths: rows whose allowed set is small (under 5 % of the catalogue, under 1024 items,
  or under ``k``) are scored exactly over the allowed items only, which is cheaper than searching the
  index for them. Other IVF rows over-fetch ``over_fetch · k / allowed-fraction`` neighbours, drop disallowed
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

Not thread-safe for writes: ``add``, ``update`` and ``remove`` must not run concurrently with ``search`` (the engine
serialises them, or builds a new index and swaps the reference). Concurrent searches are fine.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from liverec.retrieval.allowed import AllowedItems
from liverec.retrieval.topk import top_k, top_k_allowed, top_k_candidates

__all__ = ["ANN_KINDS", "AnnKind", "Metric", "VectorIndex", "exact_recall", "limit_threads"]

logger = logging.getLogger(__name__)

Metric = Literal["ip", "cosine"]
AnnKind = Literal["ivf", "hnsw"]
#: What a search's paths take as its filter: none, a shared or per-row mask, a shared AllowedItems, one per row.
Filter = np.ndarray | AllowedItems | list[AllowedItems] | None
#: the approximate indexes :class:`VectorIndex` can build at or above ``ann_threshold``
ANN_KINDS: tuple[AnnKind, ...] = ("ivf", "hnsw")

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
#: the HNSW reduction's radius M is this many times the largest item norm at build, so that items added or
#: updated later with slightly larger norms still fit without a rebuild (one beyond it rebuilds the graph).
#: Headroom costs recall (docs/results.md, session 19, efSearch 256-512 at 100k items: 1.2 lost 2-3.5 points of
#: recall@10 against 1.0, 1.05 lost 0.4-1 point), so it is small.
_NORM_HEADROOM = 1.05
#: the HNSW graph is rebuilt once stale nodes (left behind by ``update``) exceed this share of its nodes.
_STALE_FRACTION = 0.25
#: ... or once the items outside it (the head) exceed this many times the build's head share, plus _HEAD_SLACK
_HEAD_GROWTH = 2
_HEAD_SLACK = 1024
#: rows reduced per block when a graph is built (bounds the temporary copy of the vectors)
_REDUCE_ROWS = 1 << 16
#: the share of the catalogue, largest norms first, kept out of the HNSW graph and scored exactly beside each search
#: (``hnsw_head_share``): at 917k trained SASRec items 98.5 % of the exact top ten lay among the largest 1/14 of the
#: norms, and a graph over every item found only 0.67 (docs/results.md, session 22).
HNSW_HEAD_SHARE = 1 / 16
#: a filtered search reads the flags of the head's best ``HEAD_SPARE × k`` items only (``_head_top_k``), and masks
#: the whole head for the rare row that has fewer than k allowed among them
HEAD_SPARE = 4


class VectorIndex:
    """Top-``k`` inner-product search over ``[n_items, d]`` item vectors with allowed-item masks.

    ``ann_threshold``: catalogues of at least this many items use an approximate FAISS index (extra ``ann``)
    of kind ``ann_kind``: ``"ivf"`` (IVF-Flat) or ``"hnsw"`` (an HNSW graph over the inner-product reduction,
    module docstring); if FAISS is not installed a warning is logged once and the index stays exact.
    ``metric``: ``"ip"`` (inner product) or ``"cosine"`` (vectors and queries are L2-normalised, then inner
    product). ``nlist``: IVF lists (default ~sqrt(n_items), at most n_items / 39 so that k-means has enough
    points per list); ``nprobe``: lists searched per query (recall vs latency). ``over_fetch``: neighbours fetched per
    wanted result on filtered IVF searches, before the allowed fraction is accounted for. ``seed``: drives
    the k-means training sample and initialisation. ``hnsw_m`` (graph degree), ``hnsw_ef_construction``
    and ``hnsw_ef_search`` (candidate list while building and searching; recall vs time): the HNSW graph's.
    ``hnsw_head_share``: this share of the catalogue, the items of largest norm, is left out of the graph and scored
    exactly beside every graph search, and the two top-``k`` lists are merged (0: the graph alone). A
    trained model's popular items have the largest vectors and fill most users' top ten, and the inner-product
    reduction serves them badly: at 917k trained items the graph alone found 0.67 of the exact top ten, at any
    efSearch up to 8,192 at most 0.72 (docs/results.md, "Session 22").
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
        ann_kind: AnnKind = "ivf",
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 128,
        hnsw_head_share: float = HNSW_HEAD_SHARE,
    ) -> None:
        if metric not in ("ip", "cosine"):
            raise ValueError(f"metric: expected 'ip' or 'cosine', got {metric!r}")
        if ann_kind not in ANN_KINDS:
            raise ValueError(f"ann_kind: expected one of {', '.join(map(repr, ANN_KINDS))}, got {ann_kind!r}")
        for name, value in (("hnsw_m", hnsw_m), ("hnsw_ef_construction", hnsw_ef_construction)):
            if value < 2:
                raise ValueError(f"{name}: expected an integer >= 2, got {value}")
        if hnsw_ef_search < 1:
            raise ValueError(f"hnsw_ef_search: expected a positive integer, got {hnsw_ef_search}")
        if not 0.0 <= hnsw_head_share <= 1.0:
            raise ValueError(f"hnsw_head_share: expected a number in [0, 1], got {hnsw_head_share}")
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
        self._ann_kind = ann_kind
        self._hnsw_m = hnsw_m
        self._hnsw_ef_construction = hnsw_ef_construction
        self.ef_search = hnsw_ef_search  # read by every HNSW search: may be changed between searches
        self.hnsw_head_share = hnsw_head_share  # read by every HNSW search, as ef_search
        self._head: np.ndarray | None = None  # ids of the head's items (ascending); None: stale
        self._head_vectors: np.ndarray | None = None  # their vectors, contiguous (cached with them)
        self._head_flat: Any = None  # FAISS flat index over the head's vectors, float16 codes (cached with them)
        self._head_max_norm: float | None = None  # the head's largest norm; None: its flat index is float32
        self._dim = vectors.shape[1]
        self._buffer = self._prepare(vectors, "item_vectors")
        self._n = len(self._buffer)
        self._ann: Any = None  # FAISS IndexIVFFlat or _HnswGraph
        self._removed: np.ndarray | None = None  # [capacity] True for removed items; None until a remove
        self._compact_threshold = compact_threshold
        self._compact: Any = None  # FAISS float16 copy for exact scans (module docstring)
        self._max_norm = 0.0
        # set by :meth:`succeed`: how the index came to be, its check's recall@10 if carried, and the last fresh
        # graph's (this one's, if built)
        self.provenance: Literal["built", "carried"] = "built"
        self.carried_recall: float | None = None
        self.built_recall: float | None = None
        self.compact_fallbacks = 0  # rows the float16 scan could not decide (scored in float32 instead)
        self.ann_fallbacks = 0  # ANN rows scored exactly over their allowed items (small sets, short results)
        self._maybe_build_ann()
        self._maybe_build_compact()

    @classmethod
    def succeed(
        cls,
        previous: VectorIndex,
        item_vectors: np.ndarray,
        *,
        queries: np.ndarray | None = None,
        tolerance: float = 0.02,
        sample: int = 128,
        seed: int = 0,
    ) -> VectorIndex:
        """The index of the next model version: ``previous``'s HNSW graph carried over where it still serves,
        else a graph built afresh (``provenance``: ``"carried"`` or ``"built"``).

        ``item_vectors`` are the next version's: items ``0 .. previous.n_items - 1`` the same items as in
        ``previous`` (moved by training), any further rows new items. Carrying (:meth:`carried`) costs a clone
        and a copy; it is kept when its check — recall@10 against exact scoring on ``queries`` (the new model's
        query vectors, e.g. user vectors of real histories; default ``sample`` of the item vectors) — is within
        ``tolerance`` of ``built_recall``, what the last fresh graph found on its own check. Otherwise a graph
        is built, checked on the same queries, and the better of the two kept (a carried graph can route
        better than a fresh one: docs/results.md); the fresh check becomes the new ``built_recall``. Without a
        graph in ``previous`` (or with fewer items, another dimension), the new index is built as ``previous``'s
        settings say.
        """
        vectors = np.asarray(item_vectors)
        if queries is None:
            rng = np.random.default_rng(seed)
            queries = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)]
        carried = cls.carried(previous, vectors)
        if carried is not None:
            carried.carried_recall = exact_recall(carried, queries, k=10)
            built = previous.built_recall
            if built is not None and carried.carried_recall >= built - tolerance:
                carried.built_recall, carried.provenance = built, "carried"
                return carried
        fresh = cls(vectors, **previous._settings())
        if fresh._ann is None:
            return fresh
        fresh.built_recall = exact_recall(fresh, queries, k=10)
        if carried is not None and carried.carried_recall is not None and carried.carried_recall > fresh.built_recall:
            carried.built_recall, carried.provenance = fresh.built_recall, "carried"
            return carried
        return fresh

    @classmethod
    def carried(cls, previous: VectorIndex, item_vectors: np.ndarray) -> VectorIndex | None:
        """``previous``'s HNSW graph over ``item_vectors`` (the same items first, new ones after), unchecked —
        :meth:`succeed` decides whether to serve it. The graph is cloned (``previous`` keeps serving
        untouched), each node's stored vector replaced by its item's new one, the new items inserted. None when
        ``previous`` has no HNSW graph, has more items, or another dimension."""
        graph = previous._ann
        vectors = np.asarray(item_vectors)
        if (
            not isinstance(graph, _HnswGraph)
            or vectors.ndim != 2
            or vectors.shape[1] != previous._dim
            or len(vectors) < previous._n
        ):
            return None
        index = cls(vectors, **{**previous._settings(), "ann_threshold": len(vectors) + 1})  # exact: no build
        index._ann_threshold = previous._ann_threshold
        index._ann = graph.carried(index._buffer[: index._n])
        index._compact = None  # exact fallbacks of an ANN index scan the float32 buffer
        if previous._removed is not None:
            index._removed = np.concatenate(
                [previous._removed[: previous._n], np.zeros(index._n - previous._n, dtype=bool)]
            )
        return index

    def _settings(self) -> dict[str, Any]:
        """The constructor's arguments other than the vectors, as this index was made."""
        return {
            "ann_threshold": self._ann_threshold,
            "metric": self._metric,
            "nlist": self._nlist,
            "nprobe": self._nprobe,
            "over_fetch": self._over_fetch,
            "seed": self._seed,
            "compact_threshold": self._compact_threshold,
            "ann_kind": self._ann_kind,
            "hnsw_m": self._hnsw_m,
            "hnsw_ef_construction": self._hnsw_ef_construction,
            "hnsw_ef_search": self.ef_search,
            "hnsw_head_share": self.hnsw_head_share,
        }

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
    def ann_kind(self) -> AnnKind | None:
        """The approximate index searched now (``"ivf"`` or ``"hnsw"``), None while searches are exact."""
        return None if self._ann is None else self._ann_kind

    @property
    def n_removed(self) -> int:
        """Items taken out by :meth:`remove` (their ids stay taken)."""
        return 0 if self._removed is None else int(np.count_nonzero(self._removed[: self._n]))

    @property
    def is_exact(self) -> bool:
        """True while searches score every item (below ``ann_threshold``, or FAISS missing)."""
        return self._ann is None

    # ----------------------------------------------------------------- writes
    def add(self, new_vectors: np.ndarray) -> np.ndarray:
        """Append items (``[m, d]``); returns their ids, which continue from ``n_items``.

        Reaching ``ann_threshold`` this way builds the FAISS index here, in the writer's call, rather than
        inside a later search. On the HNSW path an item whose norm does not fit the graph's radius joins the head.
        """
        new = self._prepare(new_vectors, "new_vectors")
        start, stop = self._n, self._n + len(new)
        if stop > len(self._buffer):
            grown = np.empty((max(stop, 2 * len(self._buffer)), self._dim), dtype=np.float32)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:stop] = new
        self._head = None
        if self._removed is not None:
            self._removed = np.concatenate([self._removed[:start], np.zeros(len(new), dtype=bool)])
        self._n = stop
        if isinstance(self._ann, _HnswGraph):
            self._ann.add(new, np.arange(start, stop))  # a norm beyond the graph's radius: the item joins the head
            self._maybe_rebuild_hnsw()
        elif self._ann is not None:
            self._ann.add(new)
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

        Exact mode writes in place; IVF moves each vector to its nearest list in place too (the index keeps
        a direct map from id to list entry). HNSW cannot move a node: each new vector is inserted as a new
        node (or, with a norm beyond the graph's radius, the item joins the exact head), the item's old node
        becomes stale (never returned), and the graph is rebuilt when stale nodes pass a quarter of it or the
        head has grown past twice its share (module docstring). A removed item stays removed.
        """
        ids = _check_ids(ids, self._n)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids: expected unique ids")
        new = self._prepare(vectors, "vectors")
        if len(new) != len(ids):
            raise ValueError(f"vectors: expected {len(ids)} rows (one per id), got {len(new)}")
        self._buffer[ids] = new
        self._head = None
        if isinstance(self._ann, _HnswGraph):
            self._ann.update(ids, new)
            self._maybe_rebuild_hnsw()
        elif self._ann is not None:
            self._ann.update_vectors(ids, new)
        if self._compact is not None:  # the scalar quantizer cannot replace vectors: re-encode (~ms at 100k)
            self._compact = None
            self._maybe_build_compact()

    def remove(self, ids: np.ndarray) -> None:
        """Take items ``ids`` out of every later search at once (a deleted or withdrawn item).

        Their ids stay taken (``n_items`` does not change, later ``add`` continues after them) and their
        vectors stay stored: a removed item is masked out of the allowed set of every search, which each
        path already obeys, so removing costs no index rebuild. Removing an item twice is allowed.
        """
        ids = _check_ids(ids, self._n)
        if self._removed is None:
            self._removed = np.zeros(self._n, dtype=bool)
        self._removed[ids] = True

    # ----------------------------------------------------------------- search
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | AllowedItems | Sequence[AllowedItems] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids (int64) and scores (float32) per query, best first.

        ``queries`` is ``[b, d]`` (results ``[b, k]``) or ``[d]`` (results ``[k]``). ``allowed`` is a
        boolean ``[n_items]`` mask shared by all queries, a ``[b, n_items]`` mask, an :class:`AllowedItems`
        shared by all queries (the graph search reads its count and bitmap without a pass over the catalogue;
        the other paths, and the graph's once items were removed, read its dense mask), a sequence of ``b``
        :class:`AllowedItems`, one per query, or None.

        With one :class:`AllowedItems` per query, each row's answer is the one it gets searched alone: the graph
        searches each row with its own bitmap and scores the batch's head and candidates together (the batched
        NumPy work is what a server's batch of requests saves); every other path searches row by row.
        """
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        raw = np.asarray(queries)
        single = raw.ndim == 1
        batch = self._prepare(raw[None, :] if single else raw, "queries")
        graph = isinstance(self._ann, _HnswGraph) and self._removed is None
        mask: Filter
        if isinstance(allowed, AllowedItems):
            _check_length(allowed, self._n)
            mask = allowed if graph else allowed.mask
        elif isinstance(allowed, Sequence):
            if single or len(allowed) != len(batch):
                raise ValueError(f"allowed: expected one AllowedItems per query ({len(batch)}), got {len(allowed)}")
            for row_allowed in allowed:
                if not isinstance(row_allowed, AllowedItems):
                    raise TypeError(f"allowed: expected AllowedItems per query, got {type(row_allowed).__name__}")
                _check_length(row_allowed, self._n)
            if not graph:  # every other path takes one filter at a time
                ids = np.empty((len(batch), k), dtype=np.int64)
                scores = np.empty((len(batch), k), dtype=np.float32)
                for row, row_allowed in enumerate(allowed):
                    ids[row], scores[row] = self.search(batch[row], k, row_allowed)
                return ids, scores
            mask = list(allowed)
        else:
            mask = _check_mask(allowed, len(batch), self._n, single)
        if self._removed is not None:
            assert not isinstance(mask, AllowedItems | list)  # made dense above, or searched row by row
            present = ~self._removed[: self._n]
            mask = present if mask is None else mask & present
        if isinstance(self._ann, _HnswGraph):
            ids, scores = self._search_hnsw(batch, k, mask)
        elif isinstance(mask, AllowedItems | list):  # made dense above, or searched row by row, on every other path
            raise AssertionError("AllowedItems past the graph path")
        elif self._ann is None and self._compact is not None and (mask is None or mask.ndim == 1):
            ids, scores = self._search_compact(batch, k, mask)
        elif self._ann is None:
            ids, scores = self._search_exact(batch, k, mask)
        else:
            ids, scores = self._search_ivf(batch, k, mask)
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
        bound = _float16_bound(queries, self._max_norm, self._dim)
        last_fetched = approximate[:, -1]
        decided = complete | ((scores[:, -1] > last_fetched + 2 * bound) & (ids[:, -1] >= 0))
        undecided = np.flatnonzero(~decided)
        if len(undecided):
            self.compact_fallbacks += len(undecided)
            ids[undecided], scores[undecided] = self._search_exact(queries[undecided], k, allowed)
        return ids, scores

    def _search_ivf(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """IVF search with over-fetching for filters, and exact scoring where the filter leaves few items."""
        n, n_rows = self._n, len(queries)
        ids = np.full((n_rows, k), -1, dtype=np.int64)
        scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
        counts = _allowed_counts(allowed, n_rows, n)
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
        self._score_exact_rows(queries, k, allowed, np.concatenate(exact_rows), ids, scores)
        return ids, scores

    def _search_hnsw(self, queries: np.ndarray, k: int, allowed: Filter) -> tuple[np.ndarray, np.ndarray]:
        """Graph search with the filter inside it (a bitmap selector), exact scoring where it cannot give k.

        Rows whose allowed set is small are scored exactly over it, as on the IVF path (a graph search
        through a sparse filter visits most of the graph). A row for which the search found fewer than
        ``k`` allowed items (the candidate list ran out inside a filtered region) is scored exactly too.
        """
        n, n_rows = self._n, len(queries)
        ids = np.full((n_rows, k), -1, dtype=np.int64)
        scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
        counts = _allowed_counts(allowed, n_rows, n)
        few = counts < max(k, _EXACT_FRACTION * n, _EXACT_MIN_COUNT)
        graph_rows = np.flatnonzero(~few)
        found = np.full((len(graph_rows), k), -1, dtype=np.int64)
        ef_search = max(self.ef_search, k)
        # the graph holds the items outside the norm head (scored exactly below); its selector reads item ids
        if (
            allowed is None
            or isinstance(allowed, AllowedItems)
            or (isinstance(allowed, np.ndarray) and allowed.ndim == 1)
        ):
            if len(graph_rows):
                found[:] = self._ann.search(queries[graph_rows], k, allowed, ef_search)
        else:
            for position, row in enumerate(graph_rows):  # a selector per filter: one search call per row
                found[position] = self._ann.search(queries[row : row + 1], k, allowed[row], ef_search)[0]
        complete = (found >= 0).all(axis=1)
        if complete.any():
            rows, candidates = graph_rows[complete], np.sort(found[complete], axis=1)  # ascending ids: tie rule
            exact = np.einsum("rd,rcd->rc", queries[rows], self._buffer[candidates]).astype(np.float32)
            candidates, exact = self._with_head(queries, allowed, rows, candidates, exact)
            ids[rows], scores[rows] = top_k_candidates(candidates, exact, k)
        short = np.concatenate([np.flatnonzero(few), graph_rows[~complete]])
        self._score_exact_rows(queries, k, allowed, short, ids, scores)
        return ids, scores

    def _with_head(
        self,
        queries: np.ndarray,
        allowed: Filter,
        rows: np.ndarray,
        found: np.ndarray,
        scores: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The graph's candidates ``found`` ``[r, k]`` (ascending ids, exact ``scores``; the graph searched the items
        outside the head) of query ``rows``, joined by the head's own top ``k`` (scored exactly over its allowed
        items), every row in ascending id order (:func:`top_k_candidates`' tie rule; padding at -inf)."""
        head = self._norm_head()
        if len(head) == 0:
            return found, scores
        k = found.shape[1]
        columns, best = self._head_top_k(queries[rows], k, allowed, rows)
        ids = np.concatenate([found, np.where(columns >= 0, head[np.maximum(columns, 0)], -1)], axis=1)
        joined = np.concatenate([scores, best], axis=1)
        order = np.argsort(ids, axis=1, kind="stable")
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(joined, order, axis=1)

    def _head_top_k(
        self, queries: np.ndarray, k: int, allowed: Filter, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` head columns (``_norm_head`` positions) and exact scores of ``queries`` ``[r, d]`` (query
        ``rows``) over the allowed head items, as :func:`top_k` of the masked ``[r, h]`` scores gives them.

        FAISS's flat inner-product search finds the head's best ``HEAD_SPARE × k`` first, unfiltered, and only their
        flags are read. The scan keeps its top list in a heap as it goes (at 57k head items a third of NumPy's
        matmul and ``argpartition``: docs/results.md, session 24) and reads the head as float16 codes, half the
        bytes of float32 (at 47k head items 0.45 -> 0.25 ms a query, docs/results.md, session 28). The spare items'
        scores are then recomputed exactly, as the graph's candidates' are, so both lists compare alike. An item
        outside the spare scores at most the spare's lowest float16 score ``c`` plus the rounding bound ``E`` (the
        float16 scan's, module docstring), so where ``k`` allowed items of the spare score above ``c + 2E``, those
        are the answer, exactly. A row with fewer, or with a k-th score not above that cut, is scored over the
        whole head with its mask."""
        head, vectors = self._norm_head(), self._head_vectors
        assert vectors is not None  # set with the head
        spare = min(HEAD_SPARE * k, len(head))
        approximate, columns = self._head_flat.search(queries, spare)  # [r, spare], best first; -1 past the head
        order = np.argsort(columns, axis=1)  # ascending: lower column, lower id (the tie rule)
        columns, approximate = (
            np.take_along_axis(columns, order, axis=1),
            np.take_along_axis(approximate, order, axis=1),
        )
        valid = columns >= 0
        safe = np.maximum(columns, 0)
        exact = np.einsum("rd,rcd->rc", queries, vectors[safe]).astype(np.float32)
        if allowed is None:
            permitted = valid
        else:
            permitted = _flags(allowed, rows, head[safe]) & valid
        masked = np.where(permitted, exact, -np.inf).astype(np.float32)
        picked, best = top_k(masked, k)
        columns = np.where(picked >= 0, np.take_along_axis(columns, np.maximum(picked, 0), axis=1), -1)
        # enough: k allowed among the spare scoring above what any item outside it can score, or the whole head read
        bound = 0.0 if self._head_max_norm is None else _float16_bound(queries, self._head_max_norm, self._dim)
        cut = np.where(valid, approximate, np.inf).min(axis=1) + 2 * bound
        enough = (permitted.sum(axis=1) >= k) & (best[:, -1] > cut) | (spare == len(head))
        # row by row: a matmul's rounding depends on its batch, and a row's answer must be the one it gets alone
        for short in np.flatnonzero(~enough):
            head_scores = (queries[short : short + 1] @ vectors.T).astype(np.float32)  # [1, h]
            if allowed is not None:
                head_scores[~_flags(allowed, rows[short : short + 1, None], head[None, :])] = -np.inf
            (columns[short],), (best[short],) = top_k(head_scores, k)
        return columns, best

    def _norm_head(self) -> np.ndarray:
        """Ids (ascending) of the items outside the graph, scored exactly beside it: the ``hnsw_head_share`` of
        largest norms when the graph was built, and any item added or updated since with a norm beyond the graph's
        radius."""
        if self._head is None:
            graph = self._ann
            outside = np.ones(self._n, dtype=bool)
            if isinstance(graph, _HnswGraph):
                known = min(graph.n_items, self._n)
                outside[:known] = graph.item_node[:known] < 0
            self._head = np.flatnonzero(outside).astype(np.int64)
            self._head_vectors = vectors = np.ascontiguousarray(self._buffer[self._head])
            faiss = _load_faiss()  # the HNSW path has FAISS
            if np.abs(vectors).max(initial=0.0) <= _FLOAT16_SAFE:  # float16 codes: half the bytes a query reads
                self._head_flat = faiss.IndexScalarQuantizer(
                    self._dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
                )
                self._head_max_norm = _max_norm(vectors)
            else:  # beyond float16's range: float32
                self._head_flat, self._head_max_norm = faiss.IndexFlatIP(self._dim), None
            if len(self._head):
                self._head_flat.add(vectors)
        return self._head

    def _score_exact_rows(
        self, queries: np.ndarray, k: int, allowed: Filter, rows: np.ndarray, ids: np.ndarray, scores: np.ndarray
    ) -> None:
        """Write the exact top-``k`` of ``rows`` (restricted to their allowed items) into ``ids`` / ``scores``."""
        if len(rows):
            self.ann_fallbacks += len(rows)
            if isinstance(allowed, AllowedItems):
                allowed = allowed.mask
            elif isinstance(allowed, list):  # row by row, as each is scored alone (a matmul's rounding is the batch's)
                for row in rows:
                    ids[row], scores[row] = self._search_exact(queries[row : row + 1], k, allowed[row].mask)
                return
            mask = allowed[rows] if allowed is not None and allowed.ndim == 2 else allowed
            ids[rows], scores[rows] = self._search_exact(queries[rows], k, mask)

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
        """Build the ANN index once the catalogue reaches ``ann_threshold`` (and FAISS is installed)."""
        if self._ann is not None or self._n < max(self._ann_threshold, 1):
            return
        faiss = _load_faiss()
        if faiss is None:
            return
        if self._ann_kind == "hnsw":
            self._rebuild_hnsw()
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

    def _rebuild_hnsw(self) -> None:
        """A new HNSW graph over the current vectors less the ``hnsw_head_share`` of largest norms (the head, scored
        exactly): the first build, or one :meth:`_maybe_rebuild_hnsw` asks for."""
        vectors = self._buffer[: self._n]
        size = min(math.ceil(self.hnsw_head_share * self._n), self._n)
        graphed = np.ones(self._n, dtype=bool)
        if size:
            norms = np.einsum("ij,ij->i", vectors, vectors)
            graphed[np.argpartition(-norms, size - 1)[:size] if size < self._n else slice(None)] = False
        self._ann = _HnswGraph(vectors, np.flatnonzero(graphed), self._hnsw_m, self._hnsw_ef_construction)
        self._head = None

    def _maybe_rebuild_hnsw(self) -> None:
        """Rebuild the graph once stale nodes exceed ``_STALE_FRACTION`` of it, or once the head (items outside it)
        has grown past ``_HEAD_GROWTH`` times the build's share plus ``_HEAD_SLACK`` items."""
        graph = self._ann
        outside = self._n - graph.n_live
        share = math.ceil(self.hnsw_head_share * self._n)
        if graph.n_stale > _STALE_FRACTION * graph.n_nodes or outside > _HEAD_GROWTH * share + _HEAD_SLACK:
            self._rebuild_hnsw()

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


class _HnswGraph:
    """A FAISS ``IndexHNSWFlat`` (L2) over the inner-product reduction of item vectors, with node bookkeeping.

    Node ``j`` holds ``[v, sqrt(M² - |v|²)]`` for the vector ``v`` item ``node_item[j]`` had when the node
    was inserted; a query ``q`` searches as ``[q, 0]``, so the L2 order is the inner-product order
    (``|q - v'|² = |q|² + M² - 2 q·v``). The graph holds some of the items (``item_node`` is -1 for the others:
    the head, scored exactly by the caller): an item whose vector does not fit the radius ``M`` is left out when
    added or updated. ``item_node`` maps each item to its current node; older nodes of an updated item are stale.
    Searches take an allowed mask over *item* ids: FAISS translates each visited node to its item through
    ``labels`` (node → item, -1 for a stale node, which no mask allows), so no per-search copy of the mask into
    node order is made (a gather of the whole catalogue: 0.7 ms at 1M items).
    """

    def __init__(self, vectors: np.ndarray, items: np.ndarray, m: int, ef_construction: int) -> None:
        """A graph over ``vectors[items]`` (``vectors``: the whole ``[n_items, d]`` table), ``M`` 1.05 times their
        largest norm."""
        faiss = _load_faiss()
        squared = np.einsum("ij,ij->i", vectors, vectors)[items]
        self.radius = _NORM_HEADROOM * float(np.sqrt(squared.max(initial=0.0)))
        self.index = faiss.IndexHNSWFlat(vectors.shape[1] + 1, m, faiss.METRIC_L2)
        self.index.hnsw.efConstruction = ef_construction
        self.labels = faiss.Int64Vector()  # node -> item, -1 for a stale node: FAISS's copy of node_label
        self.node_label = np.zeros(0, dtype=np.int64)
        self.node_item = np.zeros(0, dtype=np.int64)
        self.item_node = np.full(len(vectors), -1, dtype=np.int64)  # its capacity may run past n_items
        self.n_items = len(vectors)  # items known (in the graph or not): ids 0 .. n_items - 1
        self.n_nodes = 0
        self.n_stale = 0
        # reduced a block of rows at a time: no whole [len(items), d] copy besides the reduced one FAISS reads
        reduced = np.empty((len(items), vectors.shape[1] + 1), dtype=np.float32)
        for start in range(0, len(items), _REDUCE_ROWS):
            reduced[start : start + _REDUCE_ROWS] = self._reduce(vectors[items[start : start + _REDUCE_ROWS]])
        self._insert(reduced, items)

    @property
    def n_live(self) -> int:
        """Items in the graph (nodes less stale ones)."""
        return self.n_nodes - self.n_stale

    def add(self, vectors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Insert one node per row for ``items`` (new ids, or ids whose old node the caller made stale) whose norm
        fits the radius; returns the mask of the rows inserted (the others stay out of the graph)."""
        fits = np.einsum("ij,ij->i", vectors, vectors) <= self.radius**2
        self._insert(self._reduce(vectors if fits.all() else vectors[fits]), items[fits])
        return fits

    def _insert(self, reduced: np.ndarray, inserted: np.ndarray) -> None:
        """Add the ``reduced`` rows as nodes of items ``inserted``."""
        self.n_items = max(self.n_items, int(inserted.max(initial=-1)) + 1)
        self.item_node = _grown(self.item_node, self.n_items, -1)
        start, stop = self.n_nodes, self.n_nodes + len(inserted)
        if len(inserted):
            self.index.add(reduced)
            self.node_item = _grown(self.node_item, stop, 0)
            self.node_item[start:stop] = inserted
            self.node_label = _grown(self.node_label, stop, -1)
            self.node_label[start:stop] = inserted
            self.item_node[inserted] = np.arange(start, stop)
        self.n_nodes = stop
        self._sync_labels()

    def _sync_labels(self) -> None:
        """Copy ``node_label`` into FAISS's vector (a write's cost: 8 bytes per node)."""
        _load_faiss().copy_array_to_vector(np.ascontiguousarray(self.node_label[: self.n_nodes]), self.labels)

    def carried(self, vectors: np.ndarray) -> _HnswGraph:
        """A copy whose nodes hold ``vectors`` (``[n_items, d]``: each node its item's row; rows past the items
        this graph knows are inserted as new nodes) over this graph's links. Norms grown beyond M move M out
        (``_NORM_HEADROOM`` times the largest): every node's last coordinate changes with it, one more kind of drift
        for the caller's recall check to judge. Items outside this graph stay outside."""
        faiss = _load_faiss()
        known = self.n_items
        clone = copy.copy(self)
        in_graph = np.concatenate([self.item_node[:known] >= 0, np.ones(len(vectors) - known, dtype=bool)])
        clone.radius = max(self.radius, _NORM_HEADROOM * _max_norm(vectors[in_graph]))
        clone.index = faiss.clone_index(self.index)
        clone.node_item, clone.item_node, clone.node_label = (
            self.node_item.copy(),
            self.item_node.copy(),
            self.node_label.copy(),
        )
        clone.labels = faiss.Int64Vector()
        clone._sync_labels()
        storage = faiss.downcast_index(clone.index.storage)
        moved = clone._reduce(vectors[self.node_item[: self.n_nodes]])  # stale nodes too: never returned anyway
        faiss.copy_array_to_vector(moved.ravel().view(np.uint8), storage.codes)
        if hasattr(storage, "clear_l2norms"):  # norms cached for the old codes (none unless synced) are void
            storage.clear_l2norms()
        if len(vectors) > known:
            clone.add(vectors[known:], np.arange(known, len(vectors)))  # fits: the radius covers every norm
        return clone

    def _reduce(self, vectors: np.ndarray) -> np.ndarray:
        """``[v, sqrt(M² - |v|²)]`` per row (norms at most M)."""
        squared = np.einsum("ij,ij->i", vectors, vectors)
        reduced = np.empty((len(vectors), vectors.shape[1] + 1), dtype=np.float32)
        reduced[:, :-1] = vectors
        reduced[:, -1] = np.sqrt(np.maximum(self.radius**2 - squared, 0.0))
        return reduced

    def update(self, items: np.ndarray, vectors: np.ndarray) -> None:
        """New nodes for existing ``items`` (those whose new norm fits; the others leave the graph), their old
        nodes made stale."""
        old = self.item_node[items]
        old = old[old >= 0]
        self.item_node[items] = -1
        self.node_label[old] = -1
        self.n_stale += len(old)
        self.add(vectors, items)  # syncs the labels

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | AllowedItems | None, ef_search: int
    ) -> np.ndarray:
        """``[b, k]`` item ids of the nearest live, allowed nodes (``allowed``: ``[n_items]`` or None); -1 pads."""
        faiss = _load_faiss()
        if self.n_nodes == 0:
            return np.full((len(queries), k), -1, dtype=np.int64)
        n_items = self.n_items
        # the bitmap must outlive the search: the selector points at it. An id past the graph's items is never a
        # node's label, so a longer bitmap (an AllowedItems over more items) reads the same
        if isinstance(allowed, AllowedItems):
            bits = allowed.bits()
        else:
            mask = np.ones(n_items, dtype=bool) if allowed is None else allowed[:n_items]
            bits = np.packbits(mask, bitorder="little")
        # passed to the constructors, which keep what they are given alive (an assigned attribute would not); the
        # bitmap's size is in bytes: a stale node's label, -1, reads as an id far past it, so never allowed
        bitmap = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        selector = faiss.IDSelectorTranslated(self.labels, bitmap)
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search)
        reduced = np.zeros((len(queries), queries.shape[1] + 1), dtype=np.float32)
        reduced[:, :-1] = queries
        _, nodes = self.index.search(reduced, k, params=params)
        return np.where(nodes >= 0, self.node_item[np.maximum(nodes, 0)], -1)


def _grown(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` with at least ``size`` entries (new ones ``fill``), doubling its capacity when it grows."""
    if size <= len(array):
        return array
    grown = np.full(max(size, 2 * len(array)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _allowed_counts(allowed: Filter, n_rows: int, n_items: int) -> np.ndarray:
    """``[n_rows]`` allowed items per query row."""
    if allowed is None:
        return np.full(n_rows, n_items)
    if isinstance(allowed, AllowedItems):
        return np.full(n_rows, allowed.count)
    if isinstance(allowed, list):
        return np.array([row_allowed.count for row_allowed in allowed], dtype=np.int64)
    if allowed.ndim == 1:
        return np.full(n_rows, np.count_nonzero(allowed))
    return np.count_nonzero(allowed, axis=1)


def _flags(allowed: np.ndarray | AllowedItems | list[AllowedItems], rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each of ``items`` is allowed for its query: ``items`` ``[r, c]`` ids of query ``rows`` ``[r]``
    (``[r, 1]`` with ``items`` ``[1, c]`` for the same columns in every row), under a shared filter, a
    ``[b, n_items]`` mask or one :class:`AllowedItems` per query."""
    if isinstance(allowed, AllowedItems):
        return allowed.contains(items)
    if isinstance(allowed, list):
        per_row = np.broadcast_to(items, (len(rows), items.shape[-1]))
        return np.stack([allowed[row].contains(ids) for row, ids in zip(rows.ravel().tolist(), per_row, strict=True)])
    if allowed.ndim == 1:
        return allowed[items]
    return allowed[rows[:, None] if rows.ndim == 1 else rows, items]


def _check_ids(ids: np.ndarray, n_items: int) -> np.ndarray:
    """``ids`` validated as a 1-D integer array of existing item ids, as int64."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n_items):
        raise ValueError(f"ids: expected values in [0, {n_items}), got min {ids.min()} max {ids.max()}")
    return ids


def _max_norm(vectors: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max(initial=0.0)))


def _float16_bound(queries: np.ndarray, max_norm: float, dim: int) -> np.ndarray:
    """``[r]``: how far a float16 code's inner product with each query can be from the float32 one, for vectors of
    norm at most ``max_norm`` (``E`` in the module docstring)."""
    return np.linalg.norm(queries, axis=1) * max_norm * (2.0**-11 + dim * 2.0**-23)


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


def _check_length(allowed: AllowedItems, n_items: int) -> None:
    if len(allowed) != n_items:
        raise ValueError(f"allowed: expected {n_items} items, got {len(allowed)}")


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
