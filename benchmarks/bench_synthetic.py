"""Throughput of the synthetic stream generator (:func:`liverec.data.synthetic.generate`).

Usage::

    .venv/bin/python benchmarks/bench_synthetic.py --events 1e6 1e7

Each size runs in its own child process (so its peak memory is its own): ``--repeats`` generations,
the median taken. Users and items scale with the events (``--events-per-user``,
``--events-per-item``). Prints one JSON object on stdout: per size, events per second of wall time
and of CPU time (the two differ when other processes share the cores), and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import time

import numpy as np


def measure(n_events: int, n_users: int, n_items: int, repeats: int, seed: int) -> dict[str, float | int]:
    """Generate ``repeats`` streams of one size; medians of wall and CPU seconds, and the peak RSS."""
    from liverec.data.synthetic import generate

    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = [], []
    for repeat in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        dataset, _ = generate(n_events=n_events, n_users=n_users, n_items=n_items, seed=seed + repeat)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
        if len(dataset.interactions) != n_events:
            raise RuntimeError(f"expected {n_events} events, got {len(dataset.interactions)}")
        del dataset
    wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
    return {
        "n_events": n_events,
        "n_users": n_users,
        "n_items": n_items,
        "median_wall_s": round(wall_s, 3),
        "median_cpu_s": round(cpu_s, 3),
        "events_per_s": round(n_events / wall_s),
        "events_per_cpu_s": round(n_events / cpu_s),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_import_mib": round(baseline_mib),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, nargs="+", default=[1e6], help="stream sizes, e.g. 1e6 1e7")
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--events-per-item", type=int, default=100)
    parser.add_argument("--min-items", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = []
    for size in args.events:
        n_events = int(size)
        n_users = max(1, n_events // args.events_per_user)
        n_items = max(args.min_items, n_events // args.events_per_item)
        with context.Pool(1) as pool:
            results.append(pool.apply(measure, (n_events, n_users, n_items, args.repeats, args.seed)))
    report = {
        "benchmark": "synthetic.generate",
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sizes": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
