"""The cost curve (issue 22): every step of the data path on a shop-sized synthetic workload, per size.

The workload is :func:`liverec.data.synthetic.generate` with a shop's shape: ``--items`` items in ``--clusters``
categories (the planted clusters), Zipf (long-tail) popularity within each category, 20 % of the catalogue
released over the span, one user per ``--events-per-user`` events (Zipf activity), ``--events`` events.
Its events are fed to the import API (:func:`liverec.pipeline.import_dataset`, what ``liverec import`` calls),
not written to a file first: the file parser is not on the path being measured.

Steps (``--steps``, in this order; each runs in its own child process, so that one step's memory is its own):

* ``generate``: the generator itself;
* ``import-sqlite``: ``import_dataset`` into a fresh SQLite log: the events, then the catalogue's item records
  (``put_items``; its seconds are reported apart, and ``events_per_s`` is over the events' part);
* ``import-redis``: ``import_dataset`` into a Redis Stream log under a fresh key prefix (the log only: ``liverec
  import`` on the Redis backend also applies each batch to the shared state; that part is ``rebuild-redis``),
  with the Redis memory it added; every key of the prefix is deleted after the size;
* ``rebuild``: ``EmbeddedBackend.rebuild_state`` (``liverec rebuild``): the SQLite log replayed into a fresh
  state, snapshot written;
* ``rebuild-redis``: ``RedisBackend.rebuild_state``: the stream replayed into the Redis state;
* ``read-log``: :func:`liverec.pipeline.read_log` on the SQLite log (what ``liverec train`` trains from);
* ``train``: SASRec with ``loss="sampled-softmax"``, one epoch, one torch thread, on what ``read-log`` read
  (``--sasrec NAME=VALUE``, repeatable: other settings, e.g. ``--sasrec row_wise_from=none``).
  With ``--train-steps N`` only the first N optimiser steps are run and timed, and the epoch's time is
  extrapolated from their mean (``"extrapolated": true`` in the JSON). The validation pass SASRec runs after
  an epoch is not part of the epoch's time and is skipped (it scores every user against every item);
* ``load``: ``Recommender.load`` of the trained model;
* ``serve``: in-process top-10 on one thread with filters (the user's seen items and a random 5 % of the
  catalogue unavailable), single queries of real users' histories: ``VectorIndex`` exact (float32 scan) and
  ``VectorIndex(ann_kind="hnsw")`` (build seconds, p50/p99, recall@10 against the exact answers);
* ``http``: the whole engine: the trained model registered and promoted beside the log and the state, a real
  ``liverec serve`` (one worker, updater off, the engine's default settings — two compute threads, retrieval: above
  ``ann_threshold`` it serves exactly while the HNSW graph builds in the background), its resident memory at
  ready, once the graph serves and after the load, and top-10 requests from ``wrk`` (httpx without it):
  requests/s, p50/p99 (``--http-*``).

Per step: wall seconds (``time.perf_counter``) and the peak resident memory of the step itself (the child's
``VmHWM``, reset after the step's inputs are loaded, so the inputs it holds count and its set-up does not);
``rss_before_mib``: the resident memory when the step started. Sizes are every pair of ``--items`` and
``--events``; a size's steps share a folder under ``--work`` (kept with ``--keep``, so that a slow step can
be rerun alone on what earlier steps left there). Prints one JSON object; ``--plot FILE`` also draws the
times per size on log-log axes (extra ``plot``).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_scale.py --items 10000,100000,1000000 \\
        --events 1000000 [--steps import-sqlite,rebuild,...] [--train-steps 200] [--plot docs/img/scale.png]
"""

# ruff: noqa: E402  (the thread pools read these variables when NumPy, torch and FAISS load, so they come first)
import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import itertools
import json
import math
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STEPS = (
    "generate",
    "import-sqlite",
    "import-redis",
    "rebuild",
    "rebuild-redis",
    "read-log",
    "train",
    "load",
    "serve",
    "http",
)
K = 10
SOURCE = "scale"


@dataclass(frozen=True)
class Size:
    """One workload: the generator's sizes and where its steps leave their outputs."""

    n_items: int
    n_events: int
    events_per_user: int
    n_clusters: int
    folder: Path
    redis_url: str
    redis_prefix: str
    seed: int = 0

    @property
    def n_users(self) -> int:
        return max(1, self.n_events // self.events_per_user)

    def config(self) -> Any:
        from liverec.data.synthetic import SyntheticConfig

        return SyntheticConfig(
            n_users=self.n_users,
            n_items=self.n_items,
            n_events=self.n_events,
            n_clusters=self.n_clusters,
            seed=self.seed,
        )

    def settings(self, backend: str) -> Any:
        from liverec.settings import Settings

        return Settings.load(
            data_dir=self.folder, backend=backend, redis_url=self.redis_url, redis_prefix=self.redis_prefix
        )


# --- measuring one step -----------------------------------------------------------------------------


def _status_mib(field: str, pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in MiB (this process by default)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _reset_peak() -> None:
    """Start the process's peak resident memory (``VmHWM``) again from its current resident set (Linux)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class Meter:
    """Times a step and records its peak resident memory from :meth:`start` on."""

    def __init__(self) -> None:
        self.started = 0.0
        self.rss_before = 0.0

    def start(self) -> None:
        _reset_peak()
        self.rss_before = _status_mib("VmRSS")
        self.started = time.perf_counter()

    def done(self, **extra: Any) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        return {
            "seconds": round(seconds, 3),
            "peak_rss_mib": round(_status_mib("VmHWM")),
            "rss_before_mib": round(self.rss_before),
            **extra,
        }


# --- the steps (each runs in a child process) -------------------------------------------------------


def step_generate(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.data.synthetic import generate

    meter = Meter()
    meter.start()
    dataset, _ = generate(size.config())
    inter = dataset.interactions
    return meter.done(
        events_per_s=round(size.n_events / (time.perf_counter() - meter.started)),
        users=inter.n_users,
        items_with_events=len(np.unique(inter.item_ids)),
    )


def _import(size: Size, open_log: Callable[[], Any]) -> dict[str, Any]:
    """``import_dataset`` of the workload into a fresh log; the catalogue's part (``put_items``) timed apart."""
    from liverec.data.synthetic import generate
    from liverec.pipeline import import_dataset
    from liverec.state.store import DEFAULT_EVENT_WEIGHTS

    dataset, _ = generate(size.config())
    meter = Meter()
    catalogue_seconds = 0.0
    with open_log() as event_log:
        put_items = event_log.put_items

        def timed_put_items(*args: Any, **kwargs: Any) -> int:
            nonlocal catalogue_seconds
            started = time.perf_counter()
            written = put_items(*args, **kwargs)
            catalogue_seconds += time.perf_counter() - started
            return int(written)

        event_log.put_items = timed_put_items
        meter.start()
        summary = import_dataset(dataset, event_log, source=SOURCE, event_types=DEFAULT_EVENT_WEIGHTS)
        result = meter.done()
    if summary.stored != size.n_events:
        raise RuntimeError(f"import stored {summary.stored} of {size.n_events} events (a log left from before?)")
    return {
        **result,
        "events_per_s": round(summary.events / (result["seconds"] - catalogue_seconds)),
        "events_per_s_with_catalogue": round(summary.events / result["seconds"]),
        "catalogue_seconds": round(catalogue_seconds, 2),
        "items_described": summary.items_described,
    }


def step_import_sqlite(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.backends.base import EVENTS_FILE, STATE_FILE
    from liverec.events.log import SQLiteEventLog

    for name in (EVENTS_FILE, f"{EVENTS_FILE}-wal", f"{EVENTS_FILE}-shm", STATE_FILE):
        (size.folder / name).unlink(missing_ok=True)
    result = _import(size, lambda: SQLiteEventLog(size.folder / EVENTS_FILE, synchronous=options.synchronous))
    result["log_file_mib"] = round((size.folder / EVENTS_FILE).stat().st_size / 2**20)
    result["synchronous"] = options.synchronous
    return result


def _settled_used_memory(client: Any, wait_s: float = 300.0) -> int:
    """Redis' ``used_memory`` once it has freed what an earlier ``UNLINK`` left to its background thread
    (``lazyfree_pending_objects`` at 0, or ``wait_s`` passed): read while a deleted 20M-event stream was still being
    freed, a size's "memory added" came out about 1.2 GB short (docs/results.md, "Session 35")."""
    deadline = time.monotonic() + wait_s
    while int(client.info("memory")["lazyfree_pending_objects"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return int(client.info("memory")["used_memory"])


def step_import_redis(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.events.redis_log import RedisEventLog, delete_prefix, redis_client

    client = redis_client(size.redis_url)
    try:
        delete_prefix(client, size.redis_prefix)
        before = _settled_used_memory(client)
        result = _import(size, lambda: RedisEventLog(client, size.redis_prefix))
        result["redis_used_memory_added_mib"] = round((int(client.info("memory")["used_memory"]) - before) / 2**20)
        return result
    finally:
        client.close()


def step_rebuild(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(size.settings("embedded"))
    backend.require_log("run the import-sqlite step first")
    meter = Meter()
    meter.start()
    state = backend.rebuild_state()
    result = meter.done(users=state.n_users, offset=state.offset)
    result["events_per_s"] = round(size.n_events / result["seconds"])
    result["snapshot_mib"] = round(backend.state_path.stat().st_size / 2**20)
    return result


def step_rebuild_redis(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.backends.redis import RedisBackend

    backend = RedisBackend(size.settings("redis"))
    try:
        with backend.open_log() as event_log:
            if event_log.count() != size.n_events:
                raise RuntimeError(f"{backend.describe()}: holds {event_log.count()} events; run import-redis first")
        before = _settled_used_memory(backend.client)
        meter = Meter()
        meter.start()
        state = backend.rebuild_state()
        result = meter.done(users=state.n_users)
        result["events_per_s"] = round(size.n_events / result["seconds"])
        result["redis_used_memory_added_mib"] = round(
            (int(backend.client.info("memory")["used_memory"]) - before) / 2**20
        )
        return result
    finally:
        backend.close()


def step_read_log(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    """``read_log``; what it read is saved (``interactions.npz``) for the training and serving steps."""
    from liverec.backends.base import EVENTS_FILE
    from liverec.events.log import SQLiteEventLog
    from liverec.pipeline import read_log
    from liverec.state.store import DEFAULT_EVENT_WEIGHTS

    meter = Meter()
    with SQLiteEventLog(size.folder / EVENTS_FILE, readonly=True) as event_log:
        meter.start()
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
        result = meter.done()
    inter = data.interactions
    categories = np.full(inter.n_items, -1, dtype=np.int64)
    if data.items is not None:  # the generator's categories are "cluster<c>"
        for row, genres in enumerate(data.items.genres):
            if genres:
                categories[row] = int(str(genres[0]).removeprefix("cluster"))
    np.savez(
        size.folder / "interactions.npz",
        user_ids=inter.user_ids,
        item_ids=inter.item_ids,
        timestamps=inter.timestamps,
        values=inter.values,
        event_types=inter.event_types,
        sizes=np.array([inter.n_users, inter.n_items]),
        item_category=categories,
        user_names=np.asarray(data.user_ids, dtype=str),  # the rows' ids: the http step registers and asks by them
        item_names=np.asarray(data.item_ids, dtype=str),
    )
    return {
        **result,
        "events_per_s": round(len(inter) / result["seconds"]),
        "users": inter.n_users,
        "items": inter.n_items,
    }


def _load_interactions(size: Size) -> tuple[Any, np.ndarray]:
    from liverec.data.interactions import Interactions

    path = size.folder / "interactions.npz"
    if not path.exists():
        raise RuntimeError(f"{path}: missing; run the read-log step first")
    with np.load(path, allow_pickle=False) as saved:
        n_users, n_items = (int(n) for n in saved["sizes"])
        interactions = Interactions(
            user_ids=saved["user_ids"],
            item_ids=saved["item_ids"],
            timestamps=saved["timestamps"],
            values=saved["values"],
            event_types=saved["event_types"],
            n_users=n_users,
            n_items=n_items,
            event_type_names=("view",),
        )
        return interactions, saved["item_category"]


class _StepLimit(Exception):
    """Raised by :class:`_TimedTraining` once its step budget is spent."""


def _timed_training(max_steps: int | None) -> Any:
    """SASRec's local training, timing each epoch's training pass and stopping after ``max_steps`` steps."""
    from liverec.models.sasrec.training import LocalTraining

    class TimedTraining(LocalTraining):
        def __init__(self) -> None:
            self.step_seconds: list[float] = []
            self.epoch_seconds: float | None = None
            self._epoch_started = self._last = 0.0

        def start_epoch(self, network: Any) -> None:
            self._epoch_started = self._last = time.perf_counter()

        def step(self, optimizer: Any, loss: Any, weight: float, *clipping: Any) -> None:
            super().step(optimizer, loss, weight, *clipping)
            now = time.perf_counter()
            self.step_seconds.append(now - self._last)  # the whole step: batch, forward, loss, backward, update
            self._last = now
            if max_steps is not None and len(self.step_seconds) >= max_steps:
                raise _StepLimit

        def finish_epoch(self, network: Any, total: float, count: int, rng: np.random.Generator) -> float:
            self.epoch_seconds = time.perf_counter() - self._epoch_started
            return super().finish_epoch(network, total, count, rng)

        def validation_ndcg(self, model: Any, history: Any, targets: Any) -> float:
            return 0.0  # skipped: not part of an epoch's time (module docstring)

    return TimedTraining()


def step_train(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    import torch

    from liverec.models import parse_params
    from liverec.models.sasrec import SASRec

    torch.set_num_threads(1)
    interactions, _ = _load_interactions(size)
    training = _timed_training(options.train_steps or None)
    overrides = parse_params("sasrec", options.sasrec)  # typed and checked as `liverec ... --param` is
    settings: dict[str, Any] = {"loss": "sampled-softmax", "max_len": options.max_len, **overrides}
    model = SASRec(max_epochs=1, n_threads=1, refit=False, seed=0, training=training, **settings)
    meter = Meter()
    meter.start()
    stopped = False
    try:
        model.fit(interactions)
    except _StepLimit:
        stopped = True
        model._fitted = True  # the weights after the timed steps: enough for the load and serve steps
    result = meter.done()
    steps_per_epoch = model._epoch_steps
    timed = training.step_seconds[1:] if len(training.step_seconds) > 1 else training.step_seconds
    if stopped:
        epoch_seconds = float(np.mean(timed)) * steps_per_epoch
    else:
        epoch_seconds = float(training.epoch_seconds or result["seconds"])
    model.save(size.folder / "model")
    return {
        **result,
        "epoch_seconds": round(epoch_seconds, 1),
        "extrapolated": stopped,
        "steps_timed": len(training.step_seconds),
        "steps_per_epoch": steps_per_epoch,
        "seconds_per_step_median": round(float(np.median(timed)), 4),
        "events_per_s": round(len(interactions) / epoch_seconds),
        "setting": {
            "loss": model.config.loss,
            "max_len": model.config.max_len,
            "batch_size": model.config.batch_size,
            "n_negatives": model.config.n_negatives,
            "dim": model.config.dim,
            "row_wise_from": model.config.row_wise_from,
            "average_decay": model.config.average_decay,
            "n_threads": 1,
        },
        "items_in_model": model.n_items,
    }


def step_load(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from liverec.models.base import Recommender

    meter = Meter()
    meter.start()
    model = Recommender.load(size.folder / "model")
    return meter.done(
        items=model.n_items, state_mib=round((size.folder / "model" / "state.npz").stat().st_size / 2**20)
    )


def _latency(
    index: Any, queries: np.ndarray, allowed_rows: Callable[[int], np.ndarray], n_calls: int
) -> tuple[dict[str, float], np.ndarray]:
    """p50 / p99 ms of single-query top-``K`` searches (the mask is built outside the timer), and the ids found."""
    found = np.empty((n_calls, K), dtype=np.int64)
    times = []
    for warm_up in range(min(5, n_calls)):
        index.search(queries[warm_up], K, allowed_rows(warm_up))
    for row in range(n_calls):
        allowed = allowed_rows(row)
        started = time.perf_counter_ns()
        ids, _ = index.search(queries[row], K, allowed)
        times.append((time.perf_counter_ns() - started) / 1e6)
        found[row] = ids
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}, found


def step_serve(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    from bench_ann import recall
    from liverec.data.interactions import Histories
    from liverec.models.base import Recommender
    from liverec.retrieval import VectorIndex
    from liverec.retrieval.index import limit_threads
    from liverec.settings import Settings

    limit_threads(1)
    interactions, _ = _load_interactions(size)
    model: Any = Recommender.load(size.folder / "model")
    rng = np.random.default_rng(size.seed)
    users = rng.choice(interactions.n_users, size=min(options.queries, interactions.n_users), replace=False)
    histories = Histories.from_interactions(interactions, users)
    queries = model.user_vectors(histories).astype(np.float32)
    vectors = model.item_vectors().astype(np.float32)
    del interactions
    available = rng.random(len(vectors)) >= 0.05

    def allowed_rows(row: int) -> np.ndarray:
        allowed = available.copy()
        allowed[histories.items[histories.indptr[row] : histories.indptr[row + 1]]] = False
        return allowed

    defaults = Settings.model_fields  # the engine's settings: float16 exact scan above compact_threshold, efSearch
    compact_threshold = defaults["compact_threshold"].default
    ef_search = defaults["hnsw_ef_search"].default
    out: dict[str, Any] = {
        "items": len(vectors),
        "queries": len(queries),
        "filters": "seen + 5 % unavailable",
        "compact_threshold": compact_threshold,
    }
    meter = Meter()
    meter.start()
    exact = VectorIndex(vectors, ann_threshold=len(vectors) + 1, compact_threshold=compact_threshold)
    build_seconds = time.perf_counter() - meter.started  # the float32 copy (and the float16 one)
    out["exact"], truth = _latency(exact, queries, allowed_rows, len(queries))
    out["exact"]["build_seconds"] = round(build_seconds, 3)
    out["exact"]["float16_fallbacks"] = exact.compact_fallbacks  # queries the float16 scan left to float32
    del exact
    started = time.perf_counter()
    hnsw = VectorIndex(
        vectors, ann_threshold=0, ann_kind="hnsw", compact_threshold=compact_threshold, hnsw_ef_search=ef_search
    )
    build_seconds = time.perf_counter() - started
    out["hnsw"], found = _latency(hnsw, queries, allowed_rows, len(queries))
    out["hnsw"].update(
        build_seconds=round(build_seconds, 1),
        ef_search=hnsw.ef_search,
        recall_at_10_vs_exact=round(recall(found, truth), 4),
        ann_fallbacks=hnsw.ann_fallbacks,
    )
    # seconds: the exact index's latency run, the graph's build and its latency run
    return {**meter.done(), **out}


def _process_mib(pid: int) -> dict[str, int]:
    """Resident memory now and at its peak (``VmRSS``, ``VmHWM``) of another process, in MiB."""
    return {"rss_mib": round(_status_mib("VmRSS", pid)), "peak_rss_mib": round(_status_mib("VmHWM", pid))}


def step_http(size: Size, options: argparse.Namespace) -> dict[str, Any]:
    """The whole engine over HTTP: the trained model registered and promoted in the size's folder (beside the
    log of ``import-sqlite`` and the state of ``rebuild``), a real ``liverec serve`` (one uvicorn worker, updater
    off, the engine's defaults: two compute threads, its retrieval settings; ``--http-env`` changes them), its
    resident memory, and top-10 requests of ``--http-users`` random known users for ``--http-seconds`` seconds ×
    ``--http-repeats`` from ``--http-concurrency`` connections (``wrk`` when installed, else httpx; the client
    shares the 2 cores)."""
    import asyncio

    import httpx

    from bench_serving import http_load, start_server, wrk_load
    from liverec.backends import STATE_FILE
    from liverec.models.base import Recommender
    from liverec.registry import ModelRegistry
    from liverec.settings import Settings

    # without the rebuild's snapshot the server replays the whole log as it starts (minutes at 20M events), past
    # the ready wait: say which step is missing instead of "did not become ready"
    for needed, step in ((STATE_FILE, "rebuild"), ("model", "train"), ("interactions.npz", "read-log")):
        if not (size.folder / needed).exists():
            raise RuntimeError(f"{size.folder / needed}: missing; run the {step} step first")
    with np.load(size.folder / "interactions.npz", allow_pickle=False) as saved:
        if "user_names" not in saved:
            raise RuntimeError("interactions.npz has no user_names: rerun the read-log step")
        user_names, item_names = saved["user_names"], saved["item_names"]
    registry_root = size.folder / "models"  # the data folder's registry (backends.base.MODELS_DIR)
    shutil.rmtree(registry_root, ignore_errors=True)
    registry = ModelRegistry(registry_root)
    model = Recommender.load(size.folder / "model")
    version = registry.register(model, [str(item) for item in item_names], training={"source": "bench_scale"})
    registry.promote(version, reason="bench_scale http step")
    n_items = model.n_items
    del model
    rng = np.random.default_rng(size.seed)
    users = [str(user) for user in rng.choice(user_names, size=min(options.http_users, len(user_names)), replace=False)]
    del user_names, item_names

    started = time.perf_counter()
    environment = dict(item.split("=", 1) for item in options.http_env)
    process, url = start_server(size.folder, environment)
    try:
        out: dict[str, Any] = {"ready_seconds": round(time.perf_counter() - started, 1)}
        out["memory_at_ready"] = _process_mib(process.pid)
        out["retrieval_at_ready"] = httpx.get(f"{url}/v1/stats", timeout=30).json()["retrieval"]
        deadline = time.monotonic() + options.http_index_wait
        retrieval = out["retrieval_at_ready"]
        while n_items >= Settings.model_fields["ann_threshold"].default and retrieval != "faiss-hnsw":
            if time.monotonic() > deadline:  # measured as it is, and the JSON says which retrieval served
                break
            time.sleep(2)
            retrieval = httpx.get(f"{url}/v1/stats", timeout=30).json()["retrieval"]
        out["retrieval"] = retrieval
        out["index_ready_seconds"] = round(time.perf_counter() - started, 1)  # start, load, background build
        out["memory_index_ready"] = _process_mib(process.pid)
        workdir = Path(tempfile.mkdtemp(prefix="bench-scale-http-"))
        try:
            runs = []
            for _ in range(options.http_repeats):
                if shutil.which("wrk"):
                    run = wrk_load(url, users, options.http_concurrency, options.http_seconds, workdir)
                else:
                    run = asyncio.run(http_load(url, users, options.http_concurrency, options.http_seconds))
                runs.append({"run": len(runs) + 1, **run})  # the order they ran in, kept through the sort
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        runs.sort(key=lambda run: run["requests_per_s"])
        out["median_run"] = runs[len(runs) // 2]
        out["runs"] = runs
        out["memory_after_load"] = _process_mib(process.pid)
        out["retrieval_after_load"] = httpx.get(f"{url}/v1/stats", timeout=30).json()["retrieval"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    out["users_asked"], out["server_settings"] = len(users), environment
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


STEP_FUNCTIONS: dict[str, Callable[[Size, argparse.Namespace], dict[str, Any]]] = {
    "generate": step_generate,
    "import-sqlite": step_import_sqlite,
    "import-redis": step_import_redis,
    "rebuild": step_rebuild,
    "rebuild-redis": step_rebuild_redis,
    "read-log": step_read_log,
    "train": step_train,
    "load": step_load,
    "serve": step_serve,
    "http": step_http,
}


def run_step(name: str, size: Size, options: argparse.Namespace) -> dict[str, Any]:
    """One step in this (child) process; a failure is reported in the JSON, not raised."""
    try:
        return STEP_FUNCTIONS[name](size, options)
    except Exception as error:  # a step that fails still leaves the others' figures
        return {"error": f"{type(error).__name__}: {error}"}


# --- the cost curve ---------------------------------------------------------------------------------

#: The figures fitted and drawn: name -> (step, path into the step's result). Times in seconds unless named ms.
FIGURES: dict[str, tuple[str, str]] = {
    "generate": ("generate", "seconds"),
    "import-sqlite": ("import-sqlite", "seconds"),
    "import-redis": ("import-redis", "seconds"),
    "rebuild": ("rebuild", "seconds"),
    "rebuild-redis": ("rebuild-redis", "seconds"),
    "read-log": ("read-log", "seconds"),
    "train epoch": ("train", "epoch_seconds"),
    "load": ("load", "seconds"),
    "hnsw build": ("serve", "hnsw.build_seconds"),
    "exact p50 ms": ("serve", "exact.p50_ms"),
    "hnsw p50 ms": ("serve", "hnsw.p50_ms"),
}


def figure(name: str, size: dict[str, Any]) -> float | None:
    """The figure ``name`` of one size's results (None where the step did not run or failed)."""
    step, path = FIGURES[name]
    value: Any = size["steps"].get(step, {})
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def growth_exponents(sizes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure, the slope of log value against log size between consecutive sizes that differ in one dimension.

    Keys are like ``"items 10000->100000 at events 1000000"``; a slope of 1 is linear growth.
    """
    out: dict[str, dict[str, float]] = {}
    for name in FIGURES:
        slopes: dict[str, float] = {}
        for dimension, other in (("n_items", "n_events"), ("n_events", "n_items")):
            groups: dict[int, dict[int, float]] = {}
            for size in sizes:
                value = figure(name, size)
                if value is not None:  # a later run of the same size replaces an earlier one
                    groups.setdefault(size[other], {})[size[dimension]] = value
            for fixed, points in sorted(groups.items()):
                for (x0, y0), (x1, y1) in itertools.pairwise(sorted(points.items())):
                    label = f"{dimension.removeprefix('n_')} {x0}->{x1} at {other.removeprefix('n_')} {fixed}"
                    slopes[label] = round(math.log(y1 / y0) / math.log(x1 / x0), 2)
        if slopes:
            out[name] = slopes
    return out


def plot(sizes: list[dict[str, Any]], path: Path) -> None:
    """Log-log seconds of each step against the catalogue size, one line per (step, events) pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_, axes = plt.subplots(figsize=(9, 6))
    event_sizes = sorted({size["n_events"] for size in sizes})
    styles = ["-", "--", ":", "-."]
    for number, name in enumerate(name for name in FIGURES if not name.endswith(" ms")):
        for event_number, n_events in enumerate(event_sizes):
            points = {
                size["n_items"]: value
                for size in sizes
                if size["n_events"] == n_events and (value := figure(name, size)) is not None
            }
            if not points:
                continue
            xs, ys = zip(*sorted(points.items()), strict=True)
            axes.plot(
                xs,
                ys,
                styles[event_number % len(styles)],
                marker="o",
                color=f"C{number}",
                label=f"{name} ({n_events / 1e6:g}M events)",
            )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("items in the catalogue")
    axes.set_ylabel("seconds (wall, one thread)")
    axes.set_title("LiveRec data path on one core: time per step against catalogue size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure_.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_.savefig(path, dpi=110)
    plt.close(figure_)


# --- main ---------------------------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=_counts, default=[10_000, 100_000], help="catalogue sizes, e.g. 1e4,1e5,1e6")
    parser.add_argument("--events", type=_counts, default=[1_000_000], help="stream sizes, e.g. 1e6,5e6")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of: {', '.join(STEPS)}")
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--clusters", type=int, default=50, help="categories (the generator's clusters)")
    parser.add_argument("--train-steps", type=int, default=0, help="0: a whole epoch; N: time N steps, extrapolate")
    parser.add_argument("--max-len", type=int, default=50, help="SASRec's window (the serving benchmarks' 50)")
    parser.add_argument(
        "--sasrec", action="append", default=[], metavar="NAME=VALUE", help="SASRec setting of the train step"
    )
    parser.add_argument("--queries", type=int, default=500, help="single-query searches per index")
    parser.add_argument("--http-seconds", type=float, default=10.0, help="http step: seconds per load run")
    parser.add_argument("--http-repeats", type=int, default=3, help="http step: load runs (the median is reported)")
    parser.add_argument("--http-concurrency", type=int, default=8, help="http step: open connections")
    parser.add_argument("--http-users", type=int, default=10_000, help="http step: users asked for (random)")
    parser.add_argument(
        "--http-env", action="append", default=[], metavar="NAME=VALUE", help="http step: a server setting"
    )
    parser.add_argument(
        "--http-index-wait", type=float, default=1800.0, help="http step: seconds to wait for the background index"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--work", type=Path, default=None, help="folder for the sizes' data (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep --work's folders (to rerun a step alone)")
    parser.add_argument("--plot", type=Path, default=None, help="write a log-log PNG of the times here")
    parser.add_argument(
        "--results",
        type=Path,
        nargs="*",
        default=[],
        help="JSON of earlier runs: their sizes join the exponents and the plot (--steps '': only summarise)",
    )
    args = parser.parse_args()
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"--steps: unknown {', '.join(unknown)}; expected some of {', '.join(STEPS)}")
    steps = [step for step in STEPS if step in steps]  # the path's order

    work = args.work or Path(tempfile.mkdtemp(prefix="liverec-scale-"))
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    sizes: list[dict[str, Any]] = []
    try:
        for n_events in args.events if steps else []:  # no steps: only summarise --results
            for n_items in args.items:
                folder = work / f"items-{n_items}-events-{n_events}"
                folder.mkdir(parents=True, exist_ok=True)
                size = Size(n_items, n_events, args.events_per_user, args.clusters, folder, args.redis_url, prefix)
                record: dict[str, Any] = {
                    "n_items": n_items,
                    "n_events": n_events,
                    "n_users": size.n_users,
                    "load_average_before": os.getloadavg(),
                    "steps": {},
                }
                try:
                    for step in steps:
                        with context.Pool(1, maxtasksperchild=1) as pool:
                            record["steps"][step] = pool.apply(run_step, (step, size, args))
                        print(
                            f"# {n_items} items, {n_events} events, {step}: {json.dumps(record['steps'][step])}",
                            file=sys.stderr,
                            flush=True,
                        )
                finally:
                    if "import-redis" in steps or "rebuild-redis" in steps:
                        from liverec.events.redis_log import delete_prefix, redis_client

                        client = redis_client(args.redis_url)
                        record["redis_keys_deleted"] = delete_prefix(client, prefix)
                        client.close()
                record["load_average_after"] = os.getloadavg()
                sizes.append(record)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    # earlier runs' sizes (--results) join this run's in the exponents and the plot
    merged = [size for path in args.results for size in json.loads(path.read_text())["sizes"]] + sizes
    report = {
        "benchmark": "scale",
        "steps": steps,
        "workload": {
            "events_per_user": args.events_per_user,
            "clusters": args.clusters,
            "new_item_fraction": 0.2,
            "zipf_exponent": 1.0,
            "seed": 0,
        },
        "train_steps": args.train_steps,
        "sizes": sizes,
        "growth_exponents": growth_exponents(merged),
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "threads": 1,
            # glibc's allocator setting, if given: the training step's RSS depends on it (docs/results.md)
            "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        },
    }
    if args.plot is not None:
        plot(merged, args.plot)
        report["plot"] = str(args.plot)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
