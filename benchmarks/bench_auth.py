"""What access control costs a served request: requests/s and latency of ``GET /v1/users/{id}/recommendations``
with no key in the data folder (every route open) and with keys (each request carries one and is checked).

One data folder and one ``liverec serve`` process (the serving benchmark's setting, updater off); the runs
alternate off, on, off, on, ... so that both see the same warm server and the same machine state, and the
median of each is reported. Between runs a key is created or revoked and the benchmark waits until the server
has seen it (keys are re-read at most a second after a change). With ``--rate-limit`` the server also runs the
per-key token bucket (with a rate no run reaches), so its cost is included.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx  # raw, not liverec.client: the times here are the server's (bench_client.py: what the client adds)

from bench_serving import build, http_load, start_server, wrk_load
from liverec.access import KeyStore


def wait_until(url: str, status: int) -> None:
    """Until an unauthenticated request gets ``status`` (200: no key is asked for; 401: keys are on)."""
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/v1/models", timeout=5).status_code != status:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not switch to {status}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of HTTP load per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="runs per arm (median reported)")
    parser.add_argument("--rate-limit", action="store_true", help="also run the per-key token bucket")
    parser.add_argument("--quick", action="store_true", help="small setting: 2k items, short runs")
    parser.add_argument("--keep", type=Path, help="keep the built data folder here and reuse it")
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.events, args.duration, args.repeats = 2_000, 2_000, 40_000, 3.0, 3
    root = args.keep or Path(tempfile.mkdtemp(prefix="liverec-bench-auth-"))
    use_wrk = shutil.which("wrk") is not None
    try:
        data_dir, users, _, info = build(root, args.users, args.items, args.events)
        store = KeyStore(data_dir)
        for key in store.keys():
            store.revoke(key.name)
        no_limit = {"LIVEREC_RATE_LIMIT_PER_S": "1000000", "LIVEREC_RATE_LIMIT_BURST": "1000000"}
        process, url = start_server(data_dir, no_limit if args.rate_limit else None)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        try:
            for _ in range(args.repeats):
                for arm in ("off", "on"):
                    headers = None
                    if arm == "on":
                        _, token = store.create("bench", frozenset({"read"}))
                        headers = {"Authorization": f"Bearer {token}"}
                        wait_until(url, 401)
                    if use_wrk:
                        run = wrk_load(url, users, args.concurrency, args.duration, root, headers)
                    else:
                        run = asyncio.run(http_load(url, users, args.concurrency, args.duration, headers))
                    if run["errors"]:
                        raise RuntimeError(f"{run['errors']} failed requests with auth {arm}")
                    runs[arm].append(run)
                    if arm == "on":
                        store.revoke("bench")
                        wait_until(url, 200)
        finally:
            process.terminate()
            process.wait(timeout=30)
        medians = {
            arm: {
                "requests_per_s": statistics.median(r["requests_per_s"] for r in arm_runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in arm_runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in arm_runs),
            }
            for arm, arm_runs in runs.items()
        }
        report = {
            "benchmark": "auth",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "setting": {
                "items": args.items,
                "users": args.users,
                "concurrency": args.concurrency,
                "duration_s": args.duration,
                "repeats": args.repeats,
                "rate_limit": args.rate_limit,
                "client": "wrk" if use_wrk else "httpx (asyncio; shares the CPU with the server)",
                "route": "GET /v1/users/{id}/recommendations?k=10",
            },
            "data": info,
            "median": medians,
            "on_vs_off_requests_per_s": round(medians["on"]["requests_per_s"] / medians["off"]["requests_per_s"], 4),
            "runs": {arm: [r["requests_per_s"] for r in arm_runs] for arm, arm_runs in runs.items()},
        }
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
