"""The dashboard at ``/ui`` in a real browser, and the routes it reads, over real HTTP.

A real `liverec serve` (the prepared synthetic folder, a second model version registered beside the served one,
access control on with a read key, a read + ingest key and an admin key) and Debian's ``chromium`` driven by
Playwright. The browser tests pick a user and click an item (the list must change), try to promote with a read
key (refused, the served version unchanged), toggle an item's availability, and open every page (each must show
its data); a screenshot of each page is saved in the test's folder. ``chromium`` missing is a failure, not a
skip: ``.ci/run`` installs it. The routes the pages read (``/v1/stats``, the item and user searches) are checked
over HTTP, the searches on both backends (SQLite ``LIKE`` and Redis ``HSCAN`` patterns take the query literally).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from liverec.events.log import SQLiteEventLog
from liverec.pipeline import read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

from .conftest import Prepared, Server
from .test_auth import create_key

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
#: Chromium as the tests run it: headless, no sandbox (root in CI), nothing fetched from the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = ("overview", "models", "user", "items", "evaluation")


@dataclass(frozen=True)
class Dashboard:
    server: Server
    read_key: str
    feedback_key: str  # read + ingest: what the user page's buttons need
    admin_key: str

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def dashboard(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """One server for the module: the prepared folder plus an ItemKNN version registered, not promoted."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    shutil.copytree(prepared.data_dir, data_dir)
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(data_dir / "models"), "itemknn", promote=False)
    server = Server(data_dir)
    try:
        keys = [
            create_key(server, name, scopes) for name, scopes in (("r", "read"), ("f", "read,ingest"), ("a", "admin"))
        ]
        yield Dashboard(server, *keys)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser: Browser, dashboard: Dashboard, key: str, page_name: str) -> Page:
    """A fresh browser page on ``/ui``, the key entered once in its form, then ``page_name`` with its data."""
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{dashboard.server.url}/ui/")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-status")).to_have_text("key accepted")
    page.goto(f"{dashboard.server.url}/ui/#{page_name}")
    page.wait_for_selector(f'body[data-loaded="{page_name.split("/")[0]}"]')
    assert not errors, errors
    return page


def test_ui_is_static_and_outside_the_api(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.server.url) as client:  # no key: the page itself is public
        index = client.get("/ui/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert 'src="app.js"' in index.text and "http" not in index.text.split("<body>")[0]  # nothing from outside
        for asset in ("app.js", "charts.js", "style.css"):
            assert client.get(f"/ui/{asset}").status_code == 200
        assert client.get("/v1/stats").status_code == 401  # its data is not
        refused = client.post("/ui/app.js", json={})
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        paths = client.get("/openapi.json", headers={"Authorization": f"Bearer {dashboard.read_key}"}).json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]
    assert {"/v1/stats", "/v1/items", "/v1/users"} <= set(paths)


def test_stats_counts_events_and_recommendations_between_two_readings(dashboard: Dashboard) -> None:
    with dashboard.client(dashboard.admin_key) as client:
        first = client.get("/v1/stats").json()
        for n in range(5):
            assert client.get(f"/v1/users/u{n}/recommendations", params={"k": 5}).status_code == 200
        stored = client.post("/v1/events", json=[{"user_id": "stats-user", "item_id": "i1", "type": "click"}] * 3)
        assert stored.status_code == 200
        time.sleep(0.1)  # readings closer than 50 ms apart give no rates (StatsWindow.read)
        second = client.get("/v1/stats").json()
        models = client.get("/v1/models").json()
    assert second["window_s"] > 0
    assert second["log_offset"] >= first["log_offset"] + 3
    assert second["events_in_log"] >= first["events_in_log"] + 3
    assert second["events_per_s"] is not None and second["events_per_s"] > 0
    assert second["recommendations_per_s"] is not None and second["recommendations_per_s"] > 0
    assert second["recommendation_p99_ms"] is not None and second["recommendation_p99_ms"] > 0
    assert second["model_version"] == models["serving"]
    assert second["users"] == first["users"] + 1 and second["items"] == first["items"]  # stats-user is new
    assert second["model_age_s"] >= 0 and second["updater_lag_events"] >= 3


def test_item_and_user_searches(dashboard: Dashboard) -> None:
    with dashboard.client(dashboard.read_key) as client:
        by_title = client.get("/v1/items", params={"q": "item 12", "limit": 5}).json()["items"]
        popular = client.get("/v1/items", params={"limit": 3}).json()["items"]
        users = client.get("/v1/users", params={"q": "u1", "limit": 7}).json()
        too_many = client.get("/v1/items", params={"limit": 101})
        too_long = client.get("/v1/users", params={"q": "x" * 257})
    assert [item["title"] for item in by_title] == ["Item 12", "Item 120", "Item 121", "Item 122", "Item 123"]
    counts = [item["stats"]["popularity"] for item in popular]
    assert len(popular) == 3 and counts == sorted(counts, reverse=True)
    assert len(users["user_ids"]) == 7 and all(user.startswith("u1") for user in users["user_ids"])
    assert users["pseudonymised"] is False
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["query", "q"]


def test_pick_a_user_click_an_item_and_the_list_changes(browser: Browser, dashboard: Dashboard, tmp_path: Path) -> None:
    page = open_page(browser, dashboard, dashboard.feedback_key, "user")
    page.locator("#user-results .pick").first.click()
    user_id = page.locator("#user-id").inner_text()
    recs = page.locator("#recs")
    expect(recs).to_have_attribute("data-generation", "1")
    before = recs.get_attribute("data-items").split(",")  # type: ignore[union-attr]
    assert len(before) == 10
    expect(page.locator("#recs li .why").first).to_contain_text("Because you")  # the explanation is shown
    page.locator("#recs li").first.locator("[data-action=click]").click()
    expect(recs).to_have_attribute("data-generation", "2")
    after = recs.get_attribute("data-items").split(",")  # type: ignore[union-attr]
    assert after != before and before[0] not in after  # a clicked item is seen: it leaves the list
    expect(page.locator("#changed")).to_contain_text("The list changed")
    expect(page.locator("#history li").first).to_have_attribute("data-item", before[0])
    page.screenshot(path=tmp_path / "ui_user.png", full_page=True)
    with dashboard.client(dashboard.read_key) as client:
        assert client.get(f"/v1/users/{user_id}").json()["recent_items"][-1] == before[0]

    # an anonymous session: a new id, the popular items, then a list of its own after one purchase
    page.click("#anonymous")
    expect(recs).to_have_attribute("data-generation", "1")
    expect(page.locator("#changed")).to_contain_text("popularity")
    first = recs.get_attribute("data-items").split(",")  # type: ignore[union-attr]
    page.locator("#recs li").nth(2).locator("[data-action=purchase]").click()
    expect(recs).to_have_attribute("data-generation", "2")
    assert recs.get_attribute("data-items").split(",") != first  # type: ignore[union-attr]
    page.close()


def test_a_read_key_cannot_promote(browser: Browser, dashboard: Dashboard, tmp_path: Path) -> None:
    with dashboard.client(dashboard.read_key) as client:
        served = client.get("/v1/models").json()["serving"]
    page = open_page(browser, dashboard, dashboard.read_key, "models")
    promote = page.locator("[data-promote]")
    expect(promote).to_have_count(1)  # the version not served
    promote.click()
    expect(page.locator("#models-feedback")).to_contain_text("Refused (403)")
    expect(page.locator("#models-feedback")).to_contain_text("needs 'admin'")
    page.click("#rollback")
    expect(page.locator("#models-feedback")).to_contain_text("Refused (403)")
    page.screenshot(path=tmp_path / "ui_models_refused.png", full_page=True)
    page.close()
    with dashboard.client(dashboard.read_key) as client:
        assert client.get("/v1/models").json()["serving"] == served


def test_catalog_key_toggles_availability(browser: Browser, dashboard: Dashboard) -> None:
    page = open_page(browser, dashboard, dashboard.admin_key, "items")
    page.fill("#item-search", "Item 150")
    expect(page.locator("#item-results .pick")).to_have_count(1)
    page.locator("#item-results .pick").first.click()
    expect(page.locator("#similar li .pick").first).to_be_visible()
    expect(page.locator("#available")).to_have_text("yes")
    page.click("#availability")
    expect(page.locator("#available")).to_have_text("no")
    with dashboard.client(dashboard.read_key) as client:
        assert client.get("/v1/items/i150").json()["available"] is False
    page.click("#availability")
    expect(page.locator("#available")).to_have_text("yes")
    page.close()


@pytest.mark.parametrize("page_name", PAGES)
def test_every_page_shows_its_data(browser: Browser, dashboard: Dashboard, page_name: str, tmp_path: Path) -> None:
    page = open_page(browser, dashboard, dashboard.read_key, page_name)
    with dashboard.client(dashboard.read_key) as client:
        models = client.get("/v1/models").json()
    if page_name == "overview":
        expect(page.locator("#stat-model .value")).to_have_text(models["serving"])
        expect(page.locator("#stat-items .value")).to_have_text("200")
    elif page_name == "models":
        expect(page.locator("#models-table tbody tr")).to_have_count(len(models["versions"]))
    elif page_name == "user":
        expect(page.locator("#user-results .pick")).to_have_count(20)
    elif page_name == "items":
        expect(page.locator("#item-results .pick")).to_have_count(20)
    else:
        expect(page.locator("#evaluation-table tbody tr")).to_have_count(len(models["versions"]))
        expect(page.locator("#evaluation-chart svg rect")).to_have_count(2 * len(models["versions"]))
    page.screenshot(path=tmp_path / f"ui_{page_name}.png", full_page=True)
    page.close()


def test_searches_read_the_same_on_both_backends(server: Server) -> None:
    """``server``: no key on it (none made), the prepared folder on SQLite or copied into Redis."""
    server.client.put("/v1/items/only_%_odd", json={"title": "Odd_item 100%", "categories": ["c"]})
    by_title = server.client.get("/v1/items", params={"q": "item 17", "limit": 20}).json()["items"]
    literal = server.client.get("/v1/items", params={"q": "_%", "limit": 5}).json()["items"]  # not wildcards
    users = server.client.get("/v1/users", params={"q": "u2", "limit": 100}).json()["user_ids"]
    pattern = server.client.get("/v1/users", params={"q": "u*", "limit": 5}).json()["user_ids"]  # not a glob
    assert sorted(item["title"] for item in by_title) == ["Item 17", *[f"Item {n}" for n in range(170, 180)]]
    assert [item["item_id"] for item in literal] == ["only_%_odd"]
    assert users and all(user.startswith("u2") for user in users)
    assert {"u2", "u200"} <= set(users) and pattern == []
