"""Running the API: logging set-up, uvicorn in the foreground (``liverec serve``) or in a thread (demo)."""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import uvicorn

from liverec.access import open_key_store
from liverec.backends import Backend, open_backend
from liverec.errors import UsageError
from liverec.serving.app import create_app
from liverec.serving.engine import Engine
from liverec.settings import Settings

logger = logging.getLogger(__name__)

#: Environment variable through which serve tells its updater child who its parent is.
PARENT_PID = "_LIVEREC_PARENT_PID"


def configure_logging(settings: Settings) -> None:
    """Structured JSON lines (or plain text) on stderr for LiveRec and uvicorn alike."""
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": sys.stderr, "formatter": "default"}},
            "root": {"handlers": ["stderr"], "level": settings.log_level},
            "loggers": {
                "uvicorn": {"handlers": ["stderr"], "level": settings.log_level, "propagate": False},
                "uvicorn.error": {"handlers": ["stderr"], "level": settings.log_level, "propagate": False},
                "uvicorn.access": {
                    "handlers": ["stderr"],
                    "level": settings.log_level if settings.access_log else "WARNING",
                    "propagate": False,
                },
            },
        }
    )


def _uvicorn_config(settings: Settings, engine: Engine, own_engine: bool) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(engine, own_engine=own_engine),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep ours
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings) -> None:
    """``liverec serve``: print the effective settings, open the data folder, serve until stopped.

    With the ``updater`` setting (default) the online updater runs beside it as a child process
    (``liverec worker`` on the same folder and settings), stopped when the server stops.
    """
    configure_logging(settings)
    check_access(settings)
    logger.info("settings", extra={"settings": settings.describe()})
    print(json.dumps({"liverec_settings": settings.describe()}), file=sys.stderr, flush=True)
    engine = Engine(settings)
    freeze_startup_heap()
    serving = engine.serving
    set_switch_interval(switch_interval_ms(settings, len(serving.item_ids) if serving is not None else 0))
    worker = start_worker_process(settings) if settings.updater else None
    try:
        uvicorn.Server(_uvicorn_config(settings, engine, own_engine=True)).run()
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def freeze_startup_heap() -> int:
    """Move every object the collector tracks now (the loaded state, catalogue, model and modules) out of its reach
    (``gc.freeze``); returns how many. A full collection walks every tracked object while it holds the GIL, so
    every request waits for it: at a million items and 250,000 users (881k objects, most of them the users' history
    arrays) one took 350 ms, and such pauses showed as a 224 ms p99 in a 20 s load run (docs/results.md, "Session
    33"). Frozen objects are never collected as part of a cycle; reference counting still frees the rest, so what
    could leak is cyclic garbage among what exists at start-up, once. Objects made later (new users, a new model
    version, the background index) are collected as usual."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("froze the start-up heap for the collector", extra={"objects": frozen})
    return frozen


#: the switch interval ``liverec serve`` sets where the served catalogue is searched through the HNSW graph
GRAPH_SWITCH_INTERVAL_MS = 1.0


def switch_interval_ms(settings: Settings, n_items: int) -> float | None:
    """The interpreter switch interval ``liverec serve`` sets for a served catalogue of ``n_items`` (None: leave
    Python's own, 5 ms): ``switch_interval_ms`` where set, else :data:`GRAPH_SWITCH_INTERVAL_MS` where the graph will
    answer (``ann_kind`` hnsw, ``n_items`` ≥ ``ann_threshold``). Decided once, at start-up.

    A scoring thread drops the GIL in every FAISS and torch call and must win it back to go on, while the event loop
    and the other scoring thread run Python; at 5 ms each return can wait up to 5 ms. A graph search is many short
    calls: at a million items 1 ms answered more requests than 5 in each of nine paired runs (+7 % on the median,
    p99 26 against 28.5 ms). The exact float16 scan of 100k items makes fewer, longer calls, and there 1 ms answered
    fewer in seven of nine (about −4 %; docs/results.md, "Session 35")."""
    if settings.switch_interval_ms is not None:
        return settings.switch_interval_ms
    graph = settings.ann_kind == "hnsw" and n_items >= settings.ann_threshold
    return GRAPH_SWITCH_INTERVAL_MS if graph else None


def set_switch_interval(milliseconds: float | None) -> None:
    """``sys.setswitchinterval`` in milliseconds (None: leave it); logs the interval in effect."""
    if milliseconds is not None:
        sys.setswitchinterval(milliseconds / 1000)
    logger.info("interpreter switch interval set", extra={"switch_interval_ms": sys.getswitchinterval() * 1000})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_access(settings: Settings) -> None:
    """Refuse to serve a public address with no API key; say loudly when access control is off."""
    if not settings.auth:
        logger.warning(
            "access control is OFF (--no-auth / auth = false): anyone who can reach the port may "
            "post events, change the catalogue, promote models and erase users"
        )
        return
    if not is_loopback(settings.host) and not open_key_store(settings).enabled():
        raise UsageError(
            f"--host {settings.host}: refusing to serve a non-loopback address with no API key; create one with "
            f"`liverec keys create --data-dir {settings.data_dir} --name admin --scopes admin` (or pass --no-auth)"
        )


def worker_environment(settings: Settings) -> dict[str, str]:
    """``LIVEREC_*`` variables that give a child process exactly these settings (an unset one is ``none``)."""
    env: dict[str, str] = {}
    for name, value in settings.describe().items():
        text = "none" if value is None else json.dumps(value) if isinstance(value, dict | list) else str(value)
        env[f"LIVEREC_{name.upper()}"] = text
    if settings.pseudonym_secret is not None:  # describe() shows it redacted: the child gets the secret itself
        env["LIVEREC_PSEUDONYM_SECRET"] = settings.pseudonym_secret.get_secret_value()
    return env


def start_worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    """``liverec worker`` for the same data folder, with exactly these settings (passed as ``LIVEREC_*``)."""
    env = {**os.environ, **worker_environment(settings), PARENT_PID: str(os.getpid())}
    command = [sys.executable, "-m", "liverec.cli", "worker", "--data-dir", str(settings.data_dir)]
    process = subprocess.Popen(command, env=env)
    logger.info("updater started", extra={"pid": process.pid})
    return process


def run_worker(settings: Settings, backend: Backend | None = None) -> None:
    """``liverec worker``: the backend's worker loop (the updater; with Redis also the state applier) until
    SIGTERM / Ctrl-C, or until ``serve`` is gone when it is serve's child. ``backend``: the one to use (left
    open), else the configured one."""
    configure_logging(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.environ.get(PARENT_PID)
    if parent is not None:  # a child of serve: stop when serve is gone, even after a kill -9

        def watch_parent() -> None:
            while not stop.wait(1.0):
                if os.getppid() != int(parent):
                    logger.warning("serve is gone; the updater stops")
                    stop.set()

        threading.Thread(target=watch_parent, name="liverec-parent-watch", daemon=True).start()
    from liverec.online.worker import run_worker as run_backend_worker

    if backend is not None:
        run_backend_worker(backend, stop)
        return
    with open_backend(settings) as opened:
        run_backend_worker(opened, stop)


class BackgroundServer:
    """The API in a daemon thread of this process (the demo); ``url`` is known once started."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.engine = engine
        self.server = uvicorn.Server(_uvicorn_config(settings, engine, own_engine=False))
        self.thread = threading.Thread(target=self.server.run, name="liverec-http", daemon=True)

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (is the port in use?)")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
