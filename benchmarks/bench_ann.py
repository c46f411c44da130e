"""Approximate top-10 on trained SASRec vectors with filters on: IVF-Flat, HNSW on inner product, HNSW on the
inner-product reduction (FAISS), and hnswlib on the reduction with its per-candidate filter callback.

Prints one JSON object. The vectors are a trained model's, not random ones: a synthetic stream
(``liverec.data.synthetic``, ``--items`` items, 15 events per item, 50,000 users) and SASRec trained on it
for one epoch with the sampled softmax (the setting of ``benchmarks/bench_serving.py``); or the arrays of a
``.npz`` written by an earlier run (``--save-vectors`` / ``--vectors``: ``item_vectors [n_items, d]``,
``user_vectors [n_queries, d]``, ``seen`` and ``seen_indptr`` (each query's history, CSR), ``item_category
[n_items]``). The queries are the user vectors of real histories (random users of the stream).

Filters, per query, as the engine builds them: the user's seen items, a random 5 % of the catalogue
unavailable (shared), and in the ``category`` case only the items of one random category (a synthetic
cluster, about 10 % of the catalogue). The truth is exact scoring with the same mask. Per index and search
setting: recall@10 against the truth, single-query latency p50/p99 on one thread (every thread pool pinned
to one: OpenBLAS/OpenMP through the environment before NumPy and FAISS load, ``faiss.omp_set_num_threads(1)``),
build seconds, index bytes (FAISS ``serialize_index``; hnswlib's saved file) and the process's resident
growth during the build.

hnswlib is not a dependency of LiveRec (FAISS was chosen: docs/results.md, session 19); the ``hnswlib`` column
needs ``pip install hnswlib==0.8.0``, or leave it out of ``--indexes``.

    python benchmarks/bench_ann.py [--items 100000] [--queries 1000] [--ef 64,128,256,512,1024] [--seed 0]
        [--save-vectors PATH.npz | --vectors PATH.npz] [--indexes exact,ivf,hnsw-ip,hnsw,hnswlib]
"""

# ruff: noqa: E402  (the thread pools read these variables when NumPy and FAISS load, so they come first)
import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from liverec.data.interactions import Histories
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.models.sasrec import SASRec
from liverec.retrieval import VectorIndex

K = 10
INDEXES = ("exact", "ivf", "hnsw-ip", "hnsw", "hnswlib")


def trained_vectors(n_items: int, n_queries: int, seed: int) -> dict[str, np.ndarray]:
    """Item vectors of SASRec trained one epoch on a synthetic stream, and user vectors of real histories."""
    n_users = min(50_000, 5 * n_items)  # at least one event per user
    config = SyntheticConfig(n_users=n_users, n_items=n_items, n_events=15 * n_items, seed=seed)
    dataset, truth = generate(config)
    model = SASRec(loss="sampled-softmax", max_epochs=1, max_len=50, n_threads=1, seed=seed)
    model.fit(dataset.interactions)
    rng = np.random.default_rng(seed)
    users = rng.choice(dataset.interactions.n_users, size=n_queries, replace=False)
    histories = Histories.from_interactions(dataset.interactions, users)
    return {
        "item_vectors": model.item_vectors().astype(np.float32),
        "user_vectors": model.user_vectors(histories).astype(np.float32),
        "seen": histories.items.astype(np.int64),
        "seen_indptr": histories.indptr.astype(np.int64),
        "item_category": truth.item_cluster.astype(np.int64),
    }


def masks(vectors: dict[str, np.ndarray], category: bool, seed: int) -> np.ndarray:
    """``[n_queries, n_items]`` allowed masks: not seen, not among a random 5 % unavailable, in one category."""
    n_items, n_queries = len(vectors["item_vectors"]), len(vectors["user_vectors"])
    rng = np.random.default_rng(seed + 1)
    available = rng.random(n_items) >= 0.05
    allowed = np.repeat(available[None, :], n_queries, axis=0)
    indptr, seen = vectors["seen_indptr"], vectors["seen"]
    for row in range(n_queries):
        allowed[row, seen[indptr[row] : indptr[row + 1]]] = False
    if category:
        categories = vectors["item_category"]
        picks = rng.choice(np.unique(categories), size=n_queries)
        allowed &= categories[None, :] == picks[:, None]
    return allowed


def latency_ms(call: Callable[[int], object], n_calls: int) -> dict[str, float]:
    """p50 / p99 in milliseconds of ``call(i)`` for i in range(n_calls), after five warm-up calls."""
    for i in range(5):
        call(i)
    times = []
    for i in range(n_calls):
        started = time.perf_counter_ns()
        call(i)
        times.append((time.perf_counter_ns() - started) / 1e6)
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's exact top-k (ids >= 0) found."""
    relevant = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & relevant[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits / np.maximum(relevant.sum(axis=1), 1)))


def rss_mb() -> float:
    """The process's resident set now (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def built(make: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """``make()`` and its build seconds and resident growth."""
    before = rss_mb()
    started = time.perf_counter()
    index = make()
    return index, {
        "build_seconds": round(time.perf_counter() - started, 2),
        "rss_growth_mb": round(rss_mb() - before, 1),
    }


def faiss_bytes(index: Any) -> int:
    return int(faiss.serialize_index(index).size)


def augment(items: np.ndarray, max_norm: float) -> np.ndarray:
    """The inner-product reduction: ``[v, sqrt(M² - |v|²)]`` (queries get a 0 there)."""
    squared = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(np.maximum(max_norm**2 - squared, 0.0))[:, None]
    return np.ascontiguousarray(np.hstack([items, extra]), dtype=np.float32)


def search_rows(
    search_one: Callable[[np.ndarray, np.ndarray], np.ndarray], queries: np.ndarray, allowed: np.ndarray
) -> np.ndarray:
    return np.stack([search_one(queries[row], allowed[row]) for row in range(len(queries))])


def measure(
    search_one: Callable[[np.ndarray, np.ndarray], np.ndarray],
    queries: np.ndarray,
    cases: dict[str, tuple[np.ndarray, np.ndarray]],
    n_latency: int,
) -> dict[str, Any]:
    """Recall and single-query latency of ``search_one(query, allowed) -> ids`` for each filter case."""
    out: dict[str, Any] = {}
    for name, (allowed, truth) in cases.items():
        found = search_rows(search_one, queries, allowed)
        n = len(queries)
        out[name] = {
            "recall@10": round(recall(found, truth), 4),
            **latency_ms(lambda i: search_one(queries[i % n], allowed[i % n]), n_latency),  # noqa: B023
        }
    return out


def bench_vector_index(index: VectorIndex, queries: np.ndarray, cases: dict[str, Any], n: int) -> dict[str, Any]:
    return measure(lambda q, a: index.search(q, K, a)[0], queries, cases, n)


def bench_faiss_hnsw(
    items: np.ndarray, queries: np.ndarray, cases: dict[str, Any], efs: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Plain IndexHNSWFlat on inner product, filters inside the search (a bitmap selector), no fallback."""

    def make() -> Any:
        index = faiss.IndexHNSWFlat(items.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        index.add(items)
        return index

    index, out = built(make)
    out["index_bytes"] = faiss_bytes(index)
    n_items = len(items)
    for ef in efs:

        def search_one(query: np.ndarray, allowed: np.ndarray, ef: int = ef) -> np.ndarray:
            bits = np.packbits(allowed, bitorder="little")
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(n_items, faiss.swig_ptr(bits)), efSearch=ef)
            return index.search(query[None, :], K, params=params)[1][0]

        out[f"ef{ef}"] = measure(search_one, queries, cases, args.latency_calls)
    return out


def bench_hnswlib(
    items: np.ndarray, queries: np.ndarray, cases: dict[str, Any], efs: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """hnswlib on the reduction (L2), filters by its per-candidate Python callback."""
    import hnswlib

    max_norm = float(np.sqrt(np.einsum("ij,ij->i", items, items).max()))
    augmented = augment(items, max_norm)

    def make() -> Any:
        index = hnswlib.Index(space="l2", dim=augmented.shape[1])
        index.init_index(max_elements=len(augmented), M=args.m, ef_construction=args.ef_construction, random_seed=0)
        index.set_num_threads(1)
        index.add_items(augmented, np.arange(len(augmented)))
        return index

    index, out = built(make)
    with tempfile.TemporaryDirectory() as folder:
        index.save_index(str(Path(folder) / "index.bin"))
        out["index_bytes"] = (Path(folder) / "index.bin").stat().st_size
    for ef in efs:
        index.set_ef(max(ef, K))

        def search_one(query: np.ndarray, allowed: np.ndarray) -> np.ndarray:
            ids, _ = index.knn_query(np.append(query, 0.0)[None, :], k=K, filter=lambda label: bool(allowed[label]))
            return ids[0].astype(np.int64)

        out[f"ef{ef}"] = measure(search_one, queries, cases, args.latency_calls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000, help="users whose vectors are the queries")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--ef", default="64,128,256,512,1024", help="efSearch values")
    parser.add_argument("--m", type=int, default=32, help="HNSW M (graph degree)")
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--indexes", default=",".join(INDEXES))
    parser.add_argument("--vectors", type=Path, help="a .npz written by --save-vectors (skips training)")
    parser.add_argument("--save-vectors", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    if args.vectors is not None:
        with np.load(args.vectors) as saved:
            vectors = {name: saved[name] for name in saved.files}
        train_seconds = None
    else:
        vectors = trained_vectors(args.items, args.queries, args.seed)
        train_seconds = round(time.perf_counter() - started, 1)
        if args.save_vectors is not None:
            np.savez(args.save_vectors, **vectors)
    items, queries = vectors["item_vectors"], vectors["user_vectors"]
    norms = np.linalg.norm(items, axis=1)
    wanted = [name for name in args.indexes.split(",") if name]
    efs = [int(ef) for ef in args.ef.split(",")]
    result: dict[str, Any] = {
        "benchmark": "ann",
        "n_items": len(items),
        "dim": int(items.shape[1]),
        "queries": len(queries),
        "k": K,
        "train_seconds": train_seconds,
        "item_norms": {q: round(float(np.percentile(norms, p)), 3) for q, p in (("p1", 1), ("p50", 50), ("max", 100))},
        "hnsw": {"M": args.m, "efConstruction": args.ef_construction},
    }
    if wanted:
        exact = VectorIndex(items, ann_threshold=len(items) + 1)
        cases = {}
        for name, category in (("seen+unavailable", False), ("seen+unavailable+category", True)):
            allowed = masks(vectors, category, args.seed)
            cases[name] = (allowed, exact.search(queries, K, allowed)[0])
        result["allowed_fraction_mean"] = {name: round(float(a.mean()), 4) for name, (a, _) in cases.items()}
    if "exact" in wanted:
        result["exact"] = bench_vector_index(exact, queries, cases, args.latency_calls)
    if "ivf" in wanted:
        ivf, result["ivf"] = built(lambda: VectorIndex(items, ann_threshold=0, ann_kind="ivf"))
        result["ivf"]["index_bytes"] = faiss_bytes(ivf._ann)
        result["ivf"]["nprobe32"] = bench_vector_index(ivf, queries, cases, args.latency_calls)
        del ivf
    if "hnsw-ip" in wanted:
        result["faiss_hnsw_ip"] = bench_faiss_hnsw(items, queries, cases, efs, args)
    if "hnsw" in wanted:
        hnsw, out = built(
            lambda: VectorIndex(
                items, ann_threshold=0, ann_kind="hnsw", hnsw_m=args.m, hnsw_ef_construction=args.ef_construction
            )
        )
        out["index_bytes"] = faiss_bytes(hnsw._ann.index)
        for ef in efs:
            hnsw.ef_search = ef
            out[f"ef{ef}"] = bench_vector_index(hnsw, queries, cases, args.latency_calls)
        out["exact_fallback_rows"] = hnsw.ann_fallbacks
        result["vector_index_hnsw_reduction"] = out
        del hnsw
    if "hnswlib" in wanted:
        result["hnswlib_reduction_callback"] = bench_hnswlib(items, queries, cases, efs, args)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
        "faiss": faiss.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
