"""Carrying the HNSW graph across model versions (``VectorIndex.succeed``) against building it afresh.

Prints one JSON object. SASRec is trained for one epoch with the sampled softmax on the first 90 % (by time) of
a synthetic stream (``liverec.data.synthetic``: ``--items`` items, 15 events per item, up to 50,000 users; the
setting of ``bench_ann.py``); the rest of the stream is then learned online by the
:class:`~liverec.online.OnlineLearner`, as the updater does (an update every ``--update-every`` events, the
replay's tuned learner settings), and every ``--events-per-version`` events the model's item vectors become a
new version. For each version, one thread:

* ``successor``: ``VectorIndex.succeed(previous, vectors, queries=...)``, what serving runs — seconds, whether
  it carried the graph or built one, and its checks (recall@10 on 128 other users' query vectors);
* ``fresh``: a new HNSW index over the same vectors — build seconds;
* recall@10 of both against exact scoring, with the filters of ``bench_ann.py`` (the user's seen items, a random
  5 % unavailable), on the user vectors of ``--queries`` random users' histories under the version's model.

The successor is the next version's previous index, as in serving (repeated carries compound).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_ann_carry.py [--items 100000] [--versions 4]
        [--events-per-version 10000] [--update-every 1000] [--queries 500] [--seed 0]
"""

# ruff: noqa: E402  (the thread pools read these variables when NumPy and FAISS load, so they come first)
import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import time
from typing import Any

import faiss
import numpy as np
import torch

from bench_ann import masks, recall
from liverec.data.interactions import Histories
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.models.sasrec import SASRec
from liverec.online.learner import TUNED_LEARNER, LearnerConfig, OnlineLearner
from liverec.retrieval import VectorIndex, exact_recall

K = 10


def filtered_recall(index: VectorIndex, model: SASRec, histories: Histories, seed: int) -> float:
    """recall@10 of ``index`` against exact scoring of the same vectors, seen + 5 % unavailable filtered."""
    vectors = {
        "item_vectors": index._buffer[: index.n_items],
        "user_vectors": model.user_vectors(histories).astype(np.float32),
        "seen": histories.items.astype(np.int64),
        "seen_indptr": histories.indptr.astype(np.int64),
    }
    allowed = masks(vectors, category=False, seed=seed)
    exact = VectorIndex(vectors["item_vectors"], ann_threshold=index.n_items + 1)
    found = np.stack([index.search(q, K, a)[0] for q, a in zip(vectors["user_vectors"], allowed, strict=True)])
    truth = np.stack([exact.search(q, K, a)[0] for q, a in zip(vectors["user_vectors"], allowed, strict=True)])
    return round(recall(found, truth), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--events-per-version", type=int, default=10_000)
    parser.add_argument("--update-every", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)

    n_users = min(50_000, 5 * args.items)
    config = SyntheticConfig(n_users=n_users, n_items=args.items, n_events=15 * args.items, seed=args.seed)
    dataset, _ = generate(config)
    events = dataset.interactions
    order = np.argsort(events.timestamps, kind="stable")
    n_pretrain = int(0.9 * len(order))
    started = time.perf_counter()
    model = SASRec(loss="sampled-softmax", max_epochs=1, max_len=50, n_threads=1, seed=args.seed)
    model.fit(events.subset(order[:n_pretrain]))
    fit_seconds = time.perf_counter() - started

    learner_config = LearnerConfig(every_events=args.update_every, seed=args.seed, **TUNED_LEARNER["sasrec"])
    learner = OnlineLearner(
        model,
        dataset.item_map.external_ids,
        dataset.user_map.external_ids,
        events.subset(order[:n_pretrain]),
        learner_config,
    )
    rest = order[n_pretrain:]
    stream_users = dataset.user_map.to_external(events.user_ids[rest])
    stream_items = dataset.item_map.to_external(events.item_ids[rest])
    stream_times = events.timestamps[rest]
    rng = np.random.default_rng(args.seed)
    query_users = rng.choice(events.n_users, size=args.queries, replace=False)
    histories = Histories.from_interactions(events.subset(order[:n_pretrain]), query_users)

    check_users = rng.choice(np.setdiff1d(np.arange(events.n_users), query_users), size=128, replace=False)
    check_histories = Histories.from_interactions(events.subset(order[:n_pretrain]), check_users)
    started = time.perf_counter()
    previous = VectorIndex(model.item_vectors(), ann_threshold=0, ann_kind="hnsw")
    first = {"build_seconds": round(time.perf_counter() - started, 2), "items": previous.n_items}
    previous.built_recall = exact_recall(previous, model.user_vectors(check_histories).astype(np.float32))
    rows: list[dict[str, Any]] = []
    position = 0
    for version in range(1, args.versions + 1):
        stop = min(position + args.events_per_version, len(rest))
        for start in range(position, stop, args.update_every):
            end = min(start + args.update_every, stop)
            learner.observe(stream_users[start:end], stream_items[start:end], stream_times[start:end])
            learner.update()
        position = stop
        vectors = learner.model.item_vectors()
        old = previous._buffer[: previous.n_items]
        drift = np.linalg.norm(vectors[: len(old)] - old, axis=1) / np.maximum(np.linalg.norm(old, axis=1), 1e-12)
        started = time.perf_counter()
        norms = np.linalg.norm(vectors, axis=1)
        check_queries = learner.model.user_vectors(check_histories).astype(np.float32)
        started = time.perf_counter()
        successor = VectorIndex.succeed(previous, vectors, queries=check_queries)  # what serving does
        succeed_seconds = time.perf_counter() - started
        started = time.perf_counter()
        fresh = VectorIndex(vectors, ann_threshold=0, ann_kind="hnsw")
        build_seconds = time.perf_counter() - started
        row = {
            "version": version,
            "events_learned": position,
            "items": len(vectors),
            "new_items": len(vectors) - len(old),
            "relative_drift_median": round(float(np.median(drift)), 5),
            "relative_drift_p99": round(float(np.percentile(drift, 99)), 5),
            "norm_median": round(float(np.median(norms)), 4),
            "norm_max_over_median": round(float(norms.max() / np.median(norms)), 2),
            "provenance": successor.provenance,
            "succeed_seconds": round(succeed_seconds, 2),
            "check_recall_carried": None if successor.carried_recall is None else round(successor.carried_recall, 4),
            "check_recall_built": None if successor.built_recall is None else round(successor.built_recall, 4),
            "fresh_build_seconds": round(build_seconds, 2),
            "fresh_recall_filtered": filtered_recall(fresh, learner.model, histories, args.seed),
            "successor_recall_filtered": filtered_recall(successor, learner.model, histories, args.seed),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        previous = successor
    print(
        json.dumps(
            {
                "setting": {**vars(args), "threads": 1, "ef_search": previous.ef_search},
                "machine": platform.processor() or platform.machine(),
                "load_average": os.getloadavg(),
                "pretrain_fit_seconds": round(fit_seconds, 1),
                "first_build": first,
                "versions": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
