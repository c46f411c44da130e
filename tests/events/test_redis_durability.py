"""Durability of the Redis log as docs/deployment.md says to configure it: an acknowledged append survives
``kill -9`` of Redis itself when Redis runs with ``appendonly yes`` and ``appendfsync always``.

This test starts its own ``redis-server`` (another port, its own folder); the shared Redis is not touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from liverec.events.redis_log import RedisEventLog, redis_client
from liverec.events.schema import Event


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, folder: Path, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (apt-get install redis-server)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.url = f"redis://127.0.0.1:{port}/0"
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""]
        arguments += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen([binary, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis_client(self.url).close()
                return
            except RuntimeError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def test_acknowledged_events_survive_kill_9_of_redis(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir()
    port = free_port()
    server = RedisServer(folder, port)
    try:
        client = redis_client(server.url)
        log = RedisEventLog(client, "durable")
        acknowledged = 0
        for batch in range(50):
            events = [Event(f"e{batch}-{k}", f"u{k}", f"i{k}", "view", 1_700_000_000.0 + k) for k in range(20)]
            acknowledged += log.append(events).stored
        log.put_item("i1", title="kept")
        server.kill()  # no shutdown, no final save: only what was fsynced before each reply is left
        client.close()
    finally:
        if server.process.poll() is None:
            server.kill()
    restarted = RedisServer(folder, port)
    try:
        client = redis_client(restarted.url)
        log = RedisEventLog(client, "durable")
        assert acknowledged == 1000
        assert log.count() == log.last_offset() == acknowledged
        assert [e.offset for e in log.read(limit=2000)] == list(range(1, acknowledged + 1))
        assert log.get_item("i1") is not None and log.get_item("i1")["title"] == "kept"
        assert log.append([Event("e0-0", "u0", "i0", "view", 1.0)]).duplicates == 1  # ids are still known
        client.close()
    finally:
        restarted.kill()
