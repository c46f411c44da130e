"""Scale-out benchmarks (issue 6): the Redis deployment with two API replicas on this machine.

* ingest through two replicas: batches of 1,000 events (and single events) posted concurrently, half to
  each replica; events/s from the first request to the last acknowledgement;
* cross-replica freshness: POST one event to replica A, and as soon as it is acknowledged GET the user's
  recommendations from replica B; the time from acknowledgement to a response from B that reflects the
  event (its ``history_length`` grew), p50/p99;
* sizing: Redis memory for the log (per event) and for the state (per user and per item), from
  ``INFO memory`` before and after, and the rate at which one process appends to and applies from Redis.

Everything runs on this machine: Redis, both replicas and the load generator share its cores. Prints one
JSON object. Uses the Redis at ``--redis-url`` under a fresh key prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx  # raw, not liverec.client: the times here are the server's (bench_client.py: what the client adds)
import numpy as np

from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.redis_log import RedisEventLog, delete_prefix, redis_client
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.redis_store import RedisState
from liverec.state.store import DEFAULT_EVENT_WEIGHTS


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(array, 50)), 3), "p99_ms": round(float(np.percentile(array, 99)), 3)}


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_replica(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "liverec.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("replica did not become ready")


def sizing(client: Any, prefix: str, n_users: int, n_items: int, n_events: int) -> dict[str, Any]:
    """Append a synthetic stream to the log, then apply it to the state, measuring memory and rates."""
    dataset, _ = generate(SyntheticConfig(n_users=n_users, n_items=n_items, n_events=n_events, seed=1))
    log = RedisEventLog(client, prefix)
    state = RedisState(client, prefix)
    before = used_memory(client)
    started = time.perf_counter()
    import_dataset(dataset, log, source="size", event_types=DEFAULT_EVENT_WEIGHTS)
    append_s = time.perf_counter() - started
    after_log = used_memory(client)
    started = time.perf_counter()
    for batch in log.iter_all(batch=20_000):
        state.apply(batch)
    apply_s = time.perf_counter() - started
    after_state = used_memory(client)
    events = log.count()
    users = state.n_users
    lengths = [int(client.llen(f"{prefix}:h:{user}")) for user in list(client.hkeys(f"{prefix}:users"))[:2000]]
    log.close()
    per_user = (after_state - after_log) / max(users, 1)
    return {
        "events": events,
        "users": users,
        "items": state.n_items,
        "mean_history_length": round(float(np.mean(lengths)), 1),
        "log_bytes_per_event": round((after_log - before) / events, 1),
        "state_bytes_per_user": round(per_user, 1),
        "state_gib_per_million_users": round(per_user * 1e6 / 2**30, 2),
        "append_events_per_s_one_client": round(events / append_s),
        "apply_events_per_s_one_client": round(events / apply_s),
        "note": "state bytes include the item hashes; per user at this mean history length (max_history 200)",
    }


async def ingest(urls: list[str], items: list[str], batch: int, requests: int, concurrency: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    payloads = []
    for _ in range(requests):
        body = [
            {
                "user_id": f"ingest-{rng.integers(20_000)}",
                "item_id": items[int(rng.integers(len(items)))],
                "type": "view",
            }
            for _ in range(batch)
        ]
        payloads.append(json.dumps(body[0] if batch == 1 else body).encode())
    queue = list(reversed(payloads))
    times: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [httpx.AsyncClient(base_url=url, limits=limits, timeout=120) for url in urls]

    async def worker(n: int) -> None:
        client = clients[n % len(clients)]  # half the workers on each replica
        while queue:
            payload = queue.pop()
            started = time.perf_counter()
            response = await client.post("/v1/events", content=payload, headers={"content-type": "application/json"})
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    return {
        "batch": batch,
        "requests": requests,
        "concurrency": concurrency,
        "replicas": len(urls),
        "events_per_s": round(batch * requests / elapsed, 1),
        **percentiles(times),
    }


def freshness(url_a: str, url_b: str, items: list[str], n: int, rng: np.random.Generator) -> dict[str, Any]:
    acks, fresh = [], []
    first_try = 0
    with httpx.Client(base_url=url_a, timeout=30) as a, httpx.Client(base_url=url_b, timeout=30) as b:
        for step in range(n):
            user = f"fresh-{step % 50}"
            before = b.get(f"/v1/users/{user}/recommendations").json()["history_length"]
            item = items[int(rng.integers(len(items)))]
            started = time.perf_counter()
            response = a.post("/v1/events", json={"user_id": user, "item_id": item, "type": "click"})
            acked = time.perf_counter()
            assert response.status_code == 200, response.text
            tries = 0
            while True:
                tries += 1
                answer = b.get(f"/v1/users/{user}/recommendations").json()
                if answer["history_length"] > before or before >= 200:
                    break
            done = time.perf_counter()
            first_try += tries == 1
            acks.append(acked - started)
            fresh.append(done - acked)
    return {
        "events": n,
        "fresh_on_first_request": first_try,
        "ack_on_a": percentiles(acks),
        "ack_on_a_to_fresh_response_from_b": percentiles(fresh),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--users", type=int, default=20_000, help="synthetic users for the served data")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--sizing-users", type=int, default=50_000)
    parser.add_argument("--sizing-events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="small setting (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.users, args.items, args.events = 2_000, 1_000, 30_000
        args.sizing_users, args.sizing_events = 2_000, 30_000
    client = redis_client(args.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    size_prefix = f"{prefix}-size"
    root = Path(tempfile.mkdtemp(prefix="liverec-scaleout-"))
    report: dict[str, Any] = {
        "benchmark": "scaleout",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "redis": {"version": client.info("server")["redis_version"], "appendonly": client.config_get("appendonly")},
        "setting": {"users": args.users, "items": args.items, "events": args.events, "replicas": 2},
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        report["sizing"] = sizing(client, size_prefix, args.sizing_users, args.items, args.sizing_events)
        delete_prefix(client, size_prefix)
        print(json.dumps({"progress": "sizing", **report["sizing"]}), file=sys.stderr, flush=True)

        dataset, _ = generate(SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=0))
        state = RedisState(client, prefix)
        with RedisEventLog(client, prefix, on_commit=state.apply) as log:
            import_dataset(dataset, log, source="bench", event_types=DEFAULT_EVENT_WEIGHTS)
            data = read_log(log, DEFAULT_EVENT_WEIGHTS)
        params = {"loss": "sampled-softmax", "max_epochs": 1, "max_len": 50}
        train_and_register(data, ModelRegistry(root / "models"), "sasrec", params)
        env = {
            "LIVEREC_BACKEND": "redis",
            "LIVEREC_REDIS_URL": args.redis_url,
            "LIVEREC_REDIS_PREFIX": prefix,
            "LIVEREC_UPDATER": "false",
            "LIVEREC_LOG_LEVEL": "WARNING",
        }
        (process_a, url_a), (process_b, url_b) = start_replica(root, env), start_replica(root, env)
        processes += [process_a, process_b]
        items = list(data.item_ids)
        rng = np.random.default_rng(0)
        report["freshness_across_replicas"] = freshness(url_a, url_b, items, 50 if args.quick else 500, rng)
        report["ingest_two_replicas"] = {
            "batch_1000": asyncio.run(ingest([url_a, url_b], items, 1000, 20 if args.quick else 100, 4)),
            "single": asyncio.run(ingest([url_a, url_b], items, 1, 500 if args.quick else 4000, 8)),
        }
        report["ingest_one_replica"] = {
            "batch_1000": asyncio.run(ingest([url_a], items, 1000, 20 if args.quick else 100, 4)),
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        delete_prefix(client, prefix)
        delete_prefix(client, size_prefix)
        shutil.rmtree(root, ignore_errors=True)
        client.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
