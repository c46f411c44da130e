"""The live state in Redis, shared by every API replica: the scale-out twin of :class:`~liverec.state.State`.

Same semantics as the in-process state (the same test suite runs against both), different home:

* ``P:h:{user}`` — the user's recent item indices, a list trimmed to ``max_history``; ``P:s:{user}`` — the
  set of every item index the user touched; ``P:users`` — a hash of known users (its size is ``n_users``).
* ``P:item-ids`` (list) / ``P:item-index`` (hash) — dense item indices in order of first sight, shared by
  all processes so that an index means the same item everywhere. Indices are never reused, so replicas
  cache the list and read only its new tail.
* ``P:item-stats`` — a hash by item index of ``"popularity updated count"``: time-decayed popularity, the
  event time it was last brought up to, and the event count (one field, so one read and one write per
  event); ``P:clock`` — the newest event time applied (popularity decays against it).
* ``P:applied`` — a bitmap by log offset: bit ``N`` is set once event ``N`` has been applied. Application
  is one Lua script per batch that sets the bit and applies the event only if the bit was clear, so an
  event delivered twice (an API replica and a worker, or a worker and the one that reclaimed its pending
  entries) is counted once, atomically. One bit per event: 125 kB per million events.
* The catalogue is the event log's ``P:catalog`` hash; each replica mirrors it in a local
  :class:`~liverec.state.store.Catalogue` and applies the ids listed in ``P:catalog:changes`` since its
  last look, on every request (one ``LLEN`` in the request's pipeline).

History order is the order in which events are applied: an event applied late (by a worker, after the
API that stored it died before applying it) lands at the end of its user's sequence, not at its log
position. Counts, seen sets and popularity do not depend on order.

A user's recommendation needs one round trip (``user_view``: history, seen set and the two change
counters in one pipeline). Popularity (for users without history and to fill short answers) is read whole,
so it is cached for ``popularity_ttl_s`` seconds (0: always read).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from liverec.events.log import tombstone_record
from liverec.state.base import StateStore
from liverec.state.store import Catalogue, EventLike, StateConfig

__all__ = ["RedisState"]

_APPLY = """
local p = ARGV[1]
local max_history = tonumber(ARGV[2])
local half_life = tonumber(ARGV[3])
local applied, top, clock = 0, 0, nil
local item_index, stats = p .. ':item-index', p .. ':item-stats'
for i = 4, #ARGV, 5 do
  local offset = tonumber(ARGV[i])
  if redis.call('SETBIT', p .. ':applied', offset, 1) == 0 then
    applied = applied + 1
    if offset > top then top = offset end
    local weight = tonumber(ARGV[i + 3])
    if weight > 0 then
      local user, item, t = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 4])
      redis.call('HSETNX', p .. ':users', user, 1)
      local index = redis.call('HGET', item_index, item)
      if not index then
        index = redis.call('RPUSH', p .. ':item-ids', item) - 1
        redis.call('HSET', item_index, item, index)
      end
      local history = p .. ':h:' .. user
      if redis.call('RPUSH', history, index) > max_history then
        redis.call('LTRIM', history, -max_history, -1)
      end
      redis.call('SADD', p .. ':s:' .. user, index)
      local popularity, last, count = 0, 0, 0
      local old = redis.call('HGET', stats, index)
      if old then
        local a, b, c = string.match(old, '(%S+) (%S+) (%S+)')
        popularity, last, count = tonumber(a), tonumber(b), tonumber(c)
      end
      if t >= last then
        popularity = popularity * 2 ^ ((last - t) / half_life) + weight
        last = t
      else
        popularity = popularity + weight * 2 ^ ((t - last) / half_life)
      end
      redis.call('HSET', stats, index, string.format('%.17g %.17g %d', popularity, last, count + 1))
      if clock == nil or t > clock then clock = t end
    end
  end
end
if applied > 0 then
  redis.call('INCRBY', p .. ':n-events', applied)
  if top > tonumber(redis.call('GET', p .. ':offset') or '0') then redis.call('SET', p .. ':offset', top) end
  if clock ~= nil and clock > tonumber(redis.call('GET', p .. ':clock') or '0') then
    redis.call('SET', p .. ':clock', string.format('%.17g', clock))
  end
end
return applied
"""

_ITEMS = """
local out = {}
for i = 2, #ARGV do
  local index = redis.call('HGET', ARGV[1] .. ':item-index', ARGV[i])
  if not index then
    index = redis.call('RPUSH', ARGV[1] .. ':item-ids', ARGV[i]) - 1
    redis.call('HSET', ARGV[1] .. ':item-index', ARGV[i], index)
  end
  out[#out + 1] = tonumber(index)
end
return out
"""

_RESET_USER = """
local p, user, max_history = ARGV[1], ARGV[2], tonumber(ARGV[3])
local known = redis.call('HEXISTS', p .. ':users', user)
redis.call('DEL', p .. ':h:' .. user, p .. ':s:' .. user)
if #ARGV == 3 then
  redis.call('HDEL', p .. ':users', user)
  return known
end
redis.call('HSETNX', p .. ':users', user, 1)
local history = {}
for i = math.max(4, #ARGV - max_history + 1), #ARGV do history[#history + 1] = ARGV[i] end
redis.call('RPUSH', p .. ':h:' .. user, unpack(history))
for i = 4, #ARGV, 5000 do
  redis.call('SADD', p .. ':s:' .. user, unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
return known
"""

#: State keys (not the log's): what ``clear`` deletes besides the per-user keys.
_STATE_KEYS = ("users", "item-ids", "item-index", "item-stats", "clock", "applied", "n-events", "offset")


class RedisState:
    """User sequences, item statistics and the catalogue in Redis (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        prefix: str = "liverec",
        config: StateConfig | None = None,
        *,
        popularity_ttl_s: float = 0.0,
        apply_chunk: int = 1000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config or StateConfig()
        self.popularity_ttl_s = popularity_ttl_s
        self.apply_chunk = apply_chunk
        self._half_life_s = self.config.half_life_days * 86400.0
        self._apply = client.register_script(_APPLY)
        self._items = client.register_script(_ITEMS)
        self._reset_user = client.register_script(_RESET_USER)
        self._lock = threading.RLock()
        self.item_ids: list[str] = []
        self.item_index: dict[str, int] = {}
        self.catalogue = Catalogue()
        self._changes_seen = 0
        self._popularity: tuple[float, np.ndarray] | None = None
        self.sync()

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    # -- sizes and counters ------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return int(self.client.hlen(self._key("users")))

    @property
    def offset(self) -> int:
        """The highest log offset applied (events below it may still be waiting for a worker)."""
        return int(self.client.get(self._key("offset")) or 0)

    @property
    def n_events(self) -> int:
        return int(self.client.get(self._key("n-events")) or 0)

    @property
    def clock(self) -> float:
        return float(self.client.get(self._key("clock")) or 0.0)

    # -- the local mirrors -------------------------------------------------------------------------
    def sync(self, n_items: int | None = None, n_changes: int | None = None) -> None:
        """Bring the cached item list and catalogue up to date (pass the lengths when already read)."""
        if n_items is None or n_changes is None:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.llen(self._key("item-ids"))
                pipe.llen(self._key("catalog:changes"))
                n_items, n_changes = (int(v) for v in pipe.execute())
        if n_items > len(self.item_ids):
            with self._lock:
                new = self.client.lrange(self._key("item-ids"), len(self.item_ids), n_items - 1)
                for item_id in new:
                    if item_id not in self.item_index:
                        self.item_index[item_id] = len(self.item_ids)
                        self.item_ids.append(item_id)
        if n_changes > self._changes_seen:
            with self._lock:
                changed = self.client.lrange(self._key("catalog:changes"), self._changes_seen, n_changes - 1)
                ids = list(dict.fromkeys(changed))
                records = self.client.hmget(self._key("catalog"), ids)
                indices = self.items_for(ids)
                for index, raw in zip(indices.tolist(), records, strict=True):
                    record = None if raw is None else json.loads(raw)
                    if record is None or record.get("deleted"):
                        self.catalogue.remove(index)
                    else:
                        self.catalogue.set(index, record)
                self._changes_seen = n_changes

    # -- writing -----------------------------------------------------------------------------------
    def item(self, item_id: str) -> int:
        """The item's dense index, created (in Redis, for every process) on first sight."""
        index = self.item_index.get(item_id)
        return index if index is not None else int(self.items_for([item_id])[0])

    def items_for(self, item_ids: Sequence[str]) -> np.ndarray:
        """Dense indices of ``item_ids``, creating the unknown ones (one script call for all of them)."""
        missing = [i for i in dict.fromkeys(item_ids) if i not in self.item_index]
        for start in range(0, len(missing), 10_000):
            self._items(args=[self.prefix, *missing[start : start + 10_000]])
        if missing:
            self.sync(n_items=int(self.client.llen(self._key("item-ids"))), n_changes=self._changes_seen)
        return np.array([self.item_index[i] for i in item_ids], dtype=np.int64)

    def apply(self, events: Iterable[EventLike]) -> int:
        """Apply events not applied yet (by offset), atomically per batch; returns how many were new."""
        weights = self.config.event_weights
        head = [self.prefix, str(self.config.max_history), repr(self._half_life_s)]
        applied = 0
        batch: list[str] = []
        for event in [*events, None]:
            if event is not None:
                weight = float(weights.get(event.type, 0.0))
                batch += [str(event.offset), event.user_id, event.item_id, repr(weight), repr(float(event.timestamp))]
            if batch and (event is None or len(batch) >= 5 * self.apply_chunk):
                applied += int(self._apply(args=head + batch))
                batch = []
        if applied:
            self.sync()  # new items got indices: this process's mirror learns them now
        return applied

    def reset_users(self, user_ids: Iterable[str], events: Iterable[EventLike] = ()) -> int:
        """Rebuild the named users' keys from ``events`` (in log order), one script per user; a user left with no
        event loses ``P:h:{user}``, ``P:s:{user}`` and its ``P:users`` entry. Item statistics stay aggregated.
        An event of such a user applied by another process while this runs may be missing from the user's
        recent sequence afterwards (it stays in the log and in the counts)."""
        weights = self.config.event_weights
        targets = list(dict.fromkeys(user_ids))
        items: dict[str, list[str]] = {user: [] for user in targets}
        for event in events:
            if event.user_id in items and float(weights.get(event.type, 0.0)) > 0:
                items[event.user_id].append(event.item_id)
        known = 0
        for user in targets:
            indices = self.items_for(items[user]).tolist()
            args = [self.prefix, user, str(self.config.max_history), *map(str, indices)]
            known += int(self._reset_user(args=args))
        self._popularity = None
        return known

    def put_item(self, item_id: str, record: Mapping[str, Any]) -> int:
        """Index the item and store its catalogue record (the log's ``P:catalog``; replicas mirror it)."""
        index = self.item(item_id)
        self._write_record(item_id, {**record, "item_id": item_id, "deleted": False})
        return index

    def remove_item(self, item_id: str) -> bool:
        """Never recommend ``item_id`` (even if it first appears later); returns whether it was known."""
        known = item_id in self.item_index or self.client.hexists(self._key("item-index"), item_id)
        self.item(item_id)
        self._write_record(item_id, tombstone_record(item_id))
        return bool(known)

    def _write_record(self, item_id: str, record: Mapping[str, Any]) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key("catalog"), item_id, json.dumps(record, ensure_ascii=False))
            pipe.rpush(self._key("catalog:changes"), item_id)
            pipe.execute()
        self.sync()

    # -- reading -----------------------------------------------------------------------------------
    def user_view(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's history (oldest first) and seen items, in one round trip (the mirrors synced too)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lrange(self._key(f"h:{user_id}"), 0, -1)
            pipe.smembers(self._key(f"s:{user_id}"))
            pipe.llen(self._key("item-ids"))
            pipe.llen(self._key("catalog:changes"))
            history, seen, n_items, n_changes = pipe.execute()
        if n_items > len(self.item_ids) or n_changes > self._changes_seen:
            self.sync(int(n_items), int(n_changes))
        return np.array(history, dtype=np.int64), np.array(list(seen), dtype=np.int64)

    def has_user(self, user_id: str) -> bool:
        return bool(self.client.hexists(self._key("users"), user_id))

    def find_users(self, prefix: str, limit: int) -> list[str]:
        """At most ``limit`` user keys starting with ``prefix``, in the order ``HSCAN`` meets them (matched by
        Redis: the pattern's special characters in ``prefix`` are escaped)."""
        pattern = "".join("\\" + char if char in "*?[]\\^-" else char for char in prefix) + "*"
        found: list[str] = []
        for user_id, _ in self.client.hscan_iter(self._key("users"), match=pattern, count=1000):
            found.append(str(user_id))
            if len(found) >= limit:
                break
        return found

    def history(self, user_id: str) -> np.ndarray:
        return np.array(self.client.lrange(self._key(f"h:{user_id}"), 0, -1), dtype=np.int64)

    def seen(self, user_id: str) -> np.ndarray:
        return np.array(list(self.client.smembers(self._key(f"s:{user_id}"))), dtype=np.int64)

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of known items (unknown ones are dropped), in the order given."""
        self.sync()
        index = self.item_index
        return np.array([index[i] for i in item_ids if i in index], dtype=np.int64)

    def _item_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Popularity, its update time and counts per item index (arrays over ``n_items``), and the clock."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key("item-stats"))
            pipe.get(self._key("clock"))
            raw, clock = pipe.execute()
        self.sync()
        n = self.n_items
        popularity, updated, counts = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        if raw:
            index = np.fromiter((int(key) for key in raw), dtype=np.int64, count=len(raw))
            parts = np.array(" ".join(raw.values()).split(), dtype=np.float64).reshape(-1, 3)
            inside = index < n
            popularity[index[inside]] = parts[inside, 0]
            updated[index[inside]] = parts[inside, 1]
            counts[index[inside]] = parts[inside, 2].astype(np.int64)
        return popularity, updated, counts, float(clock or 0.0)

    def counts(self) -> np.ndarray:
        return self._item_stats()[2]

    def popularity(self, now: float | None = None) -> np.ndarray:
        """Time-decayed popularity of every item as of ``now`` (default: the newest event)."""
        cached = self._popularity
        if now is None and cached is not None and time.monotonic() - cached[0] < self.popularity_ttl_s:
            if len(cached[1]) == self.n_items:
                return cached[1]
        values, updated, _, clock = self._item_stats()
        reference = max(clock, 0.0) if now is None else now
        result = values * np.exp2(np.minimum(updated - reference, 0.0) / self._half_life_s)
        if now is None:
            self._popularity = (time.monotonic(), result)
        return result

    def item_stats(self, item_id: str) -> dict[str, float] | None:
        self.sync()
        index = self.item_index.get(item_id)
        if index is None:
            return None
        popularity = self.popularity()
        raw = self.client.hget(self._key("item-stats"), index)
        return {"count": int(raw.split()[2]) if raw else 0, "popularity": float(popularity[index])}

    # -- persistence (Redis persists the state itself, by its own AOF/RDB) --------------------------
    def clear(self) -> None:
        """Delete every state key (the log and catalogue stay): ``liverec rebuild`` starts from here."""
        users = list(self.client.hkeys(self._key("users")))
        keys = [self._key(name) for name in _STATE_KEYS]
        keys += [self._key(f"{kind}:{user}") for user in users for kind in ("h", "s")]
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])
        with self._lock:
            self.item_ids, self.item_index = [], {}
            self.catalogue, self._changes_seen = Catalogue(), 0
            self._popularity = None
        self.sync()

    def fingerprint(self) -> dict[str, Any]:
        """The same summary as ``State.fingerprint`` (histories, seen sets, counts, popularity by external id)."""
        self.sync()
        ids = self.item_ids
        users = sorted(self.client.hkeys(self._key("users")))
        with self.client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.lrange(self._key(f"h:{user}"), 0, -1)
                pipe.smembers(self._key(f"s:{user}"))
            replies = pipe.execute()
        popularity = self.popularity()
        return {
            "offset": self.offset,
            "n_events": self.n_events,
            "users": {u: [ids[int(i)] for i in replies[2 * k]] for k, u in enumerate(users)},
            "seen": {u: sorted(ids[int(i)] for i in replies[2 * k + 1]) for k, u in enumerate(users)},
            "counts": {ids[i]: int(c) for i, c in enumerate(self.counts()) if c},
            "popularity": {ids[i]: round(float(p), 9) for i, p in enumerate(popularity) if p},
        }


_SHARED: type[StateStore] = RedisState  # checked by mypy: the Redis state implements the interface
