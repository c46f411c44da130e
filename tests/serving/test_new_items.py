"""A new item becomes recommendable while the server runs: events → updater → candidate → gate → swap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from liverec.client import Client

from .conftest import Prepared, Server, cluster_items, move_to_redis

UPDATER_ON = {
    "LIVEREC_UPDATER": "true",
    "LIVEREC_UPDATER_EVERY_EVENTS": "200",
    "LIVEREC_UPDATER_EVERY_SECONDS": "3",
    "LIVEREC_GATE_EVENTS": "50",
    # this test is about the path a new item takes to serving; the gate's judgement is tested elsewhere
    "LIVEREC_GATE_MARGIN": "1.0",
}


@pytest.mark.slow  # a server and the updater in subprocesses
@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_new_item_is_recommended_within_a_minute(
    data_dir: Path, prepared: Prepared, backend: str, request: pytest.FixtureRequest
) -> None:
    env = dict(UPDATER_ON)
    if backend == "redis":  # the updater runs in serve's worker child: it tails the stream, announces promotions
        env |= move_to_redis(data_dir, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    server = Server(data_dir, env=env)
    client = Client(server.url)
    anchor = cluster_items(prepared.truth, prepared.dataset, 0, 1)[0]
    new_item = "brand-new-item"
    stop = threading.Event()
    sent = {"users": 0}

    def stream() -> None:
        """Users keep buying the new item right after the anchor item: their sequences favour it."""
        n = 0
        while not stop.is_set() and n < 2000:
            batch = []
            for _ in range(10):
                user = f"fan-{n}"
                batch += [
                    {"user_id": user, "item_id": anchor, "type": "view", "event_id": f"{user}-a"},
                    {"user_id": user, "item_id": new_item, "type": "purchase", "event_id": f"{user}-b"},
                ]
                n += 1
            client.send_events(batch)  # raises unless the server accepted the batch
            sent["users"] = n
            time.sleep(0.05)

    try:
        client.send_event({"user_id": "probe", "item_id": anchor, "type": "view"})
        before = client.recommend("probe")
        assert new_item not in {i.item_id for i in before.items}
        started = time.monotonic()
        thread = threading.Thread(target=stream)
        thread.start()
        found_after = None
        while time.monotonic() - started < 60:
            answer = client.recommend("probe", k=10)
            if new_item in {i.item_id for i in answer.items} and answer.fallback is None:
                found_after = time.monotonic() - started
                break
            time.sleep(0.5)
        stop.set()
        thread.join()
        versions = client.list_models()
        assert found_after is not None, (versions, answer, server.output()[-3000:])
        assert answer.model_version != "v0001" and answer.filled_by_popularity == 0
        print(f"new item in the probe's top-10 after {found_after:.1f}s, {sent['users']} fans")
    finally:
        stop.set()
        client.close()
        server.stop()
