"""The model registry: versioned model folders on disk and a pointer to the one being served.

Layout under ``root`` (``<data-dir>/models``)::

    v0001/ config.json state.npz     the model's own save()
           item_ids.json             external item ids in the model's internal order
           user_ids.json             external user ids likewise (models with user tables; the updater)
           manifest.json             name, version, status, created, metrics, training range, parent
    PROMOTED                         the served version (written by temp file + rename: atomic)
    promotions.json                  every promotion in order (rollback goes one step back)

A version folder is written under a temporary name and renamed into place, so a reader never sees a
half-written model. Servers poll ``PROMOTED`` (one ``stat`` per second) and swap when it changes; with the
Redis backend a :class:`RedisAnnouncer` also publishes each promotion, and replicas swap on the message.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from liverec.models.base import Recommender

_STATUSES = ("candidate", "promoted", "retired", "rejected")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: Recommender
    item_ids: list[str]
    manifest: dict[str, Any]
    user_ids: list[str] | None = None  # in the model's user order, where it was registered with them


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


class Announcer(Protocol):
    """Tells every serving process which version is served, faster than their poll of ``PROMOTED``."""

    def announce(self, version: str) -> None: ...
    def announced(self) -> str | None: ...
    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(version)`` for each announcement until the returned function is called."""
        ...


class RedisAnnouncer:
    """Announces the served version over Redis, so that every API replica swaps at once.

    ``announce`` stores the version under ``P:models:promoted`` and publishes it on the ``P:models`` channel;
    ``subscribe(callback)`` calls ``callback(version)`` from a background thread for each announcement
    and returns a function that stops listening. A replica that misses a message (reconnecting) still
    swaps: servers also poll the registry's ``PROMOTED`` pointer.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.channel = f"{prefix}:models"
        self.key = f"{prefix}:models:promoted"

    def announce(self, version: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key, version)
            pipe.publish(self.channel, version)
            pipe.execute()

    def announced(self) -> str | None:
        value = self.client.get(self.key)
        return None if value is None else str(value)

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{self.channel: lambda message: callback(str(message["data"]))})
        thread = pubsub.run_in_thread(sleep_time=0.5, daemon=True)

        def stop() -> None:
            thread.stop()
            thread.join(timeout=5)
            pubsub.close()

        return stop


_: type[Announcer] = RedisAnnouncer  # mypy checks that the Redis announcer is one


class ModelRegistry:
    """Versioned model folders under ``root``; ``announcer`` (optional) is told each newly served version."""

    def __init__(self, root: str | Path, announcer: Announcer | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.announcer = announcer

    # -- writing ---------------------------------------------------------------------------------
    def register(
        self,
        model: Recommender,
        item_ids: Sequence[str],
        *,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        parent: str | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> str:
        """Save ``model`` as a new candidate version and return its name (``v0001``, ``v0002``, ...)."""
        if len(item_ids) != model.n_items:
            raise ValueError(f"item_ids: expected {model.n_items} ids (the model's items), got {len(item_ids)}")
        existing = self.versions()
        number = 1 + max((int(v[1:]) for v in existing), default=0)
        version = f"v{number:04d}"
        tmp = self.root / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        (tmp / "item_ids.json").write_text(json.dumps([str(i) for i in item_ids]))
        if user_ids is not None:
            if len(user_ids) != model.n_users:
                raise ValueError(f"user_ids: expected {model.n_users} ids (the model's users), got {len(user_ids)}")
            (tmp / "user_ids.json").write_text(json.dumps([str(u) for u in user_ids]))
        manifest = {
            "version": version,
            "model": model.name,
            "status": "candidate",
            "created_at": time.time(),
            "metrics": dict(metrics or {}),
            "training": dict(training or {}),
            "parent": parent,
            "reason": None,
        }
        _write_json(tmp / "manifest.json", manifest)
        os.replace(tmp, self.root / version)
        return version

    def set_status(self, version: str, status: str, reason: str | None = None) -> dict[str, Any]:
        if status not in _STATUSES:
            raise ValueError(f"status: expected one of {', '.join(_STATUSES)}, got {status!r}")
        manifest = self.manifest(version)
        manifest["status"] = status
        manifest["reason"] = reason
        _write_json(self.root / version / "manifest.json", manifest)
        return manifest

    def promote(self, version: str, reason: str | None = None) -> None:
        """Serve ``version`` from now on; the previously served one becomes ``retired``."""
        self.manifest(version)  # raises KeyError for an unknown version
        previous = self.promoted()
        if previous == version:
            return
        history = self._promotions()
        history.append({"version": version, "at": time.time(), "reason": reason})
        _write_json(self.root / "promotions.json", history)
        self.set_status(version, "promoted", reason)
        _write_text_atomic(self.root / "PROMOTED", version)
        if previous is not None:
            self.set_status(previous, "retired", f"replaced by {version}")
        if self.announcer is not None:
            self.announcer.announce(version)

    def rollback(self, reason: str | None = None) -> str:
        """Serve the version promoted before the current one again; returns it.

        The current version is marked ``rejected`` (with ``reason``), so a later rollback does not
        bring it back; raises ``LookupError`` when there is nothing to roll back to.
        """
        current = self.promoted()
        history = [entry["version"] for entry in self._promotions()]
        earlier = [v for v in reversed(history) if v != current and self.manifest(v)["status"] != "rejected"]
        if current is None or not earlier:
            raise LookupError("no earlier promoted version to roll back to")
        target = earlier[0]
        self.promote(target, reason=f"rollback from {current}")
        self.set_status(current, "rejected", reason or "rolled back")
        return target

    # -- reading ---------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("v"))

    def manifest(self, version: str) -> dict[str, Any]:
        path = self.root / version / "manifest.json"
        if not path.exists():
            raise KeyError(f"unknown model version {version!r}")
        return dict(json.loads(path.read_text()))

    def manifests(self) -> list[dict[str, Any]]:
        return [self.manifest(v) for v in self.versions()]

    def promoted(self) -> str | None:
        path = self.root / "PROMOTED"
        return path.read_text().strip() or None if path.exists() else None

    def promoted_stamp(self) -> float:
        """Modification time of the pointer: a cheap change check for servers that poll."""
        try:
            return (self.root / "PROMOTED").stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0

    def load(self, version: str) -> LoadedModel:
        folder = self.root / version
        manifest = self.manifest(version)
        model = Recommender.load(folder)
        item_ids = [str(i) for i in json.loads((folder / "item_ids.json").read_text())]
        users_file = folder / "user_ids.json"
        user_ids = [str(u) for u in json.loads(users_file.read_text())] if users_file.exists() else None
        return LoadedModel(version, model, item_ids, manifest, user_ids)

    def _promotions(self) -> list[dict[str, Any]]:
        path = self.root / "promotions.json"
        return list(json.loads(path.read_text())) if path.exists() else []


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
