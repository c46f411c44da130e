"""Regenerate the dashboard's screenshots in docs/img (``ui_overview.png``, ``ui_models.png``, ``ui_user.png``,
``ui_items.png``, ``ui_evaluation.png``) from the current code.

A small synthetic folder (the tests' planted structure: 300 users, 200 items; 80 % of the stream imported, a
SASRec served and an ItemKNN registered beside it), a real `liverec serve` with an admin key, the rest of the
stream posted while the overview is open (so its rates move), and Debian's ``chromium`` through Playwright.
The user page is shown after one click on its first recommendation, the items page on the most popular item.

    python benchmarks/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from playwright.sync_api import Page, sync_playwright

from bench_dashboard import CHROMIUM, CHROMIUM_ARGS
from bench_serving import start_server
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

CONFIG = SyntheticConfig(n_users=300, n_items=200, n_events=12_000, n_clusters=5, drift=False, p_sequential=0.2, seed=3)


def build(data_dir: Path) -> list[dict[str, object]]:
    """Import 80 % of the stream, serve a SASRec, register an ItemKNN; the remaining events, to post live."""
    dataset, _ = generate(CONFIG)
    inter = dataset.interactions
    n_past = int(len(inter) * 0.8)
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        import_dataset(dataset, event_log, source="synthetic", event_types=DEFAULT_EVENT_WEIGHTS, limit=n_past)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    registry = ModelRegistry(data_dir / "models")
    train_and_register(data, registry, "sasrec", {"max_epochs": 15, "patience": 3})
    train_and_register(data, registry, "itemknn", promote=False)
    users = dataset.user_map.to_external(inter.user_ids[n_past:])
    items = dataset.item_map.to_external(inter.item_ids[n_past:])
    return [{"user_id": str(u), "item_id": str(i), "type": "click"} for u, i in zip(users, items, strict=True)]


def traffic(url: str, key: str, events: list[dict[str, object]], stop: threading.Event) -> None:
    """Post the live events in small batches and ask for recommendations, about 10 times a second."""
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for start in range(0, len(events), 20):
            if stop.is_set():
                return
            client.post("/v1/events", json=events[start : start + 20])
            for _ in range(int(rng.integers(3, 8))):
                client.get(f"/v1/users/u{int(rng.integers(300))}/recommendations", params={"k": 10})
            time.sleep(0.1)


def shoot(page: Page, url: str, name: str, out: Path, settle_ms: int = 600) -> None:
    page.goto(f"{url}/ui/#{name}")
    page.wait_for_selector(f'body[data-loaded="{name}"]', timeout=20_000)
    page.wait_for_timeout(settle_ms)
    if name == "user":
        page.locator("#user-results .pick").nth(1).click()
        page.wait_for_selector('#recs[data-generation="1"]')
        page.locator("#recs li").first.locator("[data-action=click]").click()
        page.wait_for_selector('#recs[data-generation="2"]')
    elif name == "items":
        page.locator("#item-results .pick").first.click()
        page.wait_for_selector("#similar li .pick")
    page.wait_for_timeout(300)
    page.screenshot(path=out / f"ui_{name}.png", full_page=False)
    print(f"wrote {out / f'ui_{name}.png'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        live_events = build(data_dir)
        process, url = start_server(data_dir)
        stop = threading.Event()
        try:
            created = subprocess.run(
                [sys.executable, "-m", "liverec.cli", "keys", "create", "--data-dir", str(data_dir), "--name", "ui",
                 "--scopes", "admin"],
                capture_output=True, text=True, check=True, env=os.environ.copy(),
            )  # fmt: skip
            key = created.stdout.strip().splitlines()[-1]
            time.sleep(1.5)  # a new key reaches the server within a second
            sender = threading.Thread(target=traffic, args=(url, key, live_events, stop), daemon=True)
            sender.start()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1360, "height": 860})
                page.goto(f"{url}/ui/#key={key}")
                shoot(page, url, "overview", args.out, settle_ms=12_000)  # the sparklines fill with the live rates
                for name in ("models", "user", "items", "evaluation"):
                    shoot(page, url, name, args.out)
                browser.close()
        finally:
            stop.set()
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
