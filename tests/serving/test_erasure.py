"""Erasure of a user through a real ``liverec serve`` (both backends) and ``liverec forget-user``: afterwards no
byte of the data folder (nor of the Redis keys) holds the user id or one of their event ids, while serving and
after stop. Also pseudonymised ids and the retention pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liverec.events.log import SQLiteEventLog
from liverec.pipeline import read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

from .conftest import Server, move_to_redis

USER = "erase-me-7f3a9c"
ENCODINGS = ("utf-8", "utf-32-le")  # as stored, and as NumPy stores str arrays (state.npz, models)


def secrets_in(data: bytes, needles: list[str]) -> list[str]:
    """The needles found in ``data``, in any of :data:`ENCODINGS`."""
    return [needle for needle in needles if any(needle.encode(encoding) in data for encoding in ENCODINGS)]


def folder_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every file under the data folder (the SQLite files, state.npz, models/**, temporary files included)."""
    found: dict[str, bytes] = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            try:
                found[str(path.relative_to(data_dir))] = path.read_bytes()
            except FileNotFoundError:  # a temporary file renamed away meanwhile
                pass
    return found


def redis_bytes(redis_url: str, prefix: str) -> dict[str, bytes]:
    """Every key of the prefix, as an uncompressed ``DUMP`` (what RDB and AOF rewrites would write)."""
    from liverec.events.redis_log import redis_client

    client = redis_client(redis_url)
    previous = client.config_get("rdbcompression")["rdbcompression"]
    client.config_set("rdbcompression", "no")
    try:
        return {key: bytes(client.dump(key) or b"") for key in sorted(client.scan_iter(match=f"{prefix}:*"))}
    finally:
        client.config_set("rdbcompression", previous)
        client.close()


def leftovers(server: Server, needles: list[str]) -> dict[str, list[str]]:
    """Where any needle is still stored: file name or Redis key -> the needles found there."""
    stored = folder_bytes(server.data_dir)
    if server.backend == "redis":
        stored |= {f"redis:{key}": data for key, data in redis_bytes(*redis_target(server)).items()}
    return {name: found for name, data in stored.items() if (found := secrets_in(data, needles))}


def redis_target(server: Server) -> tuple[str, str]:
    return server.env["LIVEREC_REDIS_URL"], server.env["LIVEREC_REDIS_PREFIX"]


def post_user_events(server: Server, user: str, n: int = 12) -> list[str]:
    """``n`` events of ``user`` (distinctive event ids) on popular items; returns the event ids."""
    ids = [f"evt-erase-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    now = time.time()
    body = [
        {"event_id": event_id, "user_id": user, "item_id": f"i{10 + k}", "type": "click", "timestamp": now - n + k}
        for k, event_id in enumerate(ids)
    ]
    response = server.client.post("/v1/events", json=body)
    assert response.status_code == 200 and response.json()["stored"] == n, response.text
    return ids


def serve_lists_to(server: Server, user: str) -> list[str]:
    """Recommend to ``user`` (each list is logged as an impression with the user) and reward one list with a
    click on its first item; returns the lists' recommendation ids."""
    lists = [server.client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json() for _ in range(2)]
    click = {
        "event_id": f"evt-erase-{uuid.uuid4().hex[:12]}",
        "user_id": user,
        "item_id": lists[0]["items"][0]["item_id"],
        "type": "click",
        "recommendation_id": lists[0]["recommendation_id"],
    }
    assert server.client.post("/v1/events", json=click).status_code == 200
    rids = [answer["recommendation_id"] for answer in lists]
    logged = server.client.get(f"/v1/recommendations/{rids[0]}").json()
    assert len(logged["rewards"]) == 1 and logged["rewards"][0]["position"] == 1
    return rids


def train_mf_on_the_log(server: Server) -> str:
    """Train and register (not promote) an MF on the server's log as it is now: it has a row for the user."""
    registry = ModelRegistry(server.data_dir / "models")
    if server.backend == "redis":
        from liverec.events.redis_log import RedisEventLog, redis_client

        url, prefix = redis_target(server)
        client = redis_client(url)
        with RedisEventLog(client, prefix) as event_log:
            data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
        client.close()
    else:
        with SQLiteEventLog(server.data_dir / "events.db", readonly=True) as event_log:
            data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    return train_and_register(data, registry, "mf-bpr", {"n_epochs": 2}, promote=False).version


def start(data_dir: Path, backend: str, request: pytest.FixtureRequest, **env: str) -> Server:
    settings = {"LIVEREC_SNAPSHOT_INTERVAL_S": "0.5", **env}  # state.npz holds the user before the erasure
    if backend == "redis":
        settings |= move_to_redis(
            data_dir, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        )
    running = Server(data_dir, settings)
    running.backend = backend
    return running


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def erasing_server(backend: str, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start(data_dir, backend, request)
    yield running
    running.stop()


def snapshot_holds(server: Server, text: str) -> bool:
    """Whether ``state.npz`` holds ``text`` (as NumPy stores it); always true where the state lives in Redis."""
    try:
        return server.backend == "redis" or text.encode("utf-32-le") in (server.data_dir / "state.npz").read_bytes()
    except FileNotFoundError:
        return False


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        time.sleep(0.1)


def test_delete_erases_the_user_everywhere_while_serving_and_after_stop(erasing_server: Server) -> None:
    server = erasing_server
    event_ids = post_user_events(server, USER)
    lists = serve_lists_to(server, USER)
    needles = [USER, *event_ids, *lists]
    assert server.client.get(f"/v1/users/{USER}").status_code == 200
    mf_version = train_mf_on_the_log(server)
    wait_until(lambda: snapshot_holds(server, USER))
    assert leftovers(server, needles), "the test must see the user stored before the erasure"

    started = time.perf_counter()
    response = server.client.delete(f"/v1/users/{USER}")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["user_id"] == USER and report["events_deleted"] == len(event_ids) + 1 and report["state"] is True
    assert report["impressions_deleted"] == len(lists)
    assert report["models_rewritten"] == [mf_version] and report["trained_on"] == [mf_version]
    assert report["erased_at"] > 0 and seconds < 10
    assert server.client.get(f"/v1/users/{USER}").status_code == 404
    assert all(server.client.get(f"/v1/recommendations/{rid}").status_code == 404 for rid in lists)
    answer = server.client.get(f"/v1/users/{USER}/recommendations").json()
    assert answer["fallback"] == "popularity" and answer["history_length"] == 0
    again_list = answer["recommendation_id"]
    assert server.client.delete(f"/v1/users/{USER}").status_code == 200  # the list served after the erasure too
    assert leftovers(server, [*needles, again_list]) == {}
    # the MF version was rewritten without the user's row and still loads and serves
    loaded = ModelRegistry(server.data_dir / "models").load(mf_version)
    assert USER not in (loaded.user_ids or []) and loaded.model.n_users == len(loaded.user_ids or [])

    again = server.client.delete(f"/v1/users/{USER}")
    assert again.status_code == 200
    assert (again.json()["events_deleted"], again.json()["state"], again.json()["models_rewritten"]) == (0, False, [])
    assert again.json()["impressions_deleted"] == 0
    time.sleep(1.5)  # the snapshot thread and the erasure watch run meanwhile: nothing brings the user back
    assert leftovers(server, needles) == {}
    server.stop()
    assert leftovers(server, needles) == {}
    assert "erase-me" not in server.output()  # nor does the server's log name the user


@pytest.mark.slow  # a server, and the command in a second process
def test_forget_user_command_while_a_server_runs(erasing_server: Server) -> None:
    server = erasing_server
    event_ids = post_user_events(server, USER)
    needles = [USER, *event_ids]
    wait_until(lambda: snapshot_holds(server, USER))
    command = [sys.executable, "-m", "liverec.cli", "forget-user", "--data-dir", str(server.data_dir), USER, "--json"]
    done = subprocess.run(command, env={**os.environ, **server.env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["events_deleted"] == len(event_ids) and report["user_id"] == USER
    # the server follows the erasure record within a second or two: state, snapshot, served model
    wait_until(lambda: server.client.get(f"/v1/users/{USER}").status_code == 404, timeout=5)
    wait_until(lambda: leftovers(server, needles) == {}, timeout=5)
    server.stop()
    assert leftovers(server, needles) == {}


def test_forget_user_command_refuses_bad_input_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from liverec.cli import main

    assert main(["forget-user", "--data-dir", str(tmp_path), "   "]) == 2
    blank = capsys.readouterr()
    assert blank.out == "" and blank.err.count("\n") == 1 and "USER_ID" in blank.err
    assert main(["forget-user", "--data-dir", str(tmp_path), "someone"]) == 2
    missing = capsys.readouterr()
    assert missing.out == "" and missing.err.count("\n") == 1 and "no event log" in missing.err


@pytest.mark.slow  # a server and its updater child
def test_pseudonymised_ids_never_reach_a_file_and_erasure_still_works(
    data_dir: Path, request: pytest.FixtureRequest
) -> None:
    from liverec.events.pseudonyms import pseudonym

    secret = "test-secret-" + uuid.uuid4().hex
    server = start(data_dir, "embedded", request, LIVEREC_PSEUDONYM_SECRET=secret, LIVEREC_UPDATER="true")
    try:
        event_ids = post_user_events(server, USER)
        lists = serve_lists_to(server, USER)
        user = server.client.get(f"/v1/users/{USER}")
        assert user.status_code == 200 and user.json()["user_id"] == USER and len(user.json()["recent_items"]) == 13
        answer = server.client.get(f"/v1/users/{USER}/recommendations").json()
        assert answer["fallback"] is None and answer["history_length"] == 13, answer
        stored = pseudonym(secret, USER)
        logged = server.client.get(f"/v1/recommendations/{lists[0]}").json()
        assert logged["user_id"] == stored, "the list's user is stored as the pseudonym"
        wait_until(lambda: snapshot_holds(server, stored))
        assert leftovers(server, [USER]) == {}  # the raw id is nowhere, from the start
        assert secret not in server.output()  # printed settings show it redacted
        response = server.client.delete(f"/v1/users/{USER}")
        assert response.status_code == 200 and response.json()["events_deleted"] == 13
        assert response.json()["impressions_deleted"] == len(lists) + 1
        assert server.client.get(f"/v1/users/{USER}").status_code == 404
        assert leftovers(server, [USER, stored, *event_ids, *lists]) == {}
    finally:
        server.stop()
    assert leftovers(server, [USER, stored, *event_ids, *lists]) == {}


@pytest.mark.parametrize("backend_name", ["embedded", "redis"])
def test_retention_deletes_old_events_and_the_state_follows(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from liverec.events.schema import Event
    from liverec.serving.engine import Engine
    from liverec.settings import Settings

    options: dict[str, Any] = {"data_dir": tmp_path / "data", "retention_days": 30.0}
    if backend_name == "redis":
        options |= {
            "backend": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    engine = Engine(Settings(**options), background=False)
    now = time.time()
    old, new = now - 40 * 86_400, now - 86_400
    engine.log.append(
        [Event(f"evt-old-{n}", "gone-user", f"i{n}", "view", old + n) for n in range(3)]
        + [Event(f"evt-mix-old-{n}", "mixed-user", f"i{n}", "view", old + n) for n in range(3)]
        + [Event(f"evt-mix-new-{n}", "mixed-user", f"i{n + 5}", "view", new + n) for n in range(2)]
    )
    report = engine.run_retention(now=now)
    assert report is not None and report.events_deleted == 6 and report.users_affected == 2 and report.epoch == 1
    assert [event.event_id for event in engine.log.read(0)] == ["evt-mix-new-0", "evt-mix-new-1"]
    assert engine.user_history("gone-user") is None
    assert engine.user_history("mixed-user") == ["i5", "i6"]
    again = engine.run_retention(now=now)
    assert again is not None and again.events_deleted == 0 and again.epoch == 1
    engine.close()
    if backend_name == "embedded":
        data = b"".join(path.read_bytes() for path in (tmp_path / "data").rglob("*") if path.is_file())
        assert secrets_in(data, ["gone-user", "evt-old-", "evt-mix-old-"]) == []
    else:
        stored = redis_bytes(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
        assert all(secrets_in(data, ["gone-user", "evt-old-", "evt-mix-old-"]) == [] for data in stored.values())
