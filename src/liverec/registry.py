"""The model registry: versioned model folders on disk and a pointer to the one being served.

Layout under ``root`` (``<data-dir>/models``)::

    v0001/ config.json state.npz     the model's own save()
           item_ids.json             external item ids in the model's internal order
           user_ids.json             external user ids likewise (models with user tables; the updater)
           manifest.json             name, version, status, created, metrics, training range, parent,
                                     the updater gate's decision (``gate``) where it judged the version
    PROMOTED                         the served version (written by temp file + rename: atomic)
    promotions.json                  every promotion in order (rollback goes one step back)

A version folder is written under a temporary name and renamed into place, so a reader never sees a
half-written model. Writers hold an exclusive lock (``flock`` on ``.lock``) while they write, so that an
erasure (:meth:`ModelRegistry.forget_users`, which rewrites every version that lists the user) never races a
registration: ``register(..., guard=...)`` checks its guard under the lock and refuses with
:class:`RegistrationRefused` when it fails (the updater's guard: no erasure happened since it loaded).
Servers poll ``PROMOTED`` (one ``stat`` per second) and swap when it changes; with the Redis backend a
:class:`RedisAnnouncer` also publishes each promotion, and replicas swap on the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from liverec.models.base import Recommender

#: every status a version can have, in the order of its life
STATUSES = ("candidate", "promoted", "retired", "rejected")


class RegistrationRefused(RuntimeError):
    """``register``'s guard failed under the registry lock (an erasure happened since the model was loaded)."""


@dataclass(frozen=True)
class ForgottenUsers:
    """What :meth:`ModelRegistry.forget_users` did: the versions rewritten without the users (each listed
    them), the versions trained on their events (listed them, or their training range covers one of the
    events' offsets), and the per-user rows deleted."""

    rewritten: list[str] = field(default_factory=list)
    trained_on: list[str] = field(default_factory=list)
    rows_deleted: int = 0


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
        self._lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the registry's write lock (this process's threads and other processes alike; re-entrant)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.root / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(handle, fcntl.LOCK_UN)

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
        guard: Callable[[], bool] | None = None,
    ) -> str:
        """Save ``model`` as a new candidate version and return its name (``v0001``, ``v0002``, ...).

        ``guard``: checked under the registry lock before anything is written; False raises
        :class:`RegistrationRefused` (the model may hold a user erased since it was loaded)."""
        if len(item_ids) != model.n_items:
            raise ValueError(f"item_ids: expected {model.n_items} ids (the model's items), got {len(item_ids)}")
        with self.exclusive():
            if guard is not None and not guard():
                raise RegistrationRefused("an erasure happened since this model was loaded; not registered")
            return self._register(model, item_ids, metrics, training, parent, user_ids)

    def _register(
        self,
        model: Recommender,
        item_ids: Sequence[str],
        metrics: Mapping[str, Any] | None,
        training: Mapping[str, Any] | None,
        parent: str | None,
        user_ids: Sequence[str] | None,
    ) -> str:
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
        if status not in STATUSES:
            raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        with self.exclusive():
            manifest = self.manifest(version)
            manifest["status"] = status
            manifest["reason"] = reason
            _write_json(self.root / version / "manifest.json", manifest)
        return manifest

    def record_gate(self, version: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the updater gate's decision on ``version`` in its manifest (``gate``: ``promoted`` and the
        numbers it rested on), so that the servers' metrics can count decisions without asking the updater."""
        with self.exclusive():
            manifest = self.manifest(version)
            manifest["gate"] = {**decision, "decided_at": time.time()}
            _write_json(self.root / version / "manifest.json", manifest)
        return manifest

    def promote(self, version: str, reason: str | None = None) -> None:
        """Serve ``version`` from now on; the previously served one becomes ``retired``."""
        with self.exclusive():
            self._promote(version, reason)

    def _promote(self, version: str, reason: str | None) -> None:
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

    def forget_users(self, user_ids: Collection[str], offsets: Sequence[int] = ()) -> ForgottenUsers:
        """Rewrite every version whose ``user_ids.json`` lists one of ``user_ids`` without them (the model's
        :meth:`~liverec.models.base.Recommender.forget_users`, the id list, a count in the manifest), and tell
        which versions were trained on the users' events (listed, or ``offsets`` within their training range).

        Each version is rewritten under a temporary name and swapped in with two renames; temporary folders
        a crashed writer left behind are deleted. Holds the registry lock throughout."""
        wanted = set(user_ids)
        rewritten: list[str] = []
        trained_on: list[str] = []
        rows = 0
        with self.exclusive():
            for stale in self.root.glob(".v*"):  # under the lock nobody is writing one: left by a crash
                shutil.rmtree(stale, ignore_errors=True)
            for version in self.versions():
                folder = self.root / version
                manifest = self.manifest(version)
                users_file = folder / "user_ids.json"
                listed = [str(u) for u in json.loads(users_file.read_text())] if users_file.exists() else []
                positions = [n for n, user in enumerate(listed) if user in wanted]
                if positions or _covers(manifest.get("training") or {}, offsets):
                    trained_on.append(version)
                if not positions:
                    continue
                model = Recommender.load(folder)
                rows += model.forget_users(positions)
                tmp = self.root / f".{version}.erasing"
                model.save(tmp)
                shutil.copyfile(folder / "item_ids.json", tmp / "item_ids.json")
                kept = [user for user in listed if user not in wanted]
                (tmp / "user_ids.json").write_text(json.dumps(kept))
                manifest["erasures"] = int(manifest.get("erasures", 0)) + 1
                _write_json(tmp / "manifest.json", manifest)
                old = self.root / f".{version}.old"
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old)
                rewritten.append(version)
        return ForgottenUsers(rewritten, trained_on, rows)

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


def _covers(training: Mapping[str, Any], offsets: Sequence[int]) -> bool:
    """Whether a version's training range (``first_offset``..``last_offset`` of the log) holds one of ``offsets``.
    An online update records only ``last_offset``: its lineage learned every event up to it."""
    last = training.get("last_offset")
    if not offsets or last is None:
        return False
    first = training.get("first_offset") or 0
    return any(first <= offset <= last for offset in offsets)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
