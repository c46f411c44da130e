"""Dashboard benchmark (issue 21): time to first data of each page at 100k items, and serving with the
dashboard mounted against serving without it, in the same run.

A data folder of ``--items`` items is built as ``bench_serving.py`` builds one (synthetic events imported,
SASRec trained briefly). Then:

* pages: a real ``liverec serve`` and Debian's ``chromium`` (Playwright); each page is opened ``--repeats``
  times in a fresh browser page and timed from ``goto`` to ``<body data-loaded="PAGE">`` (the page's first data
  on screen; the key was entered once before), median and worst reported; ``GET /v1/stats`` and the searches
  are also timed alone over HTTP (median of 20);
* serving cost: recommendation load (``bench_serving``'s client: wrk when installed, else httpx) on a server
  with the ``ui`` setting on and one with it off, alternated ``--runs`` times, nobody having the page open;
  median requests/s and latency per arm.

Prints one JSON object. ``--quick``: 2k items and short runs (a smoke check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from bench_serving import build, http_load, start_server, wrk_load

CHROMIUM = "/usr/bin/chromium"
#: Chromium as the benchmarks run it (benchmarks/screenshots.py too): headless, no sandbox (root), nothing fetched
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


def time_pages(url: str, repeats: int) -> dict[str, Any]:
    """Seconds from navigation to each page's first data, ``repeats`` times per page, in fresh pages."""
    out: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        for page_name in PAGES:
            times = []
            for _ in range(repeats):
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{url}/ui/#{page_name}")
                page.wait_for_selector(f'body[data-loaded="{page_name}"]', timeout=30_000)
                times.append(time.perf_counter() - started)
                page.close()
            out[page_name] = {
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
            }
        browser.close()
    return out


def time_routes(url: str) -> dict[str, Any]:
    """Median latency of the dashboard's own routes over HTTP (20 calls each)."""
    paths = {
        "GET /v1/stats": "/v1/stats",
        "GET /v1/items (popular)": "/v1/items?limit=20",
        "GET /v1/items?q=": "/v1/items?q=99&limit=20",
        "GET /v1/users?q=": "/v1/users?q=1&limit=20",
        "GET /v1/models": "/v1/models",
    }
    out = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, path in paths.items():
            times = []
            for _ in range(20):
                started = time.perf_counter()
                response = client.get(path)
                times.append(time.perf_counter() - started)
                response.raise_for_status()
            out[name] = {"median_ms": round(statistics.median(times) * 1000, 2)}
    return out


def load(url: str, users: list[str], args: argparse.Namespace, root: Path) -> dict[str, Any]:
    if shutil.which("wrk"):
        return wrk_load(url, users, args.concurrency, args.duration, root)
    return asyncio.run(http_load(url, users, args.concurrency, args.duration))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=300_000, help="at least 15 per item")
    parser.add_argument("--repeats", type=int, default=5, help="page loads per page")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of recommendation load per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="load runs per arm (ui on, ui off), alternated")
    parser.add_argument("--quick", action="store_true", help="small setting: 2k items, short runs")
    parser.add_argument("--keep", type=Path, help="keep the built data folder here and reuse it")
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.events, args.repeats, args.duration, args.runs = 2_000, 2_000, 40_000, 2, 3.0, 1
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    root = args.keep or Path(tempfile.mkdtemp(prefix="liverec-bench-dashboard-"))
    try:
        data_dir, users, _, info = build(root, args.users, args.items, args.events)
        process, url = start_server(data_dir)
        try:
            pages = time_pages(url, args.repeats)
            routes = time_routes(url)
        finally:
            process.terminate()
            process.wait(timeout=30)
        runs: dict[str, list[dict[str, Any]]] = {"ui_on": [], "ui_off": []}
        for _ in range(args.runs):
            for arm, setting in (("ui_on", "true"), ("ui_off", "false")):
                process, url = start_server(data_dir, {"LIVEREC_UI": setting})
                try:
                    mounted = httpx.get(f"{url}/ui/", timeout=10).status_code
                    if mounted != (200 if setting == "true" else 404):
                        raise RuntimeError(f"LIVEREC_UI={setting}: GET /ui/ answered {mounted}")
                    run = load(url, users, args, root)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                if run["errors"]:
                    raise RuntimeError(f"{run['errors']} failed requests with {arm}")
                runs[arm].append(run)
        serving = {
            arm: {
                "runs": len(results),
                "client": results[0]["client"],
                "requests_per_s": statistics.median(r["requests_per_s"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": statistics.median(r["p99_ms"] for r in results),
                "each_requests_per_s": [r["requests_per_s"] for r in results],
            }
            for arm, results in runs.items()
        }
        print(
            json.dumps(
                {
                    "benchmark": "dashboard",
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
                    "data": {"items": args.items, "users": args.users, **info},
                    "time_to_first_data": pages,
                    "routes": routes,
                    "serving_ui_on_vs_off": serving,
                },
                indent=2,
            )
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
