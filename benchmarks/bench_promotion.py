"""Promotion to serving (issue 5): from `registry.promote` to the first response served by the new version.

Builds a small data folder (synthetic events, two SASRec versions), starts a real `liverec serve`
(updater off), then alternates promotions and polls recommendations until the served
``model_version`` changes. Prints one JSON object. Servers notice promotions by polling
``models/PROMOTED`` every ``model_poll_interval_s`` (1 s), then load the version before swapping.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx  # raw, not liverec.client: the times here are the server's (bench_client.py: what the client adds)

from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS


def main(promotions: int = 10) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="liverec-promotion-"))
    dataset, _ = generate(SyntheticConfig(n_users=500, n_items=300, n_events=20_000, seed=0))
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        import_dataset(dataset, event_log, source="bench", event_types=DEFAULT_EVENT_WEIGHTS)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    registry = ModelRegistry(data_dir / "models")
    for seed in (0, 1):
        train_and_register(data, registry, "sasrec", {"max_epochs": 2}, promote=seed == 0, seed=seed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LIVEREC_UPDATER": "false", "LIVEREC_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "liverec.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        user = data.user_ids[0]
        seconds, failures = [], 0
        for _ in range(promotions):
            target = "v0002" if registry.promoted() == "v0001" else "v0001"
            started = time.perf_counter()
            registry.promote(target, reason="promotion latency benchmark")
            while True:
                response = client.get(f"/v1/users/{user}/recommendations")
                failures += response.status_code != 200
                if response.status_code == 200 and response.json()["model_version"] == target:
                    break
                time.sleep(0.005)
            seconds.append(time.perf_counter() - started)
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "benchmark": "promotion_to_serving",
                "promotions": promotions,
                "failed_requests": failures,
                "seconds": [round(s, 3) for s in seconds],
                "median_s": round(statistics.median(seconds), 3),
                "max_s": round(max(seconds), 3),
                "poll_interval_s": 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
