"""Running the API: logging set-up, uvicorn in the foreground (``liverec serve``) or in a thread (demo)."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import time
from typing import Any

import uvicorn

from liverec.serving.app import create_app
from liverec.serving.engine import Engine
from liverec.settings import Settings

log = logging.getLogger("liverec.server")


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
    """``liverec serve``: print the effective settings, open the data folder, serve until stopped."""
    configure_logging(settings)
    log.info("settings", extra={"settings": settings.describe()})
    print(json.dumps({"liverec_settings": settings.describe()}), file=sys.stderr, flush=True)
    engine = Engine(settings)
    server = uvicorn.Server(_uvicorn_config(settings, engine, own_engine=True))
    server.run()


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
