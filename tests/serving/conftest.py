"""A real data folder (synthetic events imported, SASRec trained) and real `liverec serve` processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from liverec.data.interactions import Dataset
from liverec.data.synthetic import SyntheticConfig, SyntheticTruth, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

#: Planted structure the tests reason about: few clusters, strong taste, no drift, little sequence noise.
SYNTHETIC = SyntheticConfig(
    n_users=300, n_items=200, n_events=12_000, n_clusters=5, drift=False, p_sequential=0.2, seed=3
)


@dataclass(frozen=True)
class Prepared:
    data_dir: Path
    dataset: Dataset
    truth: SyntheticTruth
    n_imported: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Import 80 % of a synthetic stream and train a small SASRec on it (once per test session)."""
    data_dir = tmp_path_factory.mktemp("liverec-data")
    dataset, truth = generate(SYNTHETIC)
    n_imported = int(len(dataset.interactions) * 0.8)
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        import_dataset(dataset, event_log, source="synthetic", event_types=DEFAULT_EVENT_WEIGHTS, limit=n_imported)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(data_dir / "models"), "sasrec", {"max_epochs": 15, "patience": 3})
    return Prepared(data_dir, dataset, truth, n_imported)


@pytest.fixture
def data_dir(prepared: Prepared, tmp_path: Path) -> Path:
    """A private copy of the prepared folder (tests that write must not see each other)."""
    target = tmp_path / "data"
    shutil.copytree(prepared.data_dir, target)
    return target


class Server:
    """`liverec serve` as a child process on a free port, with an HTTP client bound to it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.backend = "embedded"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_path = data_dir.parent / f"serve-{self.port}.log"
        # the updater is off unless a test turns it on: most tests pin the served version
        self.env = env or {}  # what the server was given beyond this process's environment (the backend)
        full_env = {**os.environ, "LIVEREC_LOG_FORMAT": "json", "LIVEREC_UPDATER": "false", **self.env}
        with open(self.output_path, "wb") as output_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "liverec.cli", "serve", "--data-dir", str(data_dir), "--port", str(self.port)],
                stdout=output_file,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def copy_log_to_redis(data_dir: Path, redis_url: str, prefix: str) -> int:
    """Copy a data folder's SQLite log and catalogue into Redis under ``prefix`` (state applied as it goes)."""
    from liverec.events.redis_log import RedisEventLog, redis_client
    from liverec.state.redis_store import RedisState

    client = redis_client(redis_url)
    state = RedisState(client, prefix)
    with (
        SQLiteEventLog(data_dir / "events.db") as source,
        RedisEventLog(client, prefix, on_commit=state.apply) as target,
    ):
        for batch in source.iter_all():
            target.import_events(batch)
        for record in source.items():
            if record["deleted"]:
                target.delete_item(record["item_id"])
            else:
                target.put_item(
                    record["item_id"], record["title"], record["categories"], record["available"], record["attributes"]
                )
        copied = target.count()
    client.close()
    return copied


def move_to_redis(data_dir: Path, redis_url: str, prefix: str) -> dict[str, str]:
    """Move a data folder's log into Redis (the SQLite file is removed so that no server can read it) and
    return the environment that points `liverec` processes at it."""
    copy_log_to_redis(data_dir, redis_url, prefix)
    (data_dir / "events.db").unlink()
    return {"LIVEREC_BACKEND": "redis", "LIVEREC_REDIS_URL": redis_url, "LIVEREC_REDIS_PREFIX": prefix}


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Server]:
    """`liverec serve` on each backend: the data folder's SQLite log, or the same events copied into Redis."""
    env: dict[str, str] = {}
    if request.param == "redis":
        env = move_to_redis(data_dir, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    running = Server(data_dir, env)
    running.backend = request.param
    yield running
    running.stop()


def cluster_items(truth: SyntheticTruth, dataset: Dataset, cluster: int, n: int) -> list[str]:
    """The ``n`` most popular items of a cluster that exist from the start, as external ids."""
    members = np.flatnonzero((truth.item_cluster == cluster) & (truth.release_time == 0))
    members = members[np.argsort(truth.item_rank[members])][:n]
    return [str(i) for i in dataset.item_map.to_external(members)]
