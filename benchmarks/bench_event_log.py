"""Event ingest speed: parse_events, SQLiteEventLog.append (group commit) and import_columns.

Prints one JSON object; every figure is the median of ``--repeats`` runs, each on a fresh log file:

- ``parse_us_per_1000``: parse_events on a 1,000-event JSON array and NDJSON body;
- ``append_batch1_8threads``: events/s when 8 threads append one event at a time (each waits for its
  commit, so only group commit lets this exceed one commit per event), with commits per append;
- ``append_batch1000_1thread``: events/s for 1,000-event batches from one thread;
- ``import_columns``: events/s for ``--import-rows`` rows in 50,000-row transactions.

    python benchmarks/bench_event_log.py [--synchronous FULL] [--repeats 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from liverec.events.log import SQLiteEventLog
from liverec.events.schema import Event, EventConfig, parse_events


def parse_bodies(n: int = 1_000) -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(0)
    events = [
        {
            "event_id": f"evt-{k:08d}",
            "user_id": f"user-{rng.integers(100_000)}",
            "item_id": int(rng.integers(20_000)),
            "type": ["view", "click", "purchase"][k % 3],
            "timestamp": 1_700_000_000 + k,
            **({"context": {"page": "home", "position": k % 10}} if k % 4 == 0 else {}),
        }
        for k in range(n)
    ]
    return {
        "json_array": (json.dumps(events).encode(), "application/json"),
        "ndjson": ("\n".join(json.dumps(event) for event in events).encode(), "application/x-ndjson"),
    }


def time_parse(body: bytes, content_type: str, config: EventConfig, calls: int = 50) -> float:
    """Mean µs per parse_events call over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        parse_events(body, content_type, config)
    return (time.perf_counter() - started) / calls * 1e6


def fresh_log(folder: Path, synchronous: str) -> SQLiteEventLog:
    path = folder / f"bench-{time.perf_counter_ns()}.db"
    return SQLiteEventLog(path, synchronous=synchronous)


def append_from_threads(folder: Path, synchronous: str, threads: int = 8, per_thread: int = 250) -> dict[str, float]:
    with fresh_log(folder, synchronous) as log:

        def worker(thread: int) -> None:
            for k in range(per_thread):
                log.append([Event(f"{thread}-{k}", f"u{thread}", f"i{k}", "view", 1_700_000_000.0 + k)])

        workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        started = time.perf_counter()
        for worker_thread in workers:
            worker_thread.start()
        for worker_thread in workers:
            worker_thread.join()
        seconds = time.perf_counter() - started
        return {
            "events_per_s": threads * per_thread / seconds,
            "commits_per_append": log.commits / (threads * per_thread),
        }


def append_batches(folder: Path, synchronous: str, batches: int = 50, size: int = 1_000) -> dict[str, float]:
    with fresh_log(folder, synchronous) as log:
        rows = [
            [Event(os.urandom(16).hex(), f"u{k % 5_000}", f"i{k % 3_000}", "click", 1.7e9 + k) for k in range(size)]
            for _ in range(batches)
        ]  # random event ids, like the UUID4s the schema generates: the unique index is written at random
        started = time.perf_counter()
        for batch in rows:
            log.append(batch)
        return {"events_per_s": batches * size / (time.perf_counter() - started)}


def import_rows(folder: Path, synchronous: str, n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    columns = {
        "event_ids": np.char.add("ml:", np.arange(n).astype(str)).astype(object),
        "user_ids": rng.integers(0, 160_000, n),
        "item_ids": rng.integers(0, 60_000, n),
        "types": "rating",
        "timestamps": np.sort(rng.integers(1_000_000_000, 1_700_000_000, n)).astype(np.float64),
        "values": rng.integers(1, 11, n) / 2,
    }
    with fresh_log(folder, synchronous) as log:
        started = time.perf_counter()
        result = log.import_columns(**columns)
        seconds = time.perf_counter() - started
        assert result.stored == n
        return {"events_per_s": n / seconds, "seconds": seconds}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def repeat(repeats: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    return median_of([run() for _ in range(repeats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL", "EXTRA"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary log files go (default: $TMPDIR)")
    args = parser.parse_args()
    config = EventConfig()
    results: dict[str, object] = {}
    started = time.perf_counter()
    bodies = parse_bodies()
    results["parse_us_per_1000"] = {
        name: round(statistics.median(time_parse(body, kind, config) for _ in range(max(args.repeats, 5))), 1)
        for name, (body, kind) in bodies.items()
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder)
        results["append_batch1_8threads"] = repeat(args.repeats, lambda: append_from_threads(path, args.synchronous))
        results["append_batch1000_1thread"] = repeat(args.repeats, lambda: append_batches(path, args.synchronous))
        results["import_columns"] = {
            "rows": args.import_rows,
            **repeat(args.repeats, lambda: import_rows(path, args.synchronous, args.import_rows)),
        }
    print(
        json.dumps(
            {
                "benchmark": "event-log",
                "synchronous": args.synchronous,
                "repeats": args.repeats,
                "results": results,
                "total_seconds": round(time.perf_counter() - started, 1),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                    "load_average": os.getloadavg(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
