"""Serving benchmarks (issue 4): freshness, recommendation latency in-process and over HTTP, ingest rates.

For each catalogue size a data folder is built (synthetic events imported into the log, SASRec trained
briefly with the sampled softmax — latency does not depend on how well it is trained), then:

* in-process: ``Engine.recommend`` for random known users, top-10, p50/p99;
* over HTTP: a real ``liverec serve`` process and ``--concurrency`` asyncio clients (httpx) for
  ``--duration`` seconds: requests/s, p50/p99 (client and server share this machine's cores);
* freshness: POST one event, and as soon as it is acknowledged GET the user's recommendations; the
  time from acknowledgement to a response that reflects the event (its ``history_length`` grew);
* ingest: events/s for single-event requests (sequential and concurrent) and batches of 1,000.

Prints one JSON object. ``--quick`` runs a small setting (for a smoke check).
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
from pathlib import Path
from typing import Any

import httpx  # raw, not liverec.client: the times here are the server's (bench_client.py: what the client adds)
import numpy as np

from liverec.data.interactions import Histories
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.retrieval.index import exact_recall
from liverec.serving.engine import Engine
from liverec.settings import Settings
from liverec.state.store import DEFAULT_EVENT_WEIGHTS


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(array, 50)), 3), "p99_ms": round(float(np.percentile(array, 99)), 3)}


def build(root: Path, n_users: int, n_items: int, n_events: int) -> tuple[Path, list[str], list[str], dict[str, Any]]:
    data_dir = root / f"items-{n_items}-users-{n_users}"
    if (data_dir / "built.json").exists():  # --keep: reuse
        saved = json.loads((data_dir / "built.json").read_text())
        return data_dir, saved["users"], saved["items"], saved["info"]
    # the generator leaves some items without events: ask for 15 % more so about n_items get a vector
    config = SyntheticConfig(n_users=n_users, n_items=int(n_items * 1.15), n_events=max(n_events, 15 * n_items), seed=0)
    dataset, _ = generate(config)
    started = time.perf_counter()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        summary = import_dataset(dataset, event_log, source="bench", event_types=DEFAULT_EVENT_WEIGHTS)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    import_s = time.perf_counter() - started
    params = {"loss": "sampled-softmax", "max_epochs": 1, "max_len": 50}
    trained = train_and_register(data, ModelRegistry(data_dir / "models"), "sasrec", params)
    info = {
        "events": summary.stored,
        "import_s": round(import_s, 2),
        "train_s": round(trained.fit_seconds, 2),
        "model": "sasrec " + json.dumps(params),
        "items_in_model": len(data.item_ids),
    }
    (data_dir / "built.json").write_text(json.dumps({"users": data.user_ids, "items": data.item_ids, "info": info}))
    return data_dir, data.user_ids, data.item_ids, info


def in_process(data_dir: Path, users: list[str], n: int, rng: np.random.Generator) -> dict[str, Any]:
    engine = Engine(Settings.load(data_dir=data_dir), background=False)
    try:
        picks = rng.choice(users, size=n)
        for user in picks[:50]:  # warm-up
            engine.recommend(str(user), k=10)
        times = []
        for user in picks:
            started = time.perf_counter()
            engine.recommend(str(user), k=10)
            times.append(time.perf_counter() - started)
        out: dict[str, Any] = {"requests": n, **percentiles(times), "retrieval": engine.retrieval}
        serving = engine.serving
        if serving is not None and serving.index is not None:
            # requests the float16 scan could not decide and scored in float32 (0 when not compact)
            out["float16_fallbacks"] = serving.index.compact_fallbacks
            histories = [serving.to_model(engine.state.history(str(u))) for u in picks[:500]]
            queries = serving.model.user_vectors(Histories.from_lists(histories))  # type: ignore[attr-defined]
            out["recall@10_vs_exact"] = round(exact_recall(serving.index, queries, 10), 4)
        return out
    finally:
        engine.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``liverec serve`` on ``data_dir`` (updater off; ``env``: more settings), once it is ready."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "liverec.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # serving alone: the updater child (issue 5) would share the two cores with the load generator
        env={**os.environ, "LIVEREC_LOG_LEVEL": "WARNING", "LIVEREC_UPDATER": "false", **(env or {})},
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
    raise RuntimeError("server did not become ready")


def batching(url: str) -> dict[str, Any]:
    """How many recommendation requests the server scored per model pass so far (its /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {
        name: float(line.split()[1])
        for line in text.splitlines()
        for name in ("liverec_recommendation_batch_size_sum", "liverec_recommendation_batch_size_count")
        if line.startswith(name + " ")
    }
    count = values.get("liverec_recommendation_batch_size_count", 0.0)
    return {
        "recommend_batch": int(os.environ.get("LIVEREC_RECOMMEND_BATCH", "32")),
        "mean_batch_size": round(values.get("liverec_recommendation_batch_size_sum", 0.0) / count, 2)
        if count
        else None,
    }


def wrk_load(
    url: str, users: list[str], concurrency: int, duration: float, workdir: Path, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Load from wrk (a C load generator: it leaves the CPU to the server, unlike a Python client)."""
    script = workdir / "recommend.lua"
    names = ",".join(json.dumps(u) for u in users)
    script.write_text(
        f"local users = {{{names}}}\nmath.randomseed(1)\n"
        "request = function()\n"
        '  return wrk.format("GET", "/v1/users/" .. users[math.random(#users)] .. "/recommendations?k=10")\n'
        "end\n"
    )
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", "-s", str(script), url]
    for name, value in (headers or {}).items():
        command[1:1] = ["-H", f"{name}: {value}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(text: str) -> float:
        value = float(text.rstrip("msu"))
        return (
            value / 1000
            if text.endswith("us")
            else value * 1000
            if text.endswith("s") and not text.endswith("ms")
            else value
        )

    latency = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            latency[f"p{parts[0][:-1]}_ms"] = round(ms(parts[1]), 3)
    requests = int(next(line.split()[0] for line in output.splitlines() if "requests in" in line))
    errors = sum(int(line.split(":")[1].split()[0]) for line in output.splitlines() if "Non-2xx" in line)
    rate = float(next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec")))
    return {
        "client": "wrk",
        "concurrency": concurrency,
        "seconds": duration,
        "requests": requests,
        "errors": errors,
        "requests_per_s": rate,
        **latency,
    }


async def http_load(
    url: str, users: list[str], concurrency: int, duration: float, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    times: list[float] = []
    errors = 0
    rng = np.random.default_rng(1)
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30, headers=headers) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                user = users[int(rng.integers(len(users)))]
                started = time.perf_counter()
                response = await client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                times.append(time.perf_counter() - started)
                errors += response.status_code != 200

        for _ in range(20):  # warm-up
            await client.get(f"/v1/users/{users[0]}/recommendations")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "client": "httpx (asyncio; shares the CPU with the server)",
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(times),
        "errors": errors,
        "requests_per_s": round(len(times) / elapsed, 1),
        **percentiles(times),
    }


def freshness(url: str, users: list[str], items: list[str], n: int, rng: np.random.Generator) -> dict[str, Any]:
    acks, fresh = [], []
    stale = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for step in range(n):
            user = f"fresh-{step % 50}"
            item = items[int(rng.integers(len(items)))]
            before = client.get(f"/v1/users/{user}/recommendations").json()["history_length"]
            started = time.perf_counter()
            response = client.post("/v1/events", json={"user_id": user, "item_id": item, "type": "click"})
            acked = time.perf_counter()
            assert response.status_code == 200, response.text
            answer = client.get(f"/v1/users/{user}/recommendations").json()
            done = time.perf_counter()
            acks.append(acked - started)
            fresh.append(done - acked)
            stale += answer["history_length"] <= before and before < 200
    return {
        "events": n,
        "stale_responses": stale,
        "ack": percentiles(acks),
        "ack_to_fresh_response": percentiles(fresh),
    }


async def ingest(url: str, items: list[str], batch: int, requests: int, concurrency: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    bodies = [
        [
            {
                "user_id": f"ingest-{rng.integers(10_000)}",
                "item_id": items[int(rng.integers(len(items)))],
                "type": "view",
            }
            for _ in range(batch)
        ]
        for _ in range(requests)
    ]
    payloads = [json.dumps(body[0] if batch == 1 else body).encode() for body in bodies]
    times: list[float] = []
    queue = list(reversed(payloads))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                payload = queue.pop()
                started = time.perf_counter()
                response = await client.post(
                    "/v1/events", content=payload, headers={"content-type": "application/json"}
                )
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "requests": requests,
        "concurrency": concurrency,
        "events_per_s": round(batch * requests / elapsed, 1),
        **percentiles(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000", help="catalogue sizes (comma-separated)")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=300_000, help="at least 15 per item")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of HTTP load per setting")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="HTTP load runs per setting (median reported)")
    parser.add_argument("--quick", action="store_true", help="small setting: 2k items, short runs")
    parser.add_argument("--keep", type=Path, help="keep the built data folders here and reuse them on the next run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.items.split(",")]
    if args.quick:
        sizes, args.users, args.events, args.duration, args.repeats = [2_000], 2_000, 40_000, 3.0, 1
    rng = np.random.default_rng(0)
    root = args.keep or Path(tempfile.mkdtemp(prefix="liverec-bench-"))
    report: dict[str, Any] = {
        "benchmark": "serving",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setting": {
            "users": args.users,
            "events": args.events,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "k": 10,
            "server": "one `liverec serve` process (uvicorn, 1 worker), torch_threads=1, sync=FULL, updater off",
            "compute_threads": int(
                os.environ.get("LIVEREC_COMPUTE_THREADS", Settings.model_fields["compute_threads"].default)
            ),
        },
        "results": {},
    }
    try:
        for n_items in sizes:
            data_dir, users, items, info = build(root, args.users, n_items, args.events)
            result: dict[str, Any] = {"data": info}
            result["in_process"] = in_process(data_dir, users, 2000, rng)
            process, url = start_server(data_dir)
            try:
                if shutil.which("wrk"):
                    runs = [wrk_load(url, users, args.concurrency, args.duration, root) for _ in range(args.repeats)]
                else:
                    runs = []
                    for _ in range(args.repeats):
                        runs.append(asyncio.run(http_load(url, users, args.concurrency, args.duration)))
                runs.sort(key=lambda r: r["requests_per_s"])
                result["http"] = {"median_run": runs[len(runs) // 2], "runs": runs, **batching(url)}
                result["freshness"] = freshness(url, users, items, 300 if not args.quick else 50, rng)
                result["ingest"] = {
                    "single_sequential": asyncio.run(ingest(url, items, 1, 1000, 1)),
                    "single_concurrent": asyncio.run(ingest(url, items, 1, 2000, args.concurrency)),
                    "batch_1000_sequential": asyncio.run(ingest(url, items, 1000, 30, 1)),
                    "batch_1000_concurrent": asyncio.run(ingest(url, items, 1000, 30, 4)),
                }
            finally:
                process.terminate()
                process.wait(timeout=30)
            report["results"][str(n_items)] = result
            print(json.dumps({"progress": n_items, **result}), file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
