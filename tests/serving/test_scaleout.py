"""The Redis deployment with real processes: two API replicas, two workers, a worker killed mid-stream.

Three producers run at once: clients posting batches to replica A and to replica B (some batches sent twice,
as a client retrying after a timeout would), and a bulk writer appending straight to the stream without
applying (as ``liverec import`` or a replica that died between storing and applying would leave events), so
the workers have real work. One worker is killed with SIGKILL while the stream flows. Afterwards: every
acknowledged event is in the log exactly once, every logged event was applied to the shared state exactly
once (the state equals one rebuilt from the log), nothing is left pending, and both replicas answer alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liverec.events.redis_log import RedisEventLog, redis_client
from liverec.events.schema import Event
from liverec.state.redis_store import RedisState
from liverec.state.store import State

from .conftest import Prepared, Server, move_to_redis


class Worker:
    """`liverec worker` as a child process."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str) -> None:
        self.output_path = data_dir.parent / f"worker-{name}.log"
        with open(self.output_path, "wb") as output_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "liverec.cli", "worker", "--data-dir", str(data_dir)],
                stdout=output_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LIVEREC_LOG_FORMAT": "json", **env},
            )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow  # servers and workers in subprocesses
def test_two_replicas_two_workers_and_a_worker_killed_mid_stream(
    data_dir: Path, prepared: Prepared, redis_url: str, redis_prefix: str
) -> None:
    env = move_to_redis(data_dir, redis_url, redis_prefix) | {
        "LIVEREC_WORKER_CLAIM_IDLE_S": "1",
        # the updater runs in a worker but must not promote during the test: both replicas must serve one version
        "LIVEREC_UPDATER_EVERY_EVENTS": "100000000",
        "LIVEREC_UPDATER_EVERY_SECONDS": "100000",
    }
    client = redis_client(redis_url)
    replicas = [Server(data_dir, env), Server(data_dir, env)]
    workers = [Worker(data_dir, env, "w1"), Worker(data_dir, env, "w2")]
    stream = RedisEventLog(client, redis_prefix)
    try:

        def consumers() -> int:
            groups = {group["name"]: group for group in client.xinfo_groups(stream.stream)}
            return int(groups["state"]["consumers"]) if "state" in groups else 0

        wait_for(lambda: consumers() == 2, 60, "both workers to join the consumer group")
        items = [str(i) for i in prepared.dataset.item_map.to_external(np.arange(prepared.dataset.item_map.size))]
        rng = np.random.default_rng(7)
        acknowledged: set[str] = set()
        lock = threading.Lock()
        errors: list[str] = []

        def batch(prefix: str, n: int) -> list[dict[str, Any]]:
            return [
                {
                    "event_id": f"{prefix}-{k}",
                    "user_id": f"fault-u{rng.integers(40)}",
                    "item_id": items[int(rng.integers(len(items)))],
                    "type": ["view", "click", "purchase"][int(rng.integers(3))],
                }
                for k in range(n)
            ]

        def post_to(replica: Server, name: str, rounds: int) -> None:
            for r in range(rounds):
                body = batch(f"{name}-{r}", 20)
                for _attempt in range(1 if r % 5 else 2):  # every fifth batch is sent twice (a retry)
                    response = replica.client.post("/v1/events", json=body)
                    if response.status_code != 200:
                        errors.append(response.text)
                        return
                with lock:
                    acknowledged.update(event["event_id"] for event in body)

        def append_directly(rounds: int) -> None:
            for r in range(rounds):
                body = [Event(**event, timestamp=time.time()) for event in batch(f"bulk-{r}", 50)]
                stream.append(body)
                with lock:
                    acknowledged.update(event.event_id for event in body)
                time.sleep(0.02)

        producers = [
            threading.Thread(target=post_to, args=(replicas[0], "a", 60)),
            threading.Thread(target=post_to, args=(replicas[1], "b", 60)),
            threading.Thread(target=append_directly, args=(60,)),
        ]
        for thread in producers:
            thread.start()
        wait_for(lambda: len(acknowledged) > 1500, 60, "the stream to get going")
        workers[0].process.send_signal(signal.SIGKILL)  # mid-stream
        workers[0].process.wait(timeout=10)
        for thread in producers:
            thread.join()
        assert not errors, errors[:3]

        # the log: every acknowledged event exactly once, nothing else
        logged = [event for chunk in stream.iter_all() for event in chunk]
        new = [event for event in logged if event.event_id in acknowledged]
        counts = Counter(event.event_id for event in new)
        assert set(counts) == acknowledged and max(counts.values()) == 1
        assert [event.offset for event in logged] == list(range(1, len(logged) + 1))

        # the state: every logged event applied exactly once, once the surviving worker has caught up
        state = RedisState(client, redis_prefix)
        wait_for(lambda: stream.pending("state") == 0 and state.n_events == len(logged), 60, "the worker to catch up")
        assert client.bitcount(f"{redis_prefix}:applied") == len(logged)
        rebuilt = State(state.config)
        rebuilt.apply(logged)
        got, expected = state.fingerprint(), rebuilt.fingerprint()
        assert got["counts"] == expected["counts"] and got["seen"] == expected["seen"]
        assert got["popularity"] == expected["popularity"] and got["n_events"] == expected["n_events"]
        assert {u: sorted(h) for u, h in got["users"].items()} == {u: sorted(h) for u, h in expected["users"].items()}

        # both replicas answer alike, for users fed through A, through B and by the bulk writer
        for user in [f"fault-u{n}" for n in range(0, 40, 3)]:
            answers = [r.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json() for r in replicas]
            assert answers[0]["items"] == answers[1]["items"] and answers[0]["history_length"] > 0
            assert answers[0]["model_version"] == answers[1]["model_version"] == "v0001"
    finally:
        for worker in workers:
            worker.stop()
        for replica in replicas:
            replica.stop()
        client.close()


@pytest.mark.slow  # servers and workers in subprocesses
def test_a_promotion_reaches_every_replica_over_redis(data_dir: Path, redis_url: str, redis_prefix: str) -> None:
    """Replicas poll the registry only every 10 minutes here: a prompt swap on both is the announcement's doing."""
    env = move_to_redis(data_dir, redis_url, redis_prefix) | {"LIVEREC_MODEL_POLL_INTERVAL_S": "600"}
    replicas = [Server(data_dir, env), Server(data_dir, env)]
    try:
        assert {r.client.get("/v1/models").json()["serving"] for r in replicas} == {"v0001"}
        trained = subprocess.run(
            [sys.executable, "-m", "liverec.cli", "train", "--data-dir", str(data_dir), "--model", "itemknn", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        assert trained.returncode == 0, trained.stderr
        announced = time.monotonic()
        wait_for(lambda: all(r.client.get("/v1/models").json()["serving"] == "v0002" for r in replicas), 5, "swap")
        swap_s = time.monotonic() - announced
        rolled = replicas[0].client.post("/v1/models/rollback")  # an admin action on one replica...
        assert rolled.status_code == 200
        wait_for(lambda: replicas[1].client.get("/v1/models").json()["serving"] == "v0001", 5, "rollback on B")
        print(f"both replicas served the new version {swap_s:.2f}s after training finished")
    finally:
        for replica in replicas:
            replica.stop()
