"""Retrieval latency and ANN quality: exact vs FAISS IVF-Flat at 10k / 100k / 1M items (d=64), and top_k_allowed.

Prints one JSON object. Per catalogue size: single-query latency p50/p99 (µs) of the exact index and the FAISS
index, unfiltered and with a 90 %-allowed mask (a user's seen items excluded), the latency of a batch of 64
queries, the FAISS build seconds and its recall@10 against exact scoring. Then ``top_k_allowed`` on 100k
scores with and without a mask, next to ``liverec.models.base.top_k`` (plain argpartition).

Items and queries are Gaussian clusters with unnormalised vectors, like the embeddings of an inner-product
model. Every thread pool is pinned to one thread (OpenBLAS/OpenMP through the environment, set before NumPy
and FAISS load; torch.set_num_threads(1); faiss.omp_set_num_threads(1)), so the numbers are the cost of one
request on one core, as in a server running one worker per core.

    python benchmarks/bench_retrieval.py [--sizes 10000,100000,1000000] [--queries 200] [--seed 0]
"""

# ruff: noqa: E402  (the thread pools read these variables when NumPy and FAISS load, so they come first)
import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import torch

from liverec.models.base import top_k
from liverec.retrieval import VectorIndex, exact_recall, top_k_allowed

DIM = 64
BATCH = 64
#: the HNSW comparison is skipped above this size: building it on one thread would take minutes
HNSW_MAX_ITEMS = 100_000


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    """``n`` vectors around random ``centers`` (noise 0.7 per dimension around unit-variance centers)."""
    noise = 0.7 * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    return centers[rng.integers(0, len(centers), n)] + noise


def latency_us(call: Callable[[int], object], n_calls: int) -> dict[str, float]:
    """p50 / p99 in microseconds of ``call(i)`` for i in range(n_calls), after two warm-up calls."""
    call(0)
    call(1)
    times = []
    for i in range(n_calls):
        started = time.perf_counter_ns()
        call(i)
        times.append((time.perf_counter_ns() - started) / 1_000)
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50_us": round(float(p50), 1), "p99_us": round(float(p99), 1)}


def bench_index(index: VectorIndex, queries: np.ndarray, allowed: np.ndarray, batch_repeats: int) -> dict[str, Any]:
    """Single-query latency (unfiltered and filtered) and batch-of-64 latency of one index."""
    n_queries = len(queries)
    batches = [
        np.take(queries, np.arange(i * BATCH, (i + 1) * BATCH), axis=0, mode="wrap") for i in range(batch_repeats + 2)
    ]
    return {
        "single": latency_us(lambda i: index.search(queries[i % n_queries], 10), n_queries),
        "single_filtered_90pct": latency_us(lambda i: index.search(queries[i % n_queries], 10, allowed), n_queries),
        "batch64": latency_us(lambda i: index.search(batches[i], 10), batch_repeats),
    }


def bench_size(rng: np.random.Generator, n_items: int, n_queries: int) -> dict[str, Any]:
    centers = rng.standard_normal((1_000, DIM), dtype=np.float32)
    items = clustered(rng, centers, n_items)
    queries = clustered(rng, centers, n_queries)  # user vectors in the items' clusters
    off_cluster = rng.standard_normal((n_queries, DIM), dtype=np.float32)  # a harder case for IVF
    allowed = rng.random(n_items) < 0.9
    batch_repeats = 20 if n_items <= 100_000 else 5
    exact = VectorIndex(items, ann_threshold=n_items + 1)
    started = time.perf_counter()
    ann = VectorIndex(items, ann_threshold=0)
    build_seconds = time.perf_counter() - started
    assert exact.is_exact and not ann.is_exact
    result: dict[str, Any] = {
        "exact": bench_index(exact, queries, allowed, batch_repeats),
        "faiss_ivf_flat": {
            "build_seconds": round(build_seconds, 2),
            "nlist": int(ann._ann.nlist),
            "nprobe": int(ann._ann.nprobe),
            "recall@10": round(exact_recall(ann, queries, 10), 4),
            "recall@10_off_cluster_queries": round(exact_recall(ann, off_cluster, 10), 4),
            **bench_index(ann, queries, allowed, batch_repeats),
        },
    }
    if n_items <= HNSW_MAX_ITEMS:
        result["faiss_hnsw_flat_ip_reference"] = bench_hnsw(exact, items, queries, off_cluster)
    return result


def bench_hnsw(exact: VectorIndex, items: np.ndarray, queries: np.ndarray, off_cluster: np.ndarray) -> dict[str, Any]:
    """The alternative VectorIndex does not use: IndexHNSWFlat with inner product (M=32, FAISS defaults)."""
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.add(items)
    result: dict[str, Any] = {"M": 32, "efConstruction": index.hnsw.efConstruction}
    result["build_seconds"] = round(time.perf_counter() - started, 2)
    truth = {"": exact.search(queries, 10)[0], "_off_cluster_queries": exact.search(off_cluster, 10)[0]}
    for ef in (64, 256):
        index.hnsw.efSearch = ef
        for suffix, batch in (("", queries), ("_off_cluster_queries", off_cluster)):
            found = index.search(batch, 10)[1]
            hits = [len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth[suffix], strict=True)]
            result[f"ef{ef}_recall@10{suffix}"] = round(float(np.mean(hits)), 4)
        result[f"ef{ef}_single"] = latency_us(lambda i: index.search(queries[i % len(queries)][None, :], 10), 200)
    return result


def bench_top_k(rng: np.random.Generator) -> dict[str, Any]:
    """``top_k_allowed`` (k=10) on 100k scores, one row and 64 rows, with and without a 90 % mask."""
    rows = rng.standard_normal((BATCH, 100_000), dtype=np.float32)
    allowed = rng.random(100_000) < 0.9
    return {
        "n_items": 100_000,
        "single": latency_us(lambda i: top_k_allowed(rows[i % BATCH], 10), 500),
        "single_masked_90pct": latency_us(lambda i: top_k_allowed(rows[i % BATCH], 10, allowed), 500),
        "batch64": latency_us(lambda i: top_k_allowed(rows, 10), 20),
        "batch64_masked_90pct": latency_us(lambda i: top_k_allowed(rows, 10, allowed), 20),
        "models.base.top_k_single": latency_us(lambda i: top_k(rows[i % BATCH][None, :], 10), 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    sizes = {size: bench_size(rng, size, args.queries) for size in map(int, args.sizes.split(","))}
    result = {
        "benchmark": "retrieval",
        "dim": DIM,
        "k": 10,
        "queries": args.queries,
        "threads": {
            "openblas_omp_mkl_env": 1,
            "torch": torch.get_num_threads(),
            "faiss_omp": faiss.omp_get_max_threads(),
        },
        "sizes": sizes,
        "top_k_allowed": bench_top_k(rng),
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "faiss": faiss.__version__},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
