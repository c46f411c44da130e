"""Access control end to end: keys made by `liverec keys`, a real `liverec serve`, a real HTTP client.

Each scope against each class of route (401 without a key or with an unknown one, 403 with the wrong scope,
the route's own answer with the right one), revocation seen within a second on both backends, the audit
trail, the refusal to serve a public address with no key, cross-site bodies (415), CORS and rate limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import Server

SCOPES = ("ingest", "read", "catalog", "admin")


def liverec(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liverec.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def create_key(server: Server, name: str, scopes: str) -> str:
    """`liverec keys create` on the server's folder (and Redis); the key is the last line of stdout."""
    done = liverec(
        "keys", "create", "--data-dir", str(server.data_dir), "--name", name, "--scopes", scopes, env=server.env
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("lrk_") and len(key) > 40
    return key


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> float:
    """Seconds until ``check()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - started


def routes(item_id: str, version: str, recommendation_id: str) -> list[tuple[str, str, str, object]]:
    """(scope, method, path, json body) for every class of route; each call succeeds when admitted."""
    fresh = f"auth-item-{uuid.uuid4().hex[:6]}"
    return [
        ("ingest", "POST", "/v1/events", {"user_id": "auth-u", "item_id": item_id, "type": "view"}),
        ("read", "GET", "/v1/users/auth-u/recommendations", None),
        ("read", "POST", "/v1/recommendations", {"items": [item_id]}),
        ("read", "GET", f"/v1/items/{item_id}/similar", None),
        ("read", "GET", f"/v1/recommendations/{recommendation_id}", None),
        ("read", "GET", f"/v1/items/{item_id}", None),
        ("read", "GET", "/v1/models", None),
        ("read", "GET", "/metrics", None),
        ("catalog", "PUT", f"/v1/items/{fresh}", {"title": "t"}),
        ("catalog", "DELETE", f"/v1/items/{fresh}", None),
        ("admin", "GET", "/v1/keys", None),
        ("admin", "POST", f"/v1/models/{version}/promote", None),
        ("admin", "DELETE", "/v1/users/auth-nobody", None),
    ]


def call(client: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return (
        client.request(method, path, json=body, headers=headers)
        if body is not None
        else client.request(method, path, headers=headers)
    )


def test_scopes_by_route_class_and_revocation(server: Server) -> None:
    client = server.client
    first = client.get("/v1/users/x/recommendations").json()
    item_id, recommendation_id = first["items"][0]["item_id"], first["recommendation_id"]
    version = client.get("/v1/models").json()["serving"]
    # no key yet: every route is open
    assert client.get("/v1/models").status_code == 200

    keys = {scope: create_key(server, f"k-{scope}", scope) for scope in SCOPES}
    waited = wait_for(lambda: client.get("/v1/models").status_code == 401)
    assert waited < 1.5, f"a new key took {waited:.2f} s to take effect"
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200

    for scope, method, path, body in routes(item_id, version, recommendation_id):
        for header in ({}, {"Authorization": "Bearer lrk_000000000000_nope"}, {"X-API-Key": "garbage"}):
            answer = call(client, method, path, body, header)
            assert answer.status_code == 401, (method, path, header, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        for holder, key in keys.items():
            # the Bearer header for two of the keys, X-API-Key for the others: both are accepted
            header = {"Authorization": f"Bearer {key}"} if holder in ("read", "admin") else {"X-API-Key": key}
            answer = call(client, method, path, body, header)
            if holder == scope or holder == "admin":
                assert answer.status_code < 300, (holder, method, path, answer.text)
            else:
                assert answer.status_code == 403, (holder, method, path, answer.text)
                assert scope in answer.json()["detail"]

    # revocation: the key stops working within a second, on this backend's store
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    done = liverec("keys", "revoke", "--data-dir", str(server.data_dir), "k-read", env=server.env)
    assert done.returncode == 0, done.stderr
    read = {"Authorization": f"Bearer {keys['read']}"}
    waited = wait_for(lambda: client.get("/v1/models", headers=read).status_code == 401)
    assert waited < 1.5
    assert client.get("/v1/models", headers=admin).status_code == 200
    listed = liverec("keys", "list", "--data-dir", str(server.data_dir), "--json", env=server.env)
    assert {key["name"] for key in json.loads(listed.stdout)["keys"]} == {"k-ingest", "k-catalog", "k-admin"}
    assert keys["admin"] not in (server.data_dir / "keys.json").read_text(), "only a hash is stored"

    # keys over HTTP (admin): create, use, revoke
    made = client.post("/v1/keys", json={"name": "http-read", "scopes": ["read"]}, headers=admin)
    assert made.status_code == 201, made.text
    http_key = {"X-API-Key": made.json()["key"]}
    wait_for(lambda: client.get("/v1/models", headers=http_key).status_code == 200)
    assert client.post("/v1/keys", json={"name": "http-read", "scopes": ["read"]}, headers=admin).status_code == 409
    assert client.delete("/v1/keys/http-read", headers=admin).status_code == 204
    assert client.delete("/v1/keys/http-read", headers=admin).status_code == 404
    wait_for(lambda: client.get("/v1/models", headers=http_key).status_code == 401)


def test_admin_actions_are_audited(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        admin = create_key(server, "ops", "admin")
        reader = create_key(server, "viewer", "read")
        version = server.client.get("/v1/models", headers={"X-API-Key": reader}).json()["serving"]
        wait_for(lambda: server.client.get("/v1/models").status_code == 401)
        assert server.client.post(f"/v1/models/{version}/promote", headers={"X-API-Key": admin}).status_code == 200
        assert server.client.post("/v1/models/rollback", headers={"X-API-Key": reader}).status_code == 403
        assert server.client.post("/v1/models/v9999/promote", headers={"X-API-Key": admin}).status_code == 404
    finally:
        server.stop()
    records = [json.loads(line) for line in (data_dir / "audit.jsonl").read_text().splitlines()]
    assert [(r["actor"], r["action"], r["status"]) for r in records] == [
        ("cli:" + records[0]["actor"].split(":", 1)[1], "keys create", "ok"),
        (records[1]["actor"], "keys create", "ok"),
        ("ops", "POST /v1/models/{version}/promote", "ok"),
        ("viewer", "POST /v1/models/rollback", 403),
        ("ops", "POST /v1/models/{version}/promote", 404),
    ]
    assert records[2]["target"] == f"version={version}" and records[4]["target"] == "version=v9999"
    assert all(isinstance(r["time"], float) for r in records)


def test_serve_refuses_a_public_address_without_a_key(data_dir: Path) -> None:
    done = liverec("serve", "--data-dir", str(data_dir), "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "liverec keys create" in lines[0] and "--no-auth" in lines[0], done.stderr


def test_no_auth_serves_a_public_address_and_says_so(data_dir: Path) -> None:
    server = Server(data_dir, {"LIVEREC_AUTH": "false", "LIVEREC_HOST": "0.0.0.0"})
    try:
        create_key(server, "ignored", "read")
        time.sleep(1.2)
        assert server.client.get("/v1/models").status_code == 200, "auth = false: keys are not asked for"
    finally:
        server.stop()
    assert "access control is OFF" in server.output()


def test_cross_site_bodies_get_415_and_cors_is_off_by_default(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        client = server.client
        event = json.dumps({"user_id": "csrf", "item_id": "1", "type": "view"})
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            answer = client.post("/v1/events", content=event, headers={"content-type": content_type})
            assert answer.status_code == 415, answer.text
            assert content_type.split(";")[0] in answer.json()["detail"]
        assert client.post("/v1/models/rollback", content="", headers={"content-type": "text/plain"}).status_code == 415
        assert client.post("/v1/events", content=event).status_code == 415  # a body must say what it is
        assert (
            client.put("/v1/items/x", content='{"title": "t"}', headers={"content-type": "text/plain"}).status_code
            == 415
        )
        ndjson = {"content-type": "application/x-ndjson"}
        assert client.put("/v1/items/x", content='{"title": "t"}', headers=ndjson).status_code == 415
        assert client.post("/v1/events", content=event, headers=ndjson).status_code == 200
        assert (
            client.post(
                "/v1/events", content=event, headers={"content-type": "application/json; charset=utf-8"}
            ).status_code
            == 200
        )
        assert client.get("/v1/users/csrf").status_code == 200
        # CORS is off: no allow-origin header, and a preflight is not granted
        origin = {"Origin": "https://evil.example"}
        assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
        preflight = client.options("/v1/events", headers={**origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        server.stop()


def test_cors_allow_list(data_dir: Path) -> None:
    server = Server(data_dir, {"LIVEREC_CORS_ORIGINS": '["https://shop.example"]'})
    try:
        allowed = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
        preflight = server.client.options(
            "/v1/events", headers={**allowed, "Access-Control-Request-Headers": "authorization,content-type"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = server.client.options("/v1/events", headers={**allowed, "Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        get = server.client.get("/v1/models", headers={"Origin": "https://shop.example"})
        assert get.headers["access-control-allow-origin"] == "https://shop.example"
    finally:
        server.stop()


def test_rate_limit_per_key(data_dir: Path) -> None:
    server = Server(data_dir, {"LIVEREC_RATE_LIMIT_PER_S": "2", "LIVEREC_RATE_LIMIT_BURST": "3"})
    try:
        one, two = create_key(server, "one", "read"), create_key(server, "two", "read")
        wait_for(lambda: server.client.get("/v1/models").status_code == 401)
        codes = [server.client.get("/v1/models", headers={"X-API-Key": one}).status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
        refused = server.client.get("/v1/models", headers={"X-API-Key": one})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "rate limit" in refused.json()["detail"]
        assert server.client.get("/v1/models", headers={"X-API-Key": two}).status_code == 200, "buckets are per key"
        time.sleep(1.1)
        assert server.client.get("/v1/models", headers={"X-API-Key": one}).status_code == 200, "the bucket refills"
    finally:
        server.stop()


def test_keys_command_errors_are_one_line(tmp_path: Path) -> None:
    bad_scope = liverec("keys", "create", "--data-dir", str(tmp_path), "--name", "x", "--scopes", "read,root")
    assert bad_scope.returncode == 2 and bad_scope.stderr.count("\n") == 1 and "root" in bad_scope.stderr
    assert liverec("keys", "create", "--data-dir", str(tmp_path), "--name", "x", "--scopes", "read").returncode == 0
    again = liverec("keys", "create", "--data-dir", str(tmp_path), "--name", "x", "--scopes", "read")
    assert again.returncode == 2 and "exists" in again.stderr
    missing = liverec("keys", "revoke", "--data-dir", str(tmp_path), "nobody")
    assert missing.returncode == 2 and "nobody" in missing.stderr
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_key_store_verifies_in_constant_form(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    from liverec.access import KeyStore
    from liverec.events.redis_log import redis_client

    client = redis_client(request.getfixturevalue("redis_url")) if backend == "redis" else None
    prefix = request.getfixturevalue("redis_prefix") if backend == "redis" else "p"
    store = KeyStore(tmp_path, client=client, redis_key=f"{prefix}:keys")
    assert not store.enabled()
    key, token = store.create("a", frozenset({"read"}))
    other = KeyStore(tmp_path, client=client, redis_key=f"{prefix}:keys")  # another replica
    assert other.verify(token) == key and other.enabled()
    assert other.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert other.verify(token.replace(key.key_id, "0" * 12)) is None
    assert other.verify("") is None and other.verify("lrk__") is None
    assert store.revoke("a") and not store.revoke("a")
    assert KeyStore(tmp_path, client=client, redis_key=f"{prefix}:keys").verify(token) is None
