"""The engine's commands: ``liverec import``, ``train``, ``serve``, ``worker`` and ``rebuild`` over a data folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from liverec.cli.common import add_data_options, add_model_option, load_input, load_settings, model_params, progress
from liverec.errors import UsageError

if TYPE_CHECKING:
    from liverec.backends import Backend
    from liverec.cli.common import Subparsers
    from liverec.events.log import EventLog


def add_parser(subparsers: Subparsers) -> None:
    imp = subparsers.add_parser(
        "import",
        help="load a dataset's events into the event log",
        description="Append a dataset's events to the log of --data-dir in time order. Event ids are derived from "
        "the source and row, so running it again stores nothing twice (an interrupted import resumes).",
    )
    add_data_options(imp)
    _add_data_dir_option(imp)
    imp.add_argument("--source", help="name used in event ids (default: the dataset's name)")
    imp.add_argument("--limit", type=int, help="import only the first N events by time")
    imp.set_defaults(handler=run_import)

    train = subparsers.add_parser(
        "train",
        help="train a model from the event log (or --data) and register it",
        description="Fit a model on every event but each user's last (the held-out metrics go into the manifest), "
        "save it as a new version under DIR/models and promote it (the first version always is).",
    )
    add_data_options(train)
    _add_data_dir_option(train)
    add_model_option(train, default="sasrec")
    train.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="model hyperparameter")
    train.add_argument(
        "--no-promote", dest="promote", action="store_false", help="register as a candidate without serving it"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=run_train)

    serve = subparsers.add_parser(
        "serve",
        help="serve the HTTP API over a data folder",
        description="Serve events in / recommendations out over HTTP. Settings come from --config FILE, LIVEREC_* "
        "environment variables and these flags; the effective settings are printed at start-up.",
    )
    _add_data_dir_option(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--no-auth",
        dest="auth",
        action="store_false",
        default=None,
        help="serve every route without an API key, even on a public address or when keys exist (auth = false)",
    )
    serve.set_defaults(handler=run_serve)
    _add_worker_parsers(subparsers)


def _add_worker_parsers(subparsers: Subparsers) -> None:
    """``liverec worker``, ``liverec rebuild`` and ``liverec migrate``."""
    worker = subparsers.add_parser(
        "worker",
        help="run the online updater on its own (with the Redis backend: also apply events to the shared state)",
        description="Tail the event log of DIR, update the served model incrementally, register each update as a "
        "candidate and promote it when the evaluation gate approves (liverec serve runs this as a child process "
        "unless the updater setting is false). With LIVEREC_BACKEND=redis, start any number of workers: each is a "
        "member of the consumer group that applies stored events to the shared state (taking over what a dead "
        "worker left pending), and the one holding the updater lease also runs the updater. Stops on SIGTERM or "
        "Ctrl-C.",
    )
    _add_data_dir_option(worker)
    worker.set_defaults(handler=run_worker)

    rebuild = subparsers.add_parser(
        "rebuild",
        help="rebuild the state from the event log",
        description="Replay the whole event log into a fresh state and write DIR/state.npz (with "
        "LIVEREC_BACKEND=redis: clear the shared state in Redis and apply the whole stream again; stop the API "
        "replicas and workers first).",
    )
    _add_data_dir_option(rebuild)
    rebuild.set_defaults(handler=run_rebuild)

    migrate = subparsers.add_parser(
        "migrate",
        help="bring the store's layout up to date (once every replica runs this version)",
        description="Change what an earlier version stored to this version's layout, where that version's "
        "processes could not read the new one; until then this version reads and writes both. Run it once every API "
        "replica and worker of the deployment runs this version. With LIVEREC_BACKEND=redis: fold the event-id hash "
        "of versions before session 34 (PREFIX:event-ids) into the id set (PREFIX:event-id-set); the embedded "
        "backend has nothing to change. Safe to run again, and while the engine serves.",
    )
    _add_data_dir_option(migrate)
    migrate.set_defaults(handler=run_migrate)


def _add_data_dir_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--data-dir`` and ``--config``: where the engine keeps its data, and its settings file."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="folder holding the event log, state and model registry"
        + (f" (default {default})" if default else " (default: the data_dir setting, liverec-data)"),
    )
    parser.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")


def _open_log(backend: Backend, *, apply: bool = False) -> EventLog:
    """The backend's event log; ``apply``: what is appended is applied to the state too where it is shared."""
    return backend.open_ingest_log() if apply else backend.open_log()


def run_import(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend
    from liverec.pipeline import import_dataset

    settings = load_settings(args)
    dataset, source = load_input(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open_backend(settings) as backend, _open_log(backend, apply=True) as event_log:
        try:
            summary = import_dataset(
                dataset,
                event_log,
                source=args.source or dataset.name,
                event_types=settings.event_types,
                limit=args.limit,
            )
        except ValueError as error:
            raise UsageError(f"--data: {error}") from None
        total = event_log.count()
    print(
        f"imported {source}: {summary.stored} new events, {summary.duplicates} already in the log, "
        f"{summary.items_described} items described, in {summary.seconds:.2f}s "
        f"({summary.events / max(summary.seconds, 1e-9):,.0f} events/s); the log holds {total} events"
    )
    if not summary.timed:
        print(
            f"note: {source} has each user's order but no time; the log stores each event's position in its "
            "user's sequence as its timestamp and is now marked order-only: training and online updates read "
            "every timestamp in it as order, never as time, and retention_days deletes nothing"
        )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend
    from liverec.pipeline import log_data_from_dataset, read_log, train_and_register

    params = model_params(args)
    settings = load_settings(args)
    with open_backend(settings) as backend:
        if args.data is not None or args.synthetic:
            dataset, source = load_input(args)
            data = log_data_from_dataset(dataset, source)
        else:
            backend.require_log("run liverec import first, or pass --data")
            with _open_log(backend) as event_log:
                data = read_log(event_log, settings.event_types)
            source = backend.describe()
        if data.interactions.n_users == 0:
            raise UsageError(f"{source}: no events to train on")
        summary = train_and_register(
            data,
            backend.open_registry(),
            args.model,
            params,
            promote=args.promote,
            progress=progress(args),
            seed=args.seed,
        )
    report = {
        "version": summary.version,
        "model": summary.model,
        "promoted": summary.promoted,
        "fit_seconds": round(summary.fit_seconds, 2),
        "metrics": summary.metrics,
        "data": source,
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k:<12}{v}" for k, v in report.items()))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from liverec.serving.server import serve

    serve(load_settings(args, host=args.host, port=args.port, auth=args.auth))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend
    from liverec.serving import server

    settings = load_settings(args)
    with open_backend(settings) as backend:
        backend.require_log()
        server.run_worker(settings, backend)
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend

    settings = load_settings(args)
    with open_backend(settings) as backend:
        changes = backend.migrate()
        for line in changes:
            print(line)
        if not changes:
            print(f"the store at {backend.describe()} is up to date: nothing to migrate")
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend

    settings = load_settings(args)
    with open_backend(settings) as backend:
        backend.require_log()
        started = time.perf_counter()
        state = backend.rebuild_state()
        print(
            f"rebuilt state from {state.n_events} events (offset {state.offset}): {state.n_users} users, "
            f"{state.n_items} items, in {time.perf_counter() - started:.2f}s"
        )
    return 0
