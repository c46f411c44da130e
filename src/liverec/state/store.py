"""The engine's live state: each user's recent sequence, item statistics and the catalogue.

State is derived data. The event log is the source of truth; :meth:`State.apply` folds committed
events into the state in log order (the log's writer thread calls it after each group commit, before
the request that carried the events is acknowledged), so the next request already sees them.
:meth:`State.snapshot` writes a copy that records the log offset it covers; start-up loads it and
applies the log after that offset, or rebuilds from the whole log when there is no snapshot. Because
application is deterministic and in log order, a rebuilt state equals the live one.

Everything is held in process memory behind one lock: per-user arrays of recent item indices (bounded
by ``max_history``, oldest first), per-user sorted arrays of every item seen (for ``exclude_seen``), and
per-item arrays of counts and exponentially time-decayed popularity. The per-user arrays hold 4-byte
indices: a deque and a set of Python ints cost about 2.7 KB per user (2.75 GB for a million users,
docs/results.md), these about 0.6 KB with the user's id and index entry. Items get dense indices in order of first
appearance (an event or a catalogue entry), so the serving model's item order usually matches.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from liverec.retrieval.allowed import AllowedBase

#: Event types and their weights when nothing is configured (kept in step with the events schema).
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 1.0,
    "like": 3.0,
    "share": 3.0,
}

_SNAPSHOT_VERSION = 1
#: the per-user arrays' element: a 4-byte signed C int (item indices below 2**31), and the same as a NumPy dtype
_INDEX = "i"
_INDEX_BYTES = array(_INDEX).itemsize
_INDEX_DTYPE = np.dtype(f"={_INDEX}{_INDEX_BYTES}")


class EventLike(Protocol):
    """What :meth:`State.apply` reads from a committed event (``liverec.events.log.StoredEvent``)."""

    @property
    def offset(self) -> int: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def timestamp(self) -> float: ...


@dataclass(frozen=True)
class StateConfig:
    max_history: int = 200  # items kept per user sequence (the sequence model reads at most this many)
    half_life_days: float = 7.0  # half-life of the time-decayed item popularity
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))

    def __post_init__(self) -> None:
        if self.max_history < 1:
            raise ValueError(f"max_history: expected >= 1, got {self.max_history}")
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days: expected > 0, got {self.half_life_days}")


class Catalogue:
    """Item metadata and availability, aligned with the state's item indices.

    Items seen only in events are available and have no metadata. :meth:`allowed_base` gives the
    shared part of the filter every recommendation uses (available, within the request's categories);
    it and the per-category masks are cached and rebuilt lazily after a change.
    """

    ALLOWED_BASES = 16  # allowed_base keeps this many (size, categories) bases, the oldest dropped first

    def __init__(self) -> None:
        self._available = np.ones(0, dtype=bool)
        self.metadata: dict[int, dict[str, Any]] = {}
        self._category_masks: dict[str, np.ndarray] = {}
        # a base is used while the version it was built at is current: a change bumps the version first, so a
        # base built from a half-changed catalogue, or stored after the change, is never used
        self._version = 0
        self._bases: dict[tuple[int, tuple[str, ...], tuple[str, ...]], tuple[int, AllowedBase]] = {}
        self._bases_lock = threading.Lock()

    def _changed(self) -> None:
        self._version += 1
        self._category_masks.clear()

    def _ensure(self, n_items: int) -> None:
        if len(self._available) < n_items:
            grown = np.ones(max(n_items, 2 * len(self._available), 1024), dtype=bool)
            grown[: len(self._available)] = self._available
            self._available = grown
            self._changed()

    def set(self, index: int, record: Mapping[str, Any]) -> None:
        """Keep what serving reads of a catalogue record — title, categories (a tuple of interned strings),
        attributes, where set — and its availability (in the mask). The rest of the record (id, times, flags)
        stays in the log: a whole record per item cost about 0.3 GB more at a million items (docs/results.md)."""
        self._ensure(index + 1)
        kept = {name: record.get(name) for name in ("title", "attributes") if record.get(name) is not None}
        if record.get("categories"):
            kept["categories"] = tuple(sys.intern(str(category)) for category in record["categories"])
        if kept:
            self.metadata[index] = kept
        else:
            self.metadata.pop(index, None)
        self._available[index] = bool(record.get("available", True))
        self._changed()

    def remove(self, index: int) -> None:
        """Forget an item's metadata and never recommend it again (until it is put back)."""
        self._ensure(index + 1)
        self.metadata.pop(index, None)
        self._available[index] = False
        self._changed()

    def available(self, n_items: int) -> np.ndarray:
        self._ensure(n_items)
        return self._available[:n_items]

    def categories(self, index: int) -> list[str]:
        return list(self.metadata.get(index, {}).get("categories") or [])

    def category_mask(self, category: str, n_items: int) -> np.ndarray:
        self._ensure(n_items)
        mask = self._category_masks.get(category)
        if mask is None or len(mask) < n_items:
            mask = np.zeros(len(self._available), dtype=bool)
            for index, record in self.metadata.items():
                if category in (record.get("categories") or ()):
                    mask[index] = True
            self._category_masks[category] = mask
        return mask[:n_items]

    def allowed_base(self, n_items: int, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> AllowedBase:
        """The items of ``0 .. n_items - 1`` that are available, in at least one of the ``include`` categories
        (any, when none is named) and in none of the ``exclude`` ones: the part of a recommendation's filter that
        every request naming the same categories shares (each request removes its own seen items from it,
        :class:`AllowedItems`). Built once per catalogue change, so a request does not copy, count or pack the
        whole catalogue (docs/results.md, "Session 32")."""
        key = (n_items, tuple(include), tuple(exclude))
        version = self._version
        cached = self._bases.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        from liverec.retrieval.allowed import AllowedBase  # here: the retrieval package imports the models (torch)

        mask = self.available(n_items)  # the base keeps a copy of its own
        if include:
            wanted = np.zeros(n_items, dtype=bool)
            for category in include:
                wanted |= self.category_mask(category, n_items)
            mask = mask & wanted
        for category in exclude:
            mask = mask & ~self.category_mask(category, n_items)
        base = AllowedBase(mask)
        with self._bases_lock:
            if len(self._bases) >= self.ALLOWED_BASES and key not in self._bases:
                del self._bases[next(iter(self._bases))]
            self._bases[key] = (version, base)
        return base


class State:
    """User sequences, item statistics and the catalogue, updated event by event in log order."""

    def __init__(self, config: StateConfig | None = None) -> None:
        self.config = config or StateConfig()
        self._lock = threading.RLock()
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self._histories: list[array[int]] = []  # per user: recent item indices, oldest first (max_history)
        self._seen: list[array[int]] = []  # per user: every item index seen, sorted, each once
        self._counts = np.zeros(1024, dtype=np.int64)
        self._popularity = np.zeros(1024, dtype=np.float64)  # decayed weight as of _updated
        self._updated = np.zeros(1024, dtype=np.float64)
        self.catalogue = Catalogue()
        self.offset = 0  # the last log offset applied
        self.clock = 0.0  # the newest event timestamp applied (popularity decays against it)
        self.n_events = 0
        #: the last erasure record of the log this state has followed (``EventLog.erasure_epoch``)
        self.erasure_epoch = 0
        self._half_life_s = self.config.half_life_days * 86400.0

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    # -- writing ---------------------------------------------------------------------------------
    def item(self, item_id: str) -> int:
        """The item's dense index, created on first sight."""
        index = self.item_index.get(item_id)
        if index is None:
            with self._lock:
                index = self.item_index.get(item_id)
                if index is None:
                    index = len(self.item_ids)
                    self.item_index[item_id] = index
                    self.item_ids.append(item_id)
                    if index >= len(self._counts):
                        self._grow(2 * len(self._counts))
        return index

    def _grow(self, capacity: int) -> None:
        for name in ("_counts", "_popularity", "_updated"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _user(self, user_id: str) -> int:
        index = self.user_index.get(user_id)
        if index is None:
            index = len(self.user_ids)
            self.user_index[user_id] = index
            self.user_ids.append(user_id)
            self._histories.append(array(_INDEX))
            self._seen.append(array(_INDEX))
        return index

    def apply(self, events: Iterable[EventLike]) -> None:
        """Fold committed events in, in the order given (the log's order). Unknown types weigh 0."""
        weights = self.config.event_weights
        half_life = self._half_life_s
        with self._lock:
            for event in events:
                if event.offset <= self.offset:
                    continue  # already applied: at-least-once delivery is harmless
                weight = float(weights.get(event.type, 0.0))
                self.offset = event.offset
                self.n_events += 1
                if weight <= 0:
                    continue
                user = self._user(event.user_id)
                item = self.item(event.item_id)
                self._add(user, item)
                t = float(event.timestamp)
                last = self._updated[item]
                if t >= last:
                    self._popularity[item] = self._popularity[item] * math.exp2((last - t) / half_life) + weight
                    self._updated[item] = t
                else:  # an event from the past adds its already-decayed weight
                    self._popularity[item] += weight * math.exp2((t - last) / half_life)
                self._counts[item] += 1
                if t > self.clock:
                    self.clock = t

    def reset_users(self, user_ids: Iterable[str], events: Iterable[EventLike] = ()) -> int:
        """Rebuild the sequences and seen sets of ``user_ids`` from ``events`` (all they have left in the log, in
        log order; events of other users are skipped); a user left with none is forgotten altogether. Item
        counts and popularity keep what was applied (aggregates, not anyone's data). Returns how many of the
        users the state knew. Erasure passes no events; retention, what the affected users have left."""
        weights = self.config.event_weights
        with self._lock:
            targets = {user_id for user_id in user_ids if user_id in self.user_index}
            for user_id in targets:
                user = self.user_index[user_id]
                del self._histories[user][:], self._seen[user][:]
            for event in events:
                if event.user_id in targets and float(weights.get(event.type, 0.0)) > 0:
                    self._add(self.user_index[event.user_id], self.item(event.item_id))
            for user_id in targets:
                if not self._seen[self.user_index[user_id]]:
                    self._remove_user(user_id)
        return len(targets)

    def _add(self, user: int, item: int) -> None:
        """``item`` joins the end of the user's history (its oldest item leaves past ``max_history``) and, if
        new to the user, their sorted seen items."""
        history, seen = self._histories[user], self._seen[user]
        history.append(item)
        if len(history) > self.config.max_history:
            del history[0]
        position = bisect_left(seen, item)
        if position == len(seen) or seen[position] != item:
            seen.insert(position, item)

    def _remove_user(self, user_id: str) -> None:
        """Drop a user (the last user takes its slot, so nothing else moves)."""
        user = self.user_index.pop(user_id)
        last = len(self.user_ids) - 1
        if user != last:
            moved = self.user_ids[last]
            self.user_ids[user] = moved
            self._histories[user] = self._histories[last]
            self._seen[user] = self._seen[last]
            self.user_index[moved] = user
        self.user_ids.pop()
        self._histories.pop()
        self._seen.pop()

    def put_item(self, item_id: str, record: Mapping[str, Any]) -> int:
        with self._lock:
            index = self.item(item_id)
            self.catalogue.set(index, record)
        return index

    def remove_item(self, item_id: str) -> bool:
        """Never recommend ``item_id`` (even if it first appears later); returns whether it was known."""
        with self._lock:
            known = item_id in self.item_index
            self.catalogue.remove(self.item(item_id))
        return known

    # -- reading ---------------------------------------------------------------------------------
    def history(self, user_id: str) -> np.ndarray:
        """The user's recent item indices, oldest first (empty for an unknown user)."""
        with self._lock:
            user = self.user_index.get(user_id)
            if user is None:
                return np.zeros(0, dtype=np.int64)
            return np.frombuffer(self._histories[user], dtype=_INDEX_DTYPE).astype(np.int64)

    def seen(self, user_id: str) -> np.ndarray:
        """Every item index the user has interacted with (ascending)."""
        with self._lock:
            user = self.user_index.get(user_id)
            if user is None:
                return np.zeros(0, dtype=np.int64)
            return np.frombuffer(self._seen[user], dtype=_INDEX_DTYPE).astype(np.int64)

    def user_view(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's history (oldest first) and seen items, read together."""
        with self._lock:
            return self.history(user_id), self.seen(user_id)

    def has_user(self, user_id: str) -> bool:
        return user_id in self.user_index

    def find_users(self, prefix: str, limit: int) -> list[str]:
        """At most ``limit`` user keys starting with ``prefix``, in the order the users first came."""
        found: list[str] = []
        with self._lock:
            for user_id in self.user_ids:
                if user_id.startswith(prefix):
                    found.append(user_id)
                    if len(found) >= limit:
                        break
        return found

    def items_for(self, item_ids: Sequence[str]) -> np.ndarray:
        """Dense indices of ``item_ids``, creating the unknown ones."""
        return np.array([self.item(item_id) for item_id in item_ids], dtype=np.int64)

    def sync(self) -> None:
        """Nothing to do in process (the Redis state refreshes its local mirrors here)."""

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of known items (unknown ones are dropped), in the order given."""
        index = self.item_index
        return np.array([index[i] for i in item_ids if i in index], dtype=np.int64)

    def counts(self) -> np.ndarray:
        return self._counts[: self.n_items].copy()

    def popularity(self, now: float | None = None) -> np.ndarray:
        """Time-decayed popularity of every item as of ``now`` (default: the newest event)."""
        with self._lock:
            n = self.n_items
            now = max(self.clock, 0.0) if now is None else now
            updated = self._updated[:n]
            return self._popularity[:n] * np.exp2(np.minimum(updated - now, 0.0) / self._half_life_s)

    def item_stats(self, item_id: str) -> dict[str, float] | None:
        index = self.item_index.get(item_id)
        if index is None:
            return None
        return {"count": int(self._counts[index]), "popularity": float(self.popularity()[index])}

    # -- persistence -----------------------------------------------------------------------------
    def snapshot(self, path: str | Path) -> None:
        """Write the state atomically (temp file + rename); the catalogue lives in the event log's DB."""
        path = Path(path)
        with self._lock:  # copy under the lock (C-level tuple copies), convert outside it
            n_items = self.n_items
            user_ids = list(self.user_ids)
            item_ids = list(self.item_ids)
            histories = [bytes(h) for h in self._histories]
            seen = [bytes(s) for s in self._seen]
            counts = self._counts[:n_items].copy()
            popularity = self._popularity[:n_items].copy()
            updated = self._updated[:n_items].copy()
            meta = {
                "version": _SNAPSHOT_VERSION,
                "offset": self.offset,
                "clock": self.clock,
                "n_events": self.n_events,
                "erasure_epoch": self.erasure_epoch,
                "max_history": self.config.max_history,
                "half_life_days": self.config.half_life_days,
                "event_weights": dict(self.config.event_weights),
            }
        arrays: dict[str, Any] = {
            "user_ids": np.array(user_ids, dtype=str),
            "item_ids": np.array(item_ids, dtype=str),
            "hist_lengths": np.fromiter(map(len, histories), dtype=np.int64, count=len(histories)) // _INDEX_BYTES,
            "hist_items": np.frombuffer(b"".join(histories), dtype=_INDEX_DTYPE).astype(np.int64),
            "seen_lengths": np.fromiter(map(len, seen), dtype=np.int64, count=len(seen)) // _INDEX_BYTES,
            "seen_items": np.frombuffer(b"".join(seen), dtype=_INDEX_DTYPE).astype(np.int64),
            "counts": counts,
            "popularity": popularity,
            "updated": updated,
            "meta": np.array(json.dumps(meta)),
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, config: StateConfig | None = None) -> State | None:
        """A state from a snapshot, or None when the snapshot was made with different settings."""
        state = cls(config)
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            same = (
                meta.get("version") == _SNAPSHOT_VERSION
                and meta["max_history"] == state.config.max_history
                and meta["half_life_days"] == state.config.half_life_days
                and meta["event_weights"] == dict(state.config.event_weights)
            )
            if not same:
                return None
            for item_id in data["item_ids"].tolist():
                state.item(item_id)
            n = state.n_items
            state._counts[:n] = data["counts"]
            state._popularity[:n] = data["popularity"]
            state._updated[:n] = data["updated"]
            hist_items = data["hist_items"].astype(_INDEX_DTYPE).tobytes()
            seen_items = data["seen_items"].astype(_INDEX_DTYPE).tobytes()
            h = s = 0
            for user_id, hl, sl in zip(
                data["user_ids"].tolist(), data["hist_lengths"].tolist(), data["seen_lengths"].tolist(), strict=True
            ):
                user = state._user(user_id)
                state._histories[user].frombytes(hist_items[h : h + hl * _INDEX_BYTES])  # same max_history: checked
                state._seen[user].frombytes(seen_items[s : s + sl * _INDEX_BYTES])  # written sorted, each once
                h += hl * _INDEX_BYTES
                s += sl * _INDEX_BYTES
        state.offset = int(meta["offset"])
        state.clock = float(meta["clock"])
        state.n_events = int(meta["n_events"])
        state.erasure_epoch = int(meta.get("erasure_epoch", 0))
        return state

    def fingerprint(self) -> dict[str, Any]:
        """Everything derived from the log, keyed by external ids (item indices depend on arrival order
        of catalogue entries, so they are not compared); tests compare live and rebuilt state with it."""
        with self._lock:
            ids = self.item_ids
            popularity = self.popularity()
            return {
                "offset": self.offset,
                "n_events": self.n_events,
                "users": {u: [ids[i] for i in self._histories[k]] for u, k in self.user_index.items()},
                "seen": {u: sorted(ids[i] for i in self._seen[k]) for u, k in self.user_index.items()},
                "counts": {ids[i]: int(c) for i, c in enumerate(self._counts[: self.n_items]) if c},
                "popularity": {ids[i]: round(float(p), 9) for i, p in enumerate(popularity) if p},
            }
