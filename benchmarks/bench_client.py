"""The Python client's own overhead (``liverec.client``) against raw httpx, on a real ``liverec serve``.

Both paths share one keep-alive connection to the same server and alternate request by request, so the server's
time and the machine's load fall on both alike; the difference is what the client adds (building the call,
event ids, reading the answer into pydantic models):

* a user's recommendations (``GET``, k=10): ``Client.recommend`` against ``httpx.get(...).json()``;
* a batch of events (``POST /v1/events``): ``Client.send_events`` against ``httpx.post(json=...)``;
* without the network: building the call and reading a captured answer, against ``json.loads`` of it;
* the batching sender: ``EventSender`` (a thread, batches of ``--batch``; ids made per event by ``send``) against
  posting batches of the same size, ids made beforehand, in a loop (events/s).

The latency benchmarks (bench_serving, bench_scaleout, bench_promotion, bench_auth) keep raw httpx so that
what they report is the server's time; this one says how much the client would add to it.

Prints one JSON object. ``--quick`` runs a small setting (for a smoke check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench_serving import build, percentiles, start_server
from liverec.client import Client, EventSender, calls, with_event_ids
from liverec.client.models import RecommendationOut


def _events(rng: np.random.Generator, items: list[str], n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"user_id": f"{tag}-{rng.integers(5_000)}", "item_id": items[int(rng.integers(len(items)))], "type": "view"}
        for _ in range(n)
    ]


def recommendations(url: str, users: list[str], n: int, rng: np.random.Generator) -> dict[str, Any]:
    raw_times, client_times = [], []
    with httpx.Client(base_url=url, timeout=30) as raw, Client(url) as client:
        for user in rng.choice(users, size=50):  # warm-up
            raw.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            client.recommend(str(user), k=10)
        for user in rng.choice(users, size=n):
            started = time.perf_counter()
            raw.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.recommend(str(user), k=10)
            client_times.append(time.perf_counter() - started)
    return _compare(raw_times, client_times, n)


def event_batches(url: str, items: list[str], n: int, batch: int, rng: np.random.Generator) -> dict[str, Any]:
    raw_times, client_times = [], []
    with httpx.Client(base_url=url, timeout=60) as raw, Client(url) as client:
        for _ in range(n):
            body = _events(rng, items, batch, "raw")
            started = time.perf_counter()
            response = raw.post("/v1/events", json=body)
            raw_times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"raw batch refused: {response.status_code} {response.text[:200]}")
            body = _events(rng, items, batch, "client")
            started = time.perf_counter()
            client.send_events(body)
            client_times.append(time.perf_counter() - started)
    return {"batch": batch, **_compare(raw_times, client_times, n)}


def offline(url: str, user: str, n: int) -> dict[str, Any]:
    """Per-call cost without the network: build the call, read a captured answer (explain=true: the largest)."""
    body = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"k": 10, "explain": "true"}).content
    started = time.perf_counter()
    for _ in range(n):
        json.loads(body)
    raw_s = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        calls.recommend(user, {"k": 10, "explain": True})
        RecommendationOut.model_validate_json(body)
    client_s = (time.perf_counter() - started) / n
    return {
        "calls": n,
        "answer_bytes": len(body),
        "json_loads_us": round(raw_s * 1e6, 2),
        "client_build_and_parse_us": round(client_s * 1e6, 2),
    }


def sender(url: str, items: list[str], n_events: int, batch: int, rng: np.random.Generator) -> dict[str, Any]:
    # the loop's events carry ids too (as the sender's do): the server's work is the same on both paths
    bodies = [with_event_ids(_events(rng, items, batch, "loop")) for _ in range(n_events // batch)]
    with httpx.Client(base_url=url, timeout=60) as raw:
        started = time.perf_counter()
        for body in bodies:
            raw.post("/v1/events", json=body).raise_for_status()
        loop_s = time.perf_counter() - started
    events = _events(rng, items, n_events, "sender")
    with Client(url) as client:
        started = time.perf_counter()
        with EventSender(client, max_batch=batch, max_delay_s=0.05) as queued:
            for event in events:
                queued.send(event)
        sender_s = time.perf_counter() - started
    stats = queued.stats
    if stats.stored != n_events or stats.failed:
        raise RuntimeError(f"the sender stored {stats.stored} of {n_events} events; failed: {queued.failed[:1]}")
    return {
        "events": n_events,
        "batch": batch,
        "raw_loop_events_per_s": round(n_events / loop_s, 1),
        "sender_events_per_s": round(n_events / sender_s, 1),
        "sender_batches": stats.batches,
    }


def _compare(raw_times: list[float], client_times: list[float], n: int) -> dict[str, Any]:
    raw, client = np.asarray(raw_times), np.asarray(client_times)
    return {
        "requests": n,
        "raw_httpx": percentiles(raw_times),
        "client": percentiles(client_times),
        "client_overhead_median_us": round(float(np.median(client - raw)) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000, help="requests per path and benchmark")
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    parser.add_argument("--quick", action="store_true", help="small setting: fewer requests")
    parser.add_argument("--keep", type=Path, help="keep the built data folder here and reuse it on the next run")
    args = parser.parse_args()
    if args.quick:
        args.requests = 200
    rng = np.random.default_rng(0)
    root = args.keep or Path(tempfile.mkdtemp(prefix="liverec-bench-client-"))
    data_dir, users, items, info = build(root, 2_000, 2_000, 40_000)
    process, url = start_server(data_dir)
    try:
        report = {
            "benchmark": "client",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_1m_before": round(os.getloadavg()[0], 2),
            },
            "setting": {
                "server": "one `liverec serve` (updater off) on this machine; one connection per path, alternating",
                "data": info,
            },
            "recommendations": recommendations(url, users, args.requests, rng),
            "event_batches": event_batches(url, items, max(20, args.requests // 10), args.batch, rng),
            "offline": offline(url, users[0], 10 * args.requests),
            "sender": sender(url, items, 40 * args.batch, args.batch, rng),
        }
        report["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
