"""The API end to end: a real `liverec serve` process, a real HTTP client, real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from liverec.backends import open_backend
from liverec.data.interactions import Histories
from liverec.events.log import SQLiteEventLog
from liverec.retrieval import VectorIndex
from liverec.serving.engine import Engine, RecommendRequest
from liverec.settings import Settings

from .conftest import Prepared, Server, cluster_items


def share_in(items: list[dict[str, object]], members: set[str]) -> float:
    return sum(str(i["item_id"]) in members for i in items) / max(len(items), 1)


def test_recommendations_follow_the_users_new_events(server: Server, prepared: Prepared) -> None:
    """A new user's list moves to the clusters they act in, as the planted truth says it should.

    In the planted data every user likes two clusters, steadily (no drift): after events in cluster A
    the truth's next items are A's; after more events in B they are A's and B's.
    """
    truth, dataset = prepared.truth, prepared.dataset
    all_a = set(cluster_items(truth, dataset, 0, 1000))
    all_b = set(cluster_items(truth, dataset, 1, 1000))
    user = "new-user-1"
    cold = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert cold["fallback"] == "popularity" and cold["reason"] and len(cold["items"]) == 10

    events = [{"user_id": user, "item_id": i, "type": "view"} for i in cluster_items(truth, dataset, 0, 5)]
    ack = server.client.post("/v1/events", json=events)
    assert ack.status_code == 200 and ack.json()["stored"] == 5
    warm = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert warm["fallback"] is None and warm["model_version"] == "v0001" and warm["history_length"] == 5
    assert share_in(warm["items"], all_a) >= 0.6, warm  # 1 in 5 by chance
    assert not {str(i["item_id"]) for i in warm["items"]} & {e["item_id"] for e in events}, "seen items excluded"

    events = [{"user_id": user, "item_id": i, "type": "purchase"} for i in cluster_items(truth, dataset, 1, 8)]
    assert server.client.post("/v1/events", json=events).status_code == 200
    moved = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert share_in(moved["items"], all_a | all_b) >= 0.6, moved
    assert share_in(moved["items"], all_b) > share_in(warm["items"], all_b), (warm, moved)

    other = "new-user-2"
    events = [{"user_id": other, "item_id": i, "type": "view"} for i in cluster_items(truth, dataset, 1, 5)]
    assert server.client.post("/v1/events", json=events).status_code == 200
    answer = server.client.get(f"/v1/users/{other}/recommendations", params={"k": 10}).json()
    assert share_in(answer["items"], all_b) >= 0.6, answer


def test_anonymous_session_and_similar_items(server: Server, prepared: Prepared) -> None:
    items = cluster_items(prepared.truth, prepared.dataset, 2, 4)
    members = set(cluster_items(prepared.truth, prepared.dataset, 2, 1000))
    answer = server.client.post("/v1/recommendations", json={"items": items, "k": 10}).json()
    assert len(answer["items"]) == 10 and share_in(answer["items"], members) >= 0.6
    similar = server.client.get(f"/v1/items/{items[0]}/similar", params={"k": 5}).json()
    assert len(similar["items"]) == 5 and items[0] not in {i["item_id"] for i in similar["items"]}
    assert server.client.get("/v1/items/no-such-item/similar").status_code == 404


def test_idempotent_event_ids(server: Server) -> None:
    event = {"user_id": "u-idem", "item_id": "fresh-item", "type": "click", "event_id": "evt-42"}
    first = server.client.post("/v1/events", json=event).json()
    again = server.client.post("/v1/events", json=[event, event]).json()
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 2)
    item = server.client.get("/v1/items/fresh-item").json()
    assert item["stats"]["count"] == 1
    assert server.client.get("/v1/users/u-idem").json()["recent_items"] == ["fresh-item"]


def test_ndjson_batches(server: Server) -> None:
    lines = "\n".join(json.dumps({"user_id": "nd", "item_id": f"nd-{n}", "type": "view"}) for n in range(3))
    response = server.client.post("/v1/events", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200 and response.json()["stored"] == 3


def test_every_validation_error_is_named_and_nothing_is_stored(server: Server) -> None:
    before = server.client.get("/v1/users/mixed")
    batch = [
        {"user_id": "mixed", "item_id": "ok-1", "type": "view"},
        {"item_id": "x", "type": "view"},
        {"user_id": "mixed", "item_id": "", "type": "view"},
        {"user_id": "mixed", "item_id": "x", "type": "teleport"},
        {"user_id": "mixed", "item_id": "x", "type": "view", "timestamp": "yesterday"},
        {"user_id": "mixed", "item_id": "x", "type": "view", "context": [1, 2]},
        {"user_id": "mixed", "item_id": "x", "type": "view", "colour": "red"},
    ]
    response = server.client.post("/v1/events", json=batch)
    assert response.status_code == 422
    errors = response.json()["detail"]
    by_index = {e["index"]: e for e in errors}
    assert set(by_index) == {1, 2, 3, 4, 5, 6}
    assert by_index[1]["field"] == "user_id"
    assert by_index[2]["field"] == "item_id"
    assert by_index[3]["field"] == "type" and "view" in by_index[3]["reason"] and by_index[3]["value"] == "teleport"
    assert by_index[4]["field"] == "timestamp" and by_index[4]["value"] == "yesterday"
    assert by_index[5]["field"] == "context"
    assert by_index[6]["field"] == "colour"
    assert before.status_code == 404 and server.client.get("/v1/users/mixed").status_code == 404, "batch is atomic"

    not_json = server.client.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert server.client.post("/v1/events", json=[]).status_code == 422
    bad_k = server.client.get("/v1/users/u/recommendations", params={"k": 0})
    assert bad_k.status_code == 422 and "k" in json.dumps(bad_k.json())
    assert server.client.get("/v1/users/u/recommendations", params={"k": 100_000}).status_code == 422
    bad_item = server.client.put("/v1/items/x", json={"categories": "drama"})
    assert bad_item.status_code == 422 and "categories" in bad_item.text


def test_hostile_numbers_and_times_get_422_never_500(server: Server) -> None:
    """NaN or Infinity anywhere in a body is named in a 422 (JSON cannot echo them back as numbers); an event
    from the far future, which would lead time-decayed popularity for years, is refused, ISO or numeric."""
    headers = {"content-type": "application/json"}
    for method, path, body, field in [
        ("post", "/v1/recommendations", '{"items": ["1"], "k": NaN}', "k"),
        ("put", "/v1/items/hostile", '{"available": NaN}', "available"),
        ("put", "/v1/items/hostile", '{"attributes": {"a": Infinity}}', "attributes"),
    ]:
        response = server.client.request(method.upper(), path, content=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"][-1] == field and error["input"] in ("nan", "inf", {"a": "inf"})
    assert server.client.get("/v1/items/hostile").status_code == 404, "nothing was stored"

    future = [
        {"user_id": "far", "item_id": "now", "type": "view"},
        {"user_id": "far", "item_id": "later", "type": "view", "timestamp": "2100-01-01T00:00:00Z"},
        {"user_id": "far", "item_id": "later", "type": "view", "timestamp": 99_999_999_999},
    ]
    response = server.client.post("/v1/events", json=future)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "timestamp"), (2, "timestamp")]
    assert all("max_future_skew_s" in e["reason"] for e in errors)
    assert server.client.get("/v1/users/far").status_code == 404, "the batch is atomic"
    soon = time.time() + 3600  # within the default day of clock skew
    ok = [{"user_id": "far", "item_id": "soon", "type": "view", "timestamp": soon}]
    assert server.client.post("/v1/events", json=ok).status_code == 200


def test_ids_follow_one_rule_on_every_route(server: Server) -> None:
    """1 to 256 characters after stripping surrounding whitespace, in a body or in a path, written or read."""
    client = server.client
    assert client.put("/v1/items/" + "x" * 257, json={"title": "long"}).status_code == 422
    assert client.get("/v1/users/" + "u" * 257).status_code == 422
    assert client.get("/v1/items/%20%20/similar").status_code == 422
    assert client.put("/v1/items/%20padded%20", json={"title": "P"}).json()["item_id"] == "padded"
    assert client.get("/v1/items/padded").json()["title"] == "P" == client.get("/v1/items/%20padded").json()["title"]
    assert client.post("/v1/events", json=[{"user_id": " spaced ", "item_id": "padded", "type": "view"}]).is_success
    for path in ("/v1/users/spaced", "/v1/users/%20spaced%20"):
        assert client.get(path).json()["recent_items"] == ["padded"]
    session = client.post("/v1/recommendations", json={"items": [" padded "], "k": 3, "exclude_seen": True}).json()
    assert "padded" not in {item["item_id"] for item in session["items"]}, "the stripped id is the seen item"


def test_oversized_bodies_and_batches_get_413(data_dir: Path) -> None:
    server = Server(data_dir, env={"LIVEREC_MAX_BODY_BYTES": "2048", "LIVEREC_MAX_BATCH": "5"})
    try:
        big = [{"user_id": "u", "item_id": "i" * 200, "type": "view"}] * 20
        assert server.client.post("/v1/events", json=big).status_code == 413
        six = [{"user_id": "u", "item_id": f"i{n}", "type": "view"} for n in range(6)]
        assert server.client.post("/v1/events", json=six).status_code == 413
        assert server.client.post("/v1/events", json=six[:5]).status_code == 200
        # every route has the limit, with or without a declared length
        title = {"title": "t" * 1000, "categories": ["c" * 200] * 10}
        assert server.client.put("/v1/items/big", json=title).status_code == 413
        assert server.client.get("/v1/items/big").status_code == 404, "nothing was stored"
        session = {"items": [f"i{n}" for n in range(400)], "k": 5}
        too_large = server.client.post("/v1/recommendations", json=session)
        assert too_large.status_code == 413 and "2048" in too_large.json()["detail"]
        chunked = server.client.post(
            "/v1/recommendations",
            content=iter([json.dumps(session).encode()[:1500], json.dumps(session).encode()[1500:]]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        small = server.client.post("/v1/recommendations", json={"items": ["i1"], "k": 5})
        assert small.status_code == 200
    finally:
        server.stop()


def test_catalogue_filters_and_deletion(server: Server, prepared: Prepared) -> None:
    truth, dataset = prepared.truth, prepared.dataset
    a_items = cluster_items(truth, dataset, 0, 1000)
    user = "catalogue-user"
    server.client.post("/v1/events", json=[{"user_id": user, "item_id": i, "type": "view"} for i in a_items[:3]])
    top = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"]
    first = top[0]["item_id"]
    tagged = [i for i in a_items[10:] if i not in {t["item_id"] for t in top}][:2]
    for item in tagged:
        assert server.client.put(f"/v1/items/{item}", json={"title": "T", "categories": ["promo"]}).status_code == 200
    only = server.client.get(
        f"/v1/users/{user}/recommendations", params={"k": 10, "include_categories": "promo"}
    ).json()
    assert [i["item_id"] for i in only["items"]] == sorted(tagged, key=[i["item_id"] for i in only["items"]].index)
    assert len(only["items"]) == 2, "only two items are eligible: no padding with ineligible ones"
    without = server.client.get(
        f"/v1/users/{user}/recommendations", params={"k": 10, "exclude_categories": "promo"}
    ).json()
    assert len(without["items"]) == 10 and not set(tagged) & {i["item_id"] for i in without["items"]}

    assert server.client.put(f"/v1/items/{first}", json={"available": False}).status_code == 200
    after = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"]
    assert first not in {i["item_id"] for i in after} and len(after) == 10
    second = after[0]["item_id"]
    assert server.client.delete(f"/v1/items/{second}").status_code == 204
    after = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"]
    assert second not in {i["item_id"] for i in after} and len(after) == 10
    assert server.client.delete("/v1/items/never-existed").status_code == 404
    assert server.client.get(f"/v1/items/{second}").status_code == 404, "a deleted item is gone for readers too"
    assert server.client.get(f"/v1/items/{first}").json()["available"] is False


def test_the_openapi_document_says_what_the_server_does(server: Server) -> None:
    """Strict body types, k's bound in the schema and FastAPI's standard 422 for it, every method in ``Allow``,
    /metrics as text, and the events body documented (object, array, NDJSON)."""
    client = server.client
    for available in (0, 1, "true", None):
        answer = client.put("/v1/items/strict", json={"available": available})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "available"], answer.text
    assert client.put("/v1/items/strict", json={"available": False}).json()["available"] is False
    document = client.get("/openapi.json").json()
    k = next(
        p for p in document["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"] if p["name"] == "k"
    )
    assert k["schema"]["maximum"] == 1000 and k["schema"]["minimum"] == 1
    too_many = client.get("/v1/users/u/recommendations", params={"k": 1001})
    (error,) = too_many.json()["detail"]
    assert too_many.status_code == 422 and error["loc"] == ["query", "k"] and error["type"] == "less_than_equal"
    session = client.post("/v1/recommendations", json={"items": ["1"], "k": 1001})
    assert session.status_code == 422 and session.json()["detail"][0]["loc"] == ["body", "k"]
    assert client.post("/v1/recommendations", json={"items": ["1"], "k": 5.0}).status_code == 200, "5.0 is 5"
    assert client.post("/v1/recommendations", json={"items": ["1"], "k": "5"}).status_code == 422
    refused = client.patch("/v1/items/strict", json={})
    assert refused.status_code == 405 and set(refused.headers["allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    metrics_doc = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics_doc) == ["text/plain"]
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-ndjson"}
    one, batch = body["application/json"]["schema"]["oneOf"]
    assert one["required"] == ["user_id", "item_id", "type"] and batch["maxItems"] == 10_000
    for path, method, codes in [
        ("/v1/events", "post", {"200", "400", "401", "403", "413", "415", "422", "429"}),
        ("/v1/items/{item_id}", "get", {"200", "401", "403", "404", "413", "422", "429"}),
        ("/v1/models/rollback", "post", {"200", "401", "403", "409", "413", "415", "429"}),
        ("/v1/users/{user_id}", "delete", {"200", "401", "403", "413", "415", "422", "429"}),
    ]:
        assert set(document["paths"][path][method]["responses"]) == codes, (path, method)


def test_operations_endpoints(server: Server) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    ready = server.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model_loaded"] and ready.json()["log_writable"]
    server.client.get("/v1/users/someone/recommendations")
    metrics = server.client.get("/metrics").text
    assert (
        'liverec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in metrics
    )
    assert "liverec_http_request_duration_seconds_bucket" in metrics
    assert 'liverec_model_info{version="v0001"} 1.0' in metrics
    assert server.client.get("/docs").status_code == 200
    assert "/v1/events" in server.client.get("/openapi.json").json()["paths"]
    assert "liverec_settings" in server.output(), "effective settings are printed at start-up"
    frozen = [json.loads(line) for line in server.output().splitlines() if "froze the start-up heap" in line]
    assert len(frozen) == 1 and frozen[0]["objects"] > 10_000, "the collector leaves the start-up heap alone"
    switched = [json.loads(line) for line in server.output().splitlines() if "switch interval set" in line]
    assert [round(line["switch_interval_ms"], 6) for line in switched] == [5.0], "a small catalogue: Python's own"
    models = server.client.get("/v1/models").json()
    assert models["serving"] == "v0001" and models["versions"][0]["metrics"]["ndcg@10"] > 0


def test_new_model_version_is_swapped_in_without_failing_requests(server: Server) -> None:
    failures: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = server.client.get("/v1/users/user-swap/recommendations", params={"k": 5})
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.add(response.json()["model_version"])

    server.client.post("/v1/events", json={"user_id": "user-swap", "item_id": "0", "type": "view"})
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        trained = subprocess.run(
            [
                sys.executable,
                "-m",
                "liverec.cli",
                "train",
                "--data-dir",
                str(server.data_dir),
                "--model",
                "itemknn",
                "--json",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **server.env},  # the same backend as the server
        )
        assert trained.returncode == 0, trained.stderr
        assert json.loads(trained.stdout)["version"] == "v0002"
        deadline = time.monotonic() + 10
        while "v0002" not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not failures and {"v0001", "v0002"} <= versions

    rolled = server.client.post("/v1/models/rollback")
    assert rolled.status_code == 200 and rolled.json()["serving"] == "v0001"
    statuses = {m["version"]: m["status"] for m in server.client.get("/v1/models").json()["versions"]}
    assert statuses == {"v0001": "promoted", "v0002": "rejected"}
    assert server.client.post("/v1/models/rollback").status_code == 409
    assert server.client.post("/v1/models/v0002/promote").json()["serving"] == "v0002"
    assert server.client.get("/v1/users/user-swap/recommendations").json()["model_version"] == "v0002"
    assert server.client.post("/v1/models/v0009/promote").status_code == 404


@pytest.mark.slow  # kills and restarts a server
def test_kill_9_loses_no_acknowledged_event_and_state_rebuilds_equal(data_dir: Path, prepared: Prepared) -> None:
    server = Server(data_dir)
    acknowledged: list[str] = []
    acknowledged_users: list[str] = []
    rng = np.random.default_rng(0)
    items = prepared.dataset.item_map.external_ids

    def stream() -> None:
        batch_no = 0
        while True:
            batch = [
                {
                    "user_id": f"k{rng.integers(2000)}",
                    "item_id": str(items[rng.integers(len(items))]),
                    "type": "view",
                    "event_id": f"kill-{batch_no}-{n}",
                }
                for n in range(200)
            ]
            try:
                response = server.client.post("/v1/events", json=batch)
            except Exception:  # the server died mid-request: that batch was never acknowledged
                return
            if response.status_code == 200:
                acknowledged.extend(e["event_id"] for e in batch)
                acknowledged_users.extend(e["user_id"] for e in batch)
            batch_no += 1

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(1.5)
    server.kill()
    thread.join()
    assert len(acknowledged) >= 1000, "the stream ran long enough to matter"

    with SQLiteEventLog(data_dir / "events.db") as event_log:
        stored = {event.event_id for batch in event_log.iter_all() for event in batch}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"

    settings = Settings.load(data_dir=data_dir)
    restarted = Engine(settings, background=False)  # snapshot (if any) + the log after it
    live = restarted.state.fingerprint()
    restarted.close()
    with open_backend(settings) as backend:
        rebuilt = backend.rebuild_state().fingerprint()
    assert live == rebuilt and live["offset"] >= prepared.n_imported + len(acknowledged)

    again = Server(data_dir)
    try:
        answer = again.client.get("/v1/users/k1/recommendations").json()
        assert answer["history_length"] > 0 and len(answer["items"]) == 10
    finally:
        again.stop()


def test_bad_settings_stop_serve_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liverec.cli", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"LIVEREC_PORT": "eighty", "PATH": ""},
        check=False,
        timeout=60,
    )
    assert result.returncode == 2 and "port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_redis_stops_serve_and_worker_with_one_error_line(tmp_path: Path) -> None:
    for command in ("serve", "worker"):
        result = subprocess.run(
            [sys.executable, "-m", "liverec.cli", command, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "LIVEREC_BACKEND": "redis", "LIVEREC_REDIS_URL": "redis://127.0.0.1:1/0"},
            check=False,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        # serve logs its settings first (JSON lines); the error itself is one plain line, the last
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("liverec: error: redis_url: cannot reach Redis"), result.stderr


def test_float16_scan_serves_the_same_recommendations(data_dir: Path, prepared: Prepared) -> None:
    """`compact_threshold` below the catalogue: the engine scans a float16 copy and re-ranks; same answers."""
    plain = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    compact = Engine(Settings.load(data_dir=data_dir, updater=False, compact_threshold=1), background=False)
    try:
        assert plain.serving is not None and compact.serving is not None
        assert plain.serving.index is not None and not plain.serving.index.is_compact
        assert compact.serving.index is not None and compact.serving.index.is_compact
        for user in [str(u) for u in prepared.dataset.user_map.external_ids[:40]]:
            for exclude_seen in (True, False):
                a = plain.recommend(user, k=20, exclude_seen=exclude_seen)
                b = compact.recommend(user, k=20, exclude_seen=exclude_seen)
                assert a.fallback is None and len(a.items) == 20
                assert [i for i, _ in a.items] == [i for i, _ in b.items], user
                np.testing.assert_allclose([s for _, s in a.items], [s for _, s in b.items], rtol=1e-5, atol=1e-5)
    finally:
        plain.close()
        compact.close()


def test_hnsw_setting_reaches_the_index(data_dir: Path, prepared: Prepared) -> None:
    """`ann_kind=hnsw` above `ann_threshold`: the engine builds an HNSW index and serves through it.

    The catalogue (200 items) is below the index's small-allowed-set rule, so every row is scored exactly
    over its allowed items: the answers equal the exact engine's (the graph itself: tests/retrieval).
    """
    plain = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    settings = Settings.load(data_dir=data_dir, updater=False, ann_threshold=1, ann_kind="hnsw", hnsw_ef_search=100)
    hnsw = Engine(settings, background=False)
    try:
        assert hnsw.serving is not None and hnsw.serving.index is not None
        assert hnsw.serving.index.ann_kind == "hnsw" and hnsw.retrieval == "faiss-hnsw"
        assert hnsw.serving.index.ef_search == 100
        for user in [str(u) for u in prepared.dataset.user_map.external_ids[:20]]:
            a = plain.recommend(user, k=20, exclude_seen=True)
            b = hnsw.recommend(user, k=20, exclude_seen=True)
            assert b.fallback is None and len(b.items) == 20
            assert [i for i, _ in a.items] == [i for i, _ in b.items], user
    finally:
        plain.close()
        hnsw.close()


def test_the_graph_is_built_in_the_background(data_dir: Path, prepared: Prepared) -> None:
    """An engine with background threads serves a new model from the exact index at once and swaps the HNSW graph
    in when its build is done (a build takes tens of seconds at a few hundred thousand items): the answers are
    the exact engine's before, during and after."""
    plain = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    settings = Settings.load(data_dir=data_dir, updater=False, ann_threshold=1, ann_kind="hnsw", hnsw_ef_search=100)
    live = Engine(settings, background=True)
    try:
        serving = live.serving
        assert serving is not None and serving.index is not None
        users = [str(u) for u in prepared.dataset.user_map.external_ids[:10]]
        for user in users:  # whichever index is in place at this moment
            a, b = plain.recommend(user, k=20), live.recommend(user, k=20)
            assert [i for i, _ in a.items] == [i for i, _ in b.items], user
        assert serving.ann_ready.wait(60)
        assert serving.index.ann_kind == "hnsw" and not serving.index.is_exact and live.retrieval == "faiss-hnsw"
        for user in users:
            a, b = plain.recommend(user, k=20), live.recommend(user, k=20)
            assert [i for i, _ in a.items] == [i for i, _ in b.items], user
    finally:
        plain.close()
        live.close()


def test_a_continued_version_carries_the_served_graph(data_dir: Path) -> None:
    """A new version that continues the served one's items with vectors moved a little (what an online update
    registers) is served over the previous version's HNSW graph, carried over, with the exact answers; a version
    whose items come in another order (a model trained afresh) gets a graph of its own, and exact answers too.
    (Whether moved vectors are still served well enough is the index's check: tests/retrieval/test_hnsw.py.)"""
    settings = Settings.load(data_dir=data_dir, updater=False, ann_threshold=1, ann_kind="hnsw", hnsw_ef_search=100)
    engine = Engine(settings, background=False)
    try:
        first = engine.serving
        assert first is not None and first.index is not None and not first.index_carried
        rng = np.random.default_rng(4)
        for reorder, carried in ((False, True), (True, False)):
            loaded = engine.registry.load(first.version)
            table = loaded.model._net().item_embedding.weight  # type: ignore[attr-defined]
            generator = torch.Generator().manual_seed(3)
            with torch.no_grad():
                table[1:] += 0.002 * torch.randn(table[1:].shape, generator=generator) * table[1:].std()
            item_ids = loaded.item_ids[::-1] if reorder else loaded.item_ids
            version = engine.registry.register(loaded.model, item_ids, parent=first.version)
            engine.registry.promote(version)
            assert engine.maybe_swap_model(force=True)
            serving = engine.serving
            assert serving is not None and serving.version == version and serving.index is not None
            assert serving.index.ann_kind == "hnsw" and serving.index_carried is carried
            vectors = serving.model.item_vectors()
            exact = VectorIndex(vectors, ann_threshold=len(vectors) + 1)
            histories = Histories.from_lists([rng.choice(len(vectors), 5).tolist() for _ in range(20)])
            queries = serving.model.user_vectors(histories)  # type: ignore[attr-defined]
            np.testing.assert_array_equal(serving.index.search(queries, 20)[0], exact.search(queries, 20)[0])
    finally:
        engine.close()


@pytest.mark.parametrize("graph", [False, True])
def test_a_batch_of_requests_gets_the_answers_each_gets_alone(data_dir: Path, prepared: Prepared, graph: bool) -> None:
    """`Engine.recommend_many` (what the server's batcher calls) answers each request as `recommend` does, from the
    exact index and from the HNSW graph (where a batch's rows are searched in one call, each with its own filter)."""
    retrieval = {"ann_threshold": 1, "ann_kind": "hnsw"} if graph else {}
    engine = Engine(Settings.load(data_dir=data_dir, updater=False, **retrieval), background=False)
    serving = engine.serving
    assert serving is not None and serving.index is not None and (serving.index.ann_kind == "hnsw") is graph
    try:
        users = [str(u) for u in prepared.dataset.user_map.external_ids[:24]]
        cluster = cluster_items(prepared.truth, prepared.dataset, 1, 5)
        requests = [RecommendRequest(u, k=5 + n % 11, exclude_seen=n % 3 != 0) for n, u in enumerate(users)]
        requests += [
            RecommendRequest("never-seen-user", k=7),  # popularity fallback
            RecommendRequest(None, items=cluster, k=10),  # anonymous session
            RecommendRequest(None, items=[], k=3),  # empty session
            RecommendRequest(users[0], k=10, exclude_categories=("no-such-category",)),
        ]
        together = engine.recommend_many(requests)
        for request, batched in zip(requests, together, strict=True):
            alone = engine.recommend(
                request.user_id,
                items=request.items,
                k=request.k,
                exclude_seen=request.exclude_seen,
                exclude_categories=request.exclude_categories,
            )
            assert [i for i, _ in batched.items] == [i for i, _ in alone.items], request
            np.testing.assert_allclose([s for _, s in batched.items], [s for _, s in alone.items], rtol=1e-5, atol=1e-5)
            assert (batched.fallback, batched.reason, batched.filled, batched.history_length) == (
                alone.fallback,
                alone.reason,
                alone.filled,
                alone.history_length,
            )
        assert [r.fallback for r in together[-4:-1]] == ["popularity", None, "popularity"]
        assert len({r.recommendation_id for r in together}) == len(requests)
    finally:
        engine.close()


def test_concurrent_requests_are_batched_and_answered_as_alone(server: Server, prepared: Prepared) -> None:
    users = [str(u) for u in prepared.dataset.user_map.external_ids[:32]]
    alone = {u: server.client.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json() for u in users}

    async def together() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.get(f"/v1/users/{u}/recommendations", params={"k": 10}) for u in users)
            )
        return [a.json() for a in answers]

    for user, answer in zip(users, asyncio.run(together()), strict=True):
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in alone[user]["items"]], user
    metrics = server.client.get("/metrics").text
    served = float(
        next(
            line.split()[1] for line in metrics.splitlines() if line.startswith("liverec_recommendation_batch_size_sum")
        )
    )
    assert served == 2 * len(users), "every recommendation went through the batcher, none twice"
