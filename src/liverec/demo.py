"""``liverec demo``: the main job, end to end on one machine.

1. data: a synthetic stream with known structure (default) or a dataset (``--data PATH``);
2. the first part of it (by time) is imported into a fresh event log in ``--data-dir``;
3. a model is trained on it and registered (SASRec by default);
4. the API starts on 127.0.0.1 and the rest of the stream is replayed into it over HTTP;
5. one user's recommendations are shown before and after a few of their events, and the curl
   lines to try it by hand are printed. ``--smoke`` does all of it small and stops (CI runs it).

The demo talks to its own server over real HTTP through :mod:`liverec.client`, exactly as a client would.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverec.access import KEYS_FILE, open_key_store
from liverec.backends import EVENTS_FILE, MODELS_DIR
from liverec.client import Client
from liverec.client.models import ModelsOut, RecommendationOut
from liverec.data.interactions import Dataset
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.events.log import SQLiteEventLog
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.serving.engine import Engine
from liverec.serving.server import BackgroundServer, configure_logging, start_worker_process
from liverec.settings import Settings

MARKER = ".liverec-demo"


@dataclass(frozen=True)
class DemoOptions:
    data: Dataset | None
    source: str
    data_dir: Path
    model: str
    params: dict[str, Any]
    port: int
    live_fraction: float
    smoke: bool
    seed: int
    replay_rate: float | None = None  # events a second for the live replay (None: as fast as the server takes them)


def synthetic_dataset(smoke: bool, seed: int) -> Dataset:
    if smoke:
        config = SyntheticConfig(n_users=300, n_items=200, n_events=15_000, seed=seed)
    else:
        config = SyntheticConfig(n_users=1_000, n_items=500, n_events=60_000, seed=seed)
    return generate(config)[0]


def _say(text: str = "") -> None:
    print(text, flush=True)


def prepare_data_dir(path: Path) -> None:
    """A fresh folder: refuse to wipe anything the demo did not create."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise FileExistsError(f"--data-dir: {str(path)!r} is not empty and was not made by the demo; pick another")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by liverec demo; deleted by the next demo run\n")


def run_demo(options: DemoOptions) -> int:
    started = time.perf_counter()
    dataset = options.data if options.data is not None else synthetic_dataset(options.smoke, options.seed)
    inter = dataset.interactions
    _say(f"data       {options.source}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events")

    prepare_data_dir(options.data_dir)
    settings = Settings.load(data_dir=options.data_dir, port=options.port, log_format="text", log_level="WARNING")
    configure_logging(settings)

    # 1. the past: import the first part of the stream into the event log
    order = np.argsort(inter.timestamps, kind="stable")
    n_past = int(len(order) * (1 - options.live_fraction))
    with SQLiteEventLog(options.data_dir / EVENTS_FILE) as event_log:
        summary = import_dataset(dataset, event_log, source="demo", event_types=settings.event_types, limit=n_past)
        _say(f"import     {summary.stored} events into {options.data_dir / EVENTS_FILE} in {summary.seconds:.2f}s")
        data = read_log(event_log, settings.event_types)

    # 2. train and register a model
    registry = ModelRegistry(options.data_dir / MODELS_DIR)
    trained = train_and_register(data, registry, options.model, options.params, seed=options.seed)
    _say(
        f"train      {options.model} -> version {trained.version} in {trained.fit_seconds:.1f}s; held-out last event: "
        f"HR@10 {trained.metrics['hr@10']:.4f}, NDCG@10 {trained.metrics['ndcg@10']:.4f}"
    )

    # 3. serve, with an API key (every route but /health and /ready asks for one once a key exists)
    _, key = open_key_store(settings).create("demo", frozenset({"admin"}))
    _say(f"key        {key}  (name 'demo', scope admin; only its hash is kept, in {KEYS_FILE})")
    engine = Engine(settings)
    server = BackgroundServer(settings, engine)
    try:
        url = server.start()
    except RuntimeError as error:
        engine.close()
        raise RuntimeError(f"{error}; try --port 0 (any free port)") from None
    api = Client(url, api_key=key)
    auth = '-H "authorization: Bearer $LIVEREC_KEY"'
    _say(f"serve      {url}  (model {engine.model_version}; OpenAPI {url}/docs, metrics {url}/metrics)")
    if settings.ui:  # the key rides in the fragment, which the browser keeps to itself (never sent, never logged)
        handed = f"#key={key}" if settings.auth else ""
        _say(f"dashboard  {url}/ui/{handed}  (open it now: its overview follows the replay below, live)")
    worker = start_worker_process(settings)
    _say(f"updater    learning from the stream in process {worker.pid} (liverec worker)")
    try:
        _show_live_update(api, dataset, order, n_past)
        _show_exploration(api, dataset)
        _replay(api, dataset, order[n_past:], batch=500, rate=options.replay_rate)
        ready = api.ready()
        _say(f"ready      {200 if ready.ready else 503} {json.dumps(ready.model_dump())}")
        _show_models(api, wait=10.0 if options.smoke else 30.0)
        _say(f"done in {time.perf_counter() - started:.1f}s")
        user = str(dataset.user_map.external_ids[0])
        item = str(dataset.item_map.external_ids[0])
        _say("\ntry it (the server keeps running until Ctrl-C):" if not options.smoke else "\nwhat to try:")
        _say(f"  export LIVEREC_KEY={key}")
        _say(f"  curl -s {auth} '{url}/v1/users/{user}/recommendations?k=5'")
        _say(
            f"  curl -s {auth} -X POST {url}/v1/events -H 'content-type: application/json' "
            f'-d \'[{{"user_id": "{user}", "item_id": "{item}", "type": "purchase"}}]\''
        )
        _say(f"  curl -s {auth} '{url}/v1/users/{user}/recommendations?k=5'   # changed by the purchase")
        _say(f"  curl -s {auth} '{url}/v1/items/{item}/similar?k=5'")
        _say(
            f"  curl -s {auth} '{url}/v1/users/{user}/recommendations?k=5&explore=softmax'   # logged with propensities"
        )
        _say(
            f"  curl -s {auth} -X POST {url}/v1/recommendations -H 'content-type: application/json' "
            f'-d \'{{"items": ["{item}"], "k": 5}}\''
        )
        _say(f"  open {url}/docs (Authorize: the key)   and   curl -s {auth} {url}/metrics")
        _say(f"later: liverec serve --data-dir {options.data_dir}")
        if not options.smoke:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        _say("\nstopping")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        api.close()
        server.stop()
        engine.close()
    return 0


def _show_models(api: Client, wait: float) -> None:
    """The versions the updater has registered so far (it learns from the replayed events)."""
    deadline = time.monotonic() + wait
    models: ModelsOut = api.list_models()
    while len(models.versions) <= 1 and time.monotonic() <= deadline:
        time.sleep(1.0)
        models = api.list_models()
    for manifest in models.versions:
        training = manifest["training"]
        kind = training.get("kind", "full training")
        _say(
            f"model      {manifest['version']} {manifest['status']:<9} {kind}, up to log offset "
            f"{training.get('last_offset')}" + (f"; {manifest['reason']}" if manifest.get("reason") else "")
        )


def _show_live_update(api: Client, dataset: Dataset, order: np.ndarray, n_past: int) -> None:
    """Pick a user, show their top-5, send three events they make later in the stream, show it again."""
    inter = dataset.interactions
    future = order[n_past:]
    users, counts = np.unique(inter.user_ids[future], return_counts=True)
    if len(users) == 0:
        return
    user_index = int(users[np.argmax(counts)])
    rows = future[inter.user_ids[future] == user_index][:3]
    user = str(dataset.user_map.external_ids[user_index])
    before = api.recommend(user, k=5)
    events = [
        {
            "user_id": user,
            "item_id": str(dataset.item_map.external_ids[inter.item_ids[r]]),
            "type": "purchase" if "purchase" in inter.event_type_names else inter.event_type_names[0],
            "timestamp": float(inter.timestamps[r]),
            "event_id": f"demo-live:{r}",
        }
        for r in rows
    ]
    ack_started = time.perf_counter()
    ack = api.send_events(events)  # a refusal raises liverec.client.ApiError, which the command line reports
    ack_ms = (time.perf_counter() - ack_started) * 1000
    rec_started = time.perf_counter()
    after = api.recommend(user, k=5)
    rec_ms = (time.perf_counter() - rec_started) * 1000
    _say(f"\nuser {user} before: {_item_ids(before)}")
    _say(
        f"  sends {len(events)} events {[e['item_id'] for e in events]} -> HTTP 200 {ack.model_dump()} in "
        f"{ack_ms:.1f} ms"
    )
    _say(f"user {user} after:  {_item_ids(after)}   ({rec_ms:.1f} ms, model {after.model_version})\n")


def _item_ids(answer: RecommendationOut) -> list[str]:
    return [entry.item_id for entry in answer.items]


def _show_exploration(api: Client, dataset: Dataset, n_users: int = 20) -> None:
    """Lists drawn by the ε-greedy policy for a few users: which items it tried beyond the model's top-5, with
    what probability; then a click on a tried item, joined to its list as that slot's reward."""
    users = [str(user) for user in dataset.user_map.external_ids[:n_users]]
    tried: list[tuple[str, RecommendationOut, int]] = []  # (the user, the answer, the explored slot)
    shown = 0
    for user in users:
        answer = api.recommend(user, k=5, explore="epsilon")
        shown += len(answer.items)
        tried += [
            (user, answer, slot)
            for slot, entry in enumerate(answer.items)
            if entry.explanation is not None and entry.explanation.kind == "explore"
        ]
    _say(
        f"explore    {len(users)} lists of 5 drawn with explore=epsilon: {len(tried)} of {shown} slots tried an item "
        "beyond the model's top 5 (marked *)"
    )
    if not tried:
        return
    user, answer, slot = tried[0]
    logged = api.get_recommendation(answer.recommendation_id)
    marked = [entry.item_id + ("*" if n == slot else "") for n, entry in enumerate(answer.items)]
    item = answer.items[slot].item_id
    _say(
        f"  user {user}: {marked}; slot {slot + 1} was tried with probability "
        f"{logged.slot_propensities[slot]:.4f} (greedy would show it with 0)"
    )
    api.send_event({"user_id": user, "item_id": item, "type": "click", "recommendation_id": answer.recommendation_id})
    logged = api.get_recommendation(answer.recommendation_id)
    _say(
        f"  a click on {item} -> reward {logged.reward:g} joined to position {slot + 1} of "
        f"{answer.recommendation_id} (GET /v1/recommendations/{{id}}: {len(logged.rewards)} reward)\n"
    )


def _replay(api: Client, dataset: Dataset, rows: np.ndarray, batch: int, rate: float | None = None) -> None:
    """Send the rest of the stream over HTTP in batches, as a live feed would: ``rate`` events a second (batches
    of at most a fifth of a second's events, so the dashboard's once-a-second overview sees a steady flow), or
    as fast as the server acknowledges them for None."""
    if rate is not None:
        batch = max(1, min(batch, round(rate / 5)))
        _say(f"replay     {len(rows)} live events at {rate:,.0f} events/s (watch the dashboard's overview) ...")
    inter = dataset.interactions
    types = np.asarray(inter.event_type_names, dtype=object)[inter.event_types]
    users = dataset.user_map.external_ids
    items = dataset.item_map.external_ids
    sent = 0
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        body = [
            {
                "user_id": str(users[inter.user_ids[r]]),
                "item_id": str(items[inter.item_ids[r]]),
                "type": str(types[r]),
                "timestamp": float(inter.timestamps[r]),
                "event_id": f"demo-live:{r}",
            }
            for r in chunk.tolist()
        ]
        api.send_events(body)  # a refused batch raises, naming each bad event
        sent += len(chunk)
        if rate is not None:  # wait until this batch's share of the schedule has passed
            time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    seconds = time.perf_counter() - started
    _say(f"replay     {sent} live events over HTTP in {seconds:.2f}s ({sent / max(seconds, 1e-9):,.0f} events/s)")
