"""``liverec.client`` against a real `liverec serve`: every method round-trips, errors are typed, the client agrees
with the live OpenAPI document, a retried batch is stored once, the sender applies backpressure and drains.

The retry timing (backoff, ``Retry-After``, what is never retried) is checked on ``httpx.MockTransport``: it is
the client's own logic, and a real server cannot be told to answer 429 or 503 on cue. Everything that claims
something about the server — above all that a resent event is stored once — goes through a real one, with a
small forwarding proxy in front when an answer has to be lost or a request held.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from liverec.client import (
    AsyncClient,
    AsyncEventSender,
    Client,
    Conflict,
    EventSender,
    Forbidden,
    NotFound,
    QueueFull,
    RateLimited,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    calls,
)
from liverec.client.models import ExperimentIn, ItemIn
from liverec.client.retry import parse_retry_after

from .conftest import Prepared, Server, cluster_items
from .test_auth import create_key, wait_for


# -- a real server, shared by the module (every test uses its own ids) -------------------------------------------
@dataclass
class Live:
    server: Server
    key: str
    user: str  # a user with events
    items: list[str]  # items of the catalogue

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def live(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("client") / "data"
    shutil.copytree(prepared.data_dir, data_dir)
    server = Server(data_dir)
    try:
        key = create_key(server, "client-admin", "admin")
        with Client(server.url, api_key=key) as client:
            wait_for(lambda: _admitted(client), timeout=5)
        user = str(prepared.dataset.user_map.external_ids[0])
        yield Live(server, key, user, cluster_items(prepared.truth, prepared.dataset, 0, 5))
    finally:
        server.stop()


def _admitted(client: Client) -> bool:
    try:
        client.list_keys()
    except Unauthorized:
        return False
    return True


def _events(n: int, user: str, items: list[str]) -> list[dict[str, Any]]:
    return [{"user_id": user, "item_id": items[i % len(items)], "type": "view"} for i in range(n)]


def _stored(data_dir: Path, event_ids: list[str]) -> int:
    """How many rows of the server's SQLite log carry these event ids (read beside the server: WAL)."""
    connection = sqlite3.connect(f"file:{data_dir / 'events.db'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(event_ids))
        return int(
            connection.execute(f"SELECT count(*) FROM events WHERE event_id IN ({marks})", event_ids).fetchone()[0]
        )
    finally:
        connection.close()


class Proxy:
    """A forwarding HTTP proxy in front of a real server: it can lose the answers to the next ``lose`` POSTs (the
    server has done the work; the client sees the connection close) and hold requests back (``gate``)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=60)
        self.lose = 0
        self.forwarded: list[tuple[str, str, bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.gate.wait(60)
                skip = {"host", "content-length", "connection"}
                headers = {name: value for name, value in self.headers.items() if name.lower() not in skip}
                answer = proxy.upstream.request(self.command, self.path, content=body, headers=headers)
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path, body))
                    lost = proxy.lose > 0 and self.command == "POST"
                    proxy.lose -= int(lost)
                if lost:  # the work is done upstream; its answer never reaches the client
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                dropped = {"content-length", "transfer-encoding", "connection", "content-encoding"}
                for name, value in answer.headers.items():
                    if name.lower() not in dropped:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self.upstream.close()


@pytest.fixture
def proxy(live: Live) -> Iterator[Proxy]:
    running = Proxy(live.url)
    yield running
    running.close()


# -- round trips --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_method_round_trips(live: Live) -> None:
    with Client(live.url, api_key=live.key) as client:
        assert client.health().status == "ok"
        ready = client.ready()
        assert ready.ready and ready.model_loaded and ready.log_writable and ready.model_version == "v0001"
        assert "liverec_" in client.metrics()
        assert client.stats().items > 0

        # events: JSON and NDJSON, a single one, and the ids the client gave them
        user = f"client-{uuid.uuid4().hex[:8]}"
        ack = client.send_events(_events(3, user, live.items))
        assert (ack.received, ack.stored, ack.duplicates) == (3, 3, 0)
        ack = client.send_events(_events(2, user, live.items[3:]), ndjson=True)
        assert (ack.received, ack.stored) == (2, 2)
        assert client.send_event({"user_id": user, "item_id": live.items[0], "type": "click"}).stored == 1
        assert client.get_user(user).recent_items[-1] == live.items[0]
        assert client.find_users(user).user_ids == [user]

        # recommendations, with every option the routes take
        answer = client.recommend(
            live.user, k=3, exclude_seen=False, explain=True, explore="greedy", rerank="mmr", rerank_lambda=0.2
        )
        assert len(answer.items) == 3 and answer.model_version == "v0001"
        assert all(entry.explanation is not None and entry.explanation.text for entry in answer.items)
        logged = client.get_recommendation(answer.recommendation_id)
        assert logged.items == [entry.item_id for entry in answer.items] and logged.rerank == "mmr"
        session = client.recommend_session(live.items[:2], k=4, include_categories=[], exclude_seen=True)
        assert len(session.items) == 4 and not {entry.item_id for entry in session.items} & set(live.items[:2])
        assert len(client.similar(live.items[0], k=2, explore="epsilon").items) == 2

        # the catalogue
        item_id = f"client item?{uuid.uuid4().hex[:6]}"  # a space and a "?": the client escapes the segment
        put = client.put_item(item_id, ItemIn(title="A lamp", categories=["home"]))
        assert (put.item_id, put.title, put.categories, put.available) == (item_id, "A lamp", ["home"], True)
        assert item_id in [item.item_id for item in client.search_items("a lamp", limit=5).items]
        assert client.put_item(item_id, {"title": "A lamp", "available": False}).available is False
        assert client.get_item(item_id).title == "A lamp"
        client.delete_item(item_id)
        with pytest.raises(NotFound, match="no such item"):
            client.get_item(item_id)

        # models: promote the served version again; nothing earlier to roll back to
        models = client.list_models()
        assert models.serving == "v0001" and [v["version"] for v in models.versions] == ["v0001"]
        assert client.promote_model("v0001").serving == "v0001"
        with pytest.raises(Conflict):
            client.rollback_model()

        # experiments
        experiment_id = f"client-{uuid.uuid4().hex[:8]}"
        arms = [{"name": "control", "share": 0.5}, {"name": "eps", "share": 0.5, "policy": "epsilon"}]
        created = client.create_experiment(ExperimentIn.model_validate({"experiment_id": experiment_id, "arms": arms}))
        assert (created.experiment_id, created.status, [a.name for a in created.arms]) == (
            experiment_id,
            "running",
            ["control", "eps"],
        )
        client.recommend(live.user, k=2)  # one impression for one of the arms
        report = client.get_experiment(experiment_id)
        assert report.control == "control" and sum(arm.impressions for arm in report.arms) == 1
        assert experiment_id in [e.experiment_id for e in client.list_experiments().experiments]
        assert client.stop_experiment(experiment_id).status == "stopped"
        promoted = client.promote_experiment(experiment_id, arm="control")
        assert (promoted.status, promoted.winner, promoted.serving) == ("promoted", "control", "v0001")

        # API keys
        name = f"client-{uuid.uuid4().hex[:6]}"
        created_key = client.create_key(name, ["read"])
        assert created_key.key.startswith("lrk_") and created_key.scopes == ["read"]
        assert name in [key.name for key in client.list_keys()]
        client.revoke_key(name)
        assert name not in [key.name for key in client.list_keys()]

        # erasure last: the user's events go
        erased = client.erase_user(user)
        assert erased.user_id == user and erased.events_deleted == 6
        with pytest.raises(NotFound):
            client.get_user(user)


@pytest.mark.slow
def test_errors_are_typed_and_name_the_field(live: Live) -> None:
    with Client(live.url, api_key=live.key) as client:
        with pytest.raises(ValidationFailed) as refused:
            client.recommend(live.user, k=0)
        assert refused.value.status_code == 422 and refused.value.errors[0]["loc"] == ["query", "k"]
        assert "k: " in str(refused.value)

        bad = [*_events(2, "client-bad", live.items), {"user_id": "client-bad", "item_id": "x", "type": "teleport"}]
        with pytest.raises(ValidationFailed) as refused:
            client.send_events(bad)
        assert refused.value.event_indices == {2} and refused.value.errors[0]["field"] == "type"
        assert "[2] type" in str(refused.value)

        with pytest.raises(NotFound) as missing:
            client.get_recommendation("no-such-list")
        assert missing.value.status_code == 404 and "no-such-list" in missing.value.detail

        key = client.create_key(f"client-read-{uuid.uuid4().hex[:6]}", ["read"]).key

    reader = Client(live.url, api_key=key)
    wait_for(lambda: _answers(reader), timeout=5)
    with reader, pytest.raises(Forbidden) as forbidden:
        reader.list_keys()
    assert forbidden.value.status_code == 403 and forbidden.value.detail
    with Client(live.url) as anonymous, pytest.raises(Unauthorized) as unauthorized:
        anonymous.recommend(live.user)
    assert unauthorized.value.status_code == 401


def _answers(client: Client) -> bool:
    try:
        client.health()
        client.list_models()
    except Unauthorized:
        return False
    return True


@pytest.mark.slow
def test_the_client_agrees_with_the_live_openapi_document(live: Live) -> None:
    """Every request the client can send is a route with that method, and each answer's model is the schema the
    document names for it (or, where the server names none, its fields are the document's)."""
    document = httpx.get(f"{live.url}/openapi.json").json()
    routes = {
        (method.upper(), re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")): operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    schemas = document["components"]["schemas"]
    sample = {
        "health": (),
        "ready": (),
        "metrics": (),
        "stats": (),
        "search_items": ("lamp", 5),
        "find_users": ("u", None),
        "send_events": ([{"user_id": "u", "item_id": "i", "type": "view", "event_id": "e"}], False),
        "recommend": ("u", {}),
        "recommend_session": (["i"], {}),
        "similar": ("i", {}),
        "get_recommendation": ("r",),
        "put_item": ("i", {}),
        "get_item": ("i",),
        "delete_item": ("i",),
        "get_user": ("u",),
        "erase_user": ("u",),
        "list_models": (),
        "promote_model": ("v0001",),
        "rollback_model": (),
        "create_experiment": ({},),
        "list_experiments": (),
        "get_experiment": ("x",),
        "stop_experiment": ("x",),
        "promote_experiment": ("x", None),
        "list_keys": (),
        "create_key": ("k", ["read"]),
        "revoke_key": ("k",),
    }
    builders = {
        name
        for name, value in vars(calls).items()
        if inspect.isfunction(value) and value.__module__ == calls.__name__ and not name.startswith("_")
    }
    assert builders - {"api_error", "with_event_ids"} == set(sample)
    covered = set()
    for name, args in sample.items():
        call = getattr(calls, name)(*args)
        matches = [op for (method, pattern), op in routes.items() if method == call.method and pattern.match(call.path)]
        assert len(matches) == 1, f"{name}: {call.method} {call.path} is no route of the document"
        operation = matches[0]
        covered.add(operation["operationId"])
        for status in call.ok:
            assert str(status) in operation["responses"], f"{name}: {status} undocumented"
        content = operation["responses"][str(call.ok[0])].get("content", {})
        if call.answer is None:
            assert not content, name
            continue
        if call.answer is str:
            assert "text/plain" in content, name
            continue
        schema = content["application/json"]["schema"]
        if "$ref" in schema:
            assert schema["$ref"].rsplit("/", 1)[1] == call.answer.__name__, name
            assert set(schemas[call.answer.__name__]["properties"]) == set(call.answer.model_fields), name
        elif "properties" in schema:  # an unnamed schema from the route's return type
            assert set(schema["properties"]) == set(call.answer.model_fields), name
    # every operation of the document is one the client sends (web pages aside)
    pages = {
        op["operationId"] for op in routes.values() if "text/html" in op["responses"].get("200", {}).get("content", {})
    }
    assert {op["operationId"] for op in routes.values()} - covered - pages == set()


# -- retries against a real server: a lost answer, resent, stored once ---------------------------------------------
@pytest.mark.slow
def test_a_retried_batch_is_stored_exactly_once(live: Live, proxy: Proxy) -> None:
    proxy.lose = 1
    events = _events(5, f"client-retry-{uuid.uuid4().hex[:6]}", live.items)
    with Client(proxy.url, api_key=live.key, retry=RetryPolicy(backoff_s=0.01, seed=0)) as client:
        ack = client.send_events(events)
        assert client.retried == 1
    # the first attempt was stored and its answer lost; the second found every id stored already
    assert (ack.received, ack.stored, ack.duplicates) == (5, 0, 5)
    sent = [json.loads(body) for method, path, body in proxy.forwarded if path == "/v1/events"]
    assert len(sent) == 2 and sent[0] == sent[1]  # the same event ids both times
    event_ids = [event["event_id"] for event in sent[0]]
    assert len(set(event_ids)) == 5 and _stored(live.server.data_dir, event_ids) == 5


@pytest.mark.slow
def test_an_admin_post_is_sent_once(live: Live, proxy: Proxy) -> None:
    proxy.lose = 1  # the promotion is done and its answer lost: the client says so instead of promoting again
    with Client(proxy.url, api_key=live.key, retry=RetryPolicy(backoff_s=0.01)) as client:
        with pytest.raises(ServiceUnavailable, match="after 1 attempt"):
            client.promote_model("v0001")
        assert client.retried == 0
    assert [(method, path) for method, path, _ in proxy.forwarded] == [("POST", "/v1/models/v0001/promote")]


# -- the sender ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_sender_applies_backpressure_and_drains_on_close(live: Live, proxy: Proxy) -> None:
    user = f"client-sender-{uuid.uuid4().hex[:6]}"
    events = _events(5, user, live.items)
    proxy.gate.clear()  # the server's answers are held back: nothing is acknowledged
    with Client(proxy.url, api_key=live.key) as client:
        sender = EventSender(client, max_batch=2, max_delay_s=0.0, max_queue=4)
        ids = [sender.send(event) for event in events[:4]]
        assert sender.pending == 4  # one batch in flight (held back), one queued
        with pytest.raises(QueueFull):
            sender.send(events[4], block=False)
        with pytest.raises(QueueFull):
            sender.send(events[4], timeout=0.1)
        blocked = threading.Thread(target=lambda: ids.append(sender.send(events[4])))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # waiting for room
        proxy.gate.set()
        blocked.join(10)
        assert not blocked.is_alive()
        sender.close()
        stats = sender.stats
    assert (stats.sent, stats.stored, stats.duplicates, stats.failed) == (5, 5, 0, 0)
    assert sender.pending == 0 and stats.batches == 3 and sender.failed == []
    assert _stored(live.server.data_dir, ids) == 5


@pytest.mark.slow
def test_the_sender_reports_refused_events_and_delivers_the_rest(live: Live) -> None:
    reported: list[Any] = []
    user = f"client-refused-{uuid.uuid4().hex[:6]}"
    good = _events(3, user, live.items)
    bad = {"user_id": user, "item_id": live.items[0], "type": "teleport"}
    with (
        Client(live.url, api_key=live.key) as client,
        EventSender(client, max_batch=10, max_delay_s=10.0, on_failure=reported.append) as sender,
    ):
        for event in [good[0], bad, *good[1:]]:
            sender.send(event)
        sender.flush(timeout=30)
        assert sender.pending == 0
    assert sender.stats.stored == 3 and sender.stats.failed == 1 and sender.stats.batches == 1
    assert reported == sender.failed and len(reported) == 1
    assert reported[0].events[0]["type"] == "teleport" and isinstance(reported[0].error, ValidationFailed)
    assert client.retried == 0


# -- the asynchronous client --------------------------------------------------------------------------------------
def test_the_async_client_has_the_same_surface() -> None:
    def surface(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if inspect.isfunction(member) and not name.startswith("_")
        }

    sync, asynchronous = surface(Client), surface(AsyncClient)
    assert sync.keys() == asynchronous.keys() and len(sync) > 25
    for name, signature in sync.items():
        assert str(signature) == str(asynchronous[name]).replace("AsyncBaseTransport", "BaseTransport"), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    senders = surface(EventSender), surface(AsyncEventSender)
    assert senders[0].keys() <= senders[1].keys()


@pytest.mark.slow
def test_the_async_client_and_sender_against_a_real_server(live: Live) -> None:
    async def scenario() -> tuple[Any, ...]:
        async with AsyncClient(live.url, api_key=live.key) as client:
            user = f"client-async-{uuid.uuid4().hex[:6]}"
            ack = await client.send_events(_events(2, user, live.items))
            answer = await client.recommend(user, k=3, explain=True)
            recent = (await client.get_user(user)).recent_items
            with pytest.raises(NotFound):
                await client.get_item("no-such-item")
            async with AsyncEventSender(client, max_batch=4, max_delay_s=0.05, max_queue=4) as sender:
                ids = [await sender.send(event) for event in _events(10, user, live.items)]
                with pytest.raises(QueueFull):
                    for event in _events(5, user, live.items):
                        await sender.send(event, block=False)
            return ack, answer, recent, sender, ids

    ack, answer, recent, sender, ids = asyncio.run(scenario())
    assert ack.stored == 2 and len(answer.items) == 3 and recent == live.items[:2]
    assert sender.pending == 0 and sender.failed == []
    assert sender.stats.sent == sender.stats.stored >= 10
    assert _stored(live.server.data_dir, ids) == 10


# -- retry timing (the client's own logic: a mock transport) -------------------------------------------------------
class Script:
    """A mock transport answering from a list of (status, headers) or exceptions; records each request."""

    def __init__(self, *answers: tuple[int, dict[str, str]] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer
        body = {"status": "ok"} if status == 200 else {"detail": f"status {status}"}
        return httpx.Response(status, headers=headers, json=body)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's sleeps, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr("liverec.client.sync.time.sleep", recorded.append)
    return recorded


def _client(script: Script, **policy: Any) -> Client:
    return Client("http://liverec.test", retry=RetryPolicy(seed=1, **policy), transport=httpx.MockTransport(script))


def test_retry_after_is_honoured_then_the_answer_returned(waits: list[float]) -> None:
    script = Script((429, {"retry-after": "2"}), (503, {}), (200, {}))
    with _client(script, backoff_s=0.1) as client:
        assert client.health().status == "ok"
    assert len(script.requests) == 3 and client.retried == 2
    assert waits[0] == 2.0 and 0 <= waits[1] <= 0.2  # Retry-After, then backoff of the second attempt


def test_backoff_grows_and_the_attempts_are_bounded(waits: list[float]) -> None:
    script = Script((502, {}))
    with _client(script, max_attempts=4, backoff_s=0.5, max_backoff_s=0.8) as client, pytest.raises(ServerError):
        client.list_models()
    assert len(script.requests) == 4 and len(waits) == 3
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(waits, [0.5, 0.8, 0.8], strict=True))


def test_the_total_time_bounds_the_retries(waits: list[float]) -> None:
    script = Script((429, {"retry-after": "20"}))
    with _client(script, max_total_s=5) as client, pytest.raises(RateLimited) as limited:
        client.get_user("u")
    assert len(script.requests) == 1 and waits == [] and limited.value.retry_after == 20.0


def test_connection_errors_are_retried_for_reads_only(waits: list[float]) -> None:
    refused = httpx.ConnectError("connection refused")
    script = Script(refused, refused, (200, {}))
    with _client(script) as client:
        assert client.health().status == "ok"
    assert len(script.requests) == 3
    script = Script(refused)
    with _client(script) as client, pytest.raises(ServiceUnavailable, match="after 1 attempt"):
        client.promote_model("v0002")
    assert len(script.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_admin_posts_are_never_retried(waits: list[float], status: int) -> None:
    script = Script((status, {"retry-after": "0"}))
    with _client(script) as client, pytest.raises((RateLimited, ServerError)):
        client.create_key("k", ["read"])
    assert len(script.requests) == 1 and waits == []


def test_every_attempt_of_an_event_post_carries_the_same_ids(waits: list[float]) -> None:
    script = Script((503, {}), httpx.ReadTimeout("slow"), (200, {}))
    script_ack = {"received": 2, "stored": 2, "duplicates": 0, "last_offset": 9}

    def answer(request: httpx.Request) -> httpx.Response:
        response = script(request)
        return httpx.Response(200, json=script_ack) if response.status_code == 200 else response

    with Client("http://liverec.test", retry=RetryPolicy(seed=1), transport=httpx.MockTransport(answer)) as client:
        ack = client.send_events(
            [
                {"user_id": "u", "item_id": "i", "type": "view"},
                {"user_id": "u", "item_id": "j", "type": "view", "event_id": "mine"},
            ]
        )
    bodies = [json.loads(request.content) for request in script.requests]
    assert ack.stored == 2 and len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert bodies[0][1]["event_id"] == "mine" and re.fullmatch("[0-9a-f]{32}", bodies[0][0]["event_id"])


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_unknown_options_and_bad_settings_are_refused_before_sending() -> None:
    with Client("http://liverec.test", transport=httpx.MockTransport(Script((200, {})))) as client:
        with pytest.raises(TypeError, match="unknown option"):
            client.similar("i", exclude_seen=True)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="max_queue"):
            EventSender(client, max_batch=10, max_queue=5)
    with pytest.raises(ValueError, match="url"):
        Client("127.0.0.1:8000")
