"""The event log on Redis Streams: the scale-out twin of :class:`~liverec.events.log.SQLiteEventLog`.

Layout (every key starts with the configured prefix ``P``; one Redis, not a Redis Cluster, because the
append script touches several keys atomically):

* ``P:events`` — a stream; entry ``N-0`` is the event at log offset ``N``, with two fields: ``e`` (the
  ``event_id``) and ``j`` (user, item, type, timestamp, value, context, recommendation id and the time it
  was received, as one compact JSON array: fewer fields cost Redis less time and memory per event).
  Offsets are the same gap-free integers 1, 2, 3, ... as in the SQLite log, so every reader (state
  catch-up, the updater, the replay) works unchanged on either backend: ``read(after_offset)`` is an
  ``XRANGE`` from ``after_offset + 1``.
* ``P:seq`` — the last offset given out; ``P:event-id-set`` — the set of stored event ids (idempotency).
  Until session 34 the ids were a hash ``P:event-ids`` (``event_id -> offset``; the offset was never read): a store
  that still has it is read and written in both until :meth:`RedisEventLog.retire_legacy_event_ids` (``liverec
  migrate``) folds the hash into the set, once no replica of an older version runs (see docs/deployment.md).
* ``P:catalog`` — a hash ``item_id -> JSON record`` (deleted items keep a tombstone record), and
  ``P:catalog:changes``, a list of the item ids changed, in order: an API replica keeps the catalogue in
  memory and reads only the changes after the last one it applied.
* ``P:meta`` — small metadata.
* ``P:impressions`` — a stream of served lists (fields ``r``: recommendation id, ``u``: stored user id or empty,
  ``t``: when served, ``j``: the impression as JSON); ``P:impression-ids`` — a hash ``recommendation_id -> entry
  id``; ``P:rewards`` — a hash ``recommendation_id -> JSON array`` of the rewards joined to that list. Written
  from the log's threads (serving does not wait); erasure deletes a user's entries and rewrites the stream.

Appending is one Lua script per batch: for each event, skip it if its ``event_id`` is known, else take the
next offset, ``XADD`` the entry and remember the id. Redis runs a script alone, so concurrent appends from
any number of API replicas get consecutive offsets and an ``event_id`` is stored once, ever.

Durability: an append returns once Redis has executed the script. It survives a crash of Redis only if
Redis persists every write before replying: ``appendonly yes`` with ``appendfsync always`` (see
``docs/deployment.md``). With the default ``everysec`` up to a second of acknowledged events can be lost
when Redis (not the API process) dies.

Consumer groups (``liverec worker``): :meth:`RedisEventLog.consume` reads new entries for one consumer of
a group, :meth:`RedisEventLog.ack` acknowledges them after they were processed, and
:meth:`RedisEventLog.reclaim` takes over entries a dead consumer left pending (``XAUTOCLAIM``): delivery is
at-least-once, so whatever consumes must be idempotent (state application is, by offset).

Erasure (:meth:`RedisEventLog.erase_events`): ``XDEL`` only flags an entry as deleted inside the stream's
listpack node; its bytes stay there (``DUMP``, RDB and AOF rewrites carry them) until every entry of the node
is gone. So after the ``XDEL`` the stream is rewritten without them: the entries are copied, in chunks, to a
new key with the same entry ids, and one script copies what was appended meanwhile, recreates the consumer
groups (last-delivered id, entries read, consumers, pending entries with their idle time and delivery count)
and the stream's last id, and renames the copy over the original. The erased events' ids leave ``P:event-id-set``
(so a resent erased event is stored again). Erasures are recorded in the list ``P:erasures`` (its length is the
erasure epoch); one erasure at a time (``P:erasure-lock``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from liverec.errors import BackendUnavailable
from liverec.events.impressions import Impression, Reward
from liverec.events.log import (
    ERASURE_KINDS,
    AppendResult,
    ConsumerGroupLog,
    ErasedEvents,
    ErasureRecord,
    EventColumns,
    ImportResult,
    OnErased,
    StoredEvent,
    as_strings,
    as_values,
    collector_paused,
    item_record,
    tombstone_record,
)
from liverec.events.schema import Event

logger = logging.getLogger(__name__)

__all__ = ["BackendUnavailable", "RedisEventLog", "delete_prefix", "redis_client"]

#: The fields of an event, in order (a stored event adds its offset).
_EVENT_FIELDS = tuple(field.name for field in dataclasses.fields(Event))

#: The JSON encoder of :func:`_fields` (``json.dumps`` builds a new one per call when given options).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: Events per append script call during bulk imports (one script blocks Redis while it runs: keep it short).
IMPORT_CHUNK = 1000

# Known ids are asked for with one SMISMEMBER per 1,000 events, the new offsets taken with one INCRBY and remembered
# with one SADD per 1,000: only the XADD is a call per event (a call per step cost Redis 6-8 us per imported event;
# issue 22). The first of an id repeated inside the batch is the one stored; the last element is the last offset.
# KEYS[4], the hash ``event_id -> offset`` that held the ids until session 34, is read and written too while it
# exists (a rolling upgrade: replicas of the version before read it alone), until ``retire_legacy_event_ids``.
_APPEND = """
local n = #ARGV / 2
local legacy = redis.call('EXISTS', KEYS[4]) == 1
local ids = {}
for i = 1, n do ids[i] = ARGV[2 * i - 1] end
local known = {}
for first = 1, n, 1000 do
  local last = math.min(first + 999, n)
  local found = redis.call('SMISMEMBER', KEYS[3], unpack(ids, first, last))
  local old = legacy and redis.call('HMGET', KEYS[4], unpack(ids, first, last)) or {}
  for k = 1, #found do
    if found[k] == 1 or old[k] then known[first + k - 1] = true end
  end
end
local out, fresh, seen = {}, {}, {}
for i = 1, n do
  if known[i] or seen[ids[i]] then
    out[i] = 0
  else
    seen[ids[i]] = true
    fresh[#fresh + 1] = i
  end
end
local offset = tonumber(redis.call('GET', KEYS[1]) or '0')
if #fresh > 0 then offset = redis.call('INCRBY', KEYS[1], #fresh) - #fresh end
local written, pairs_ = {}, {}
local function flush()
  redis.call('SADD', KEYS[3], unpack(written))
  if legacy then redis.call('HSET', KEYS[4], unpack(pairs_)) end
  written, pairs_ = {}, {}
end
for _, i in ipairs(fresh) do
  offset = offset + 1
  redis.call('XADD', KEYS[2], offset .. '-0', 'e', ids[i], 'j', ARGV[2 * i])
  out[i] = offset
  written[#written + 1] = ids[i]
  if legacy then
    pairs_[#pairs_ + 1] = ids[i]
    pairs_[#pairs_ + 1] = offset
  end
  if #written >= 1000 then flush() end
end
if #written > 0 then flush() end
out[n + 1] = offset
return out
"""

# Folds a chunk of the legacy id hash into the id set: HSCAN from the cursor ARGV[1], COUNT ARGV[2]; returns the next
# cursor ('0' once the whole hash was walked: then the hash is deleted).
_FOLD_LEGACY_IDS = """
local reply = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', ARGV[2])
local fields, ids = reply[2], {}
for i = 1, #fields, 2 do ids[#ids + 1] = fields[i] end
for first = 1, #ids, 1000 do
  redis.call('SADD', KEYS[1], unpack(ids, first, math.min(first + 999, #ids)))
end
if reply[1] == '0' then redis.call('DEL', KEYS[2]) end
return reply[1]
"""

_DELETE_ITEM = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local existed = 0
if old and not cjson.decode(old)['deleted'] then existed = 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
return existed
"""


#: Entries copied per script call while a stream is rewritten (each call blocks Redis briefly).
REWRITE_CHUNK = 5000

_COPY = """
local entries
if ARGV[1] == '' then
  entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
for _, entry in ipairs(entries) do
  redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
end
if #entries == 0 then return '' end
return entries[#entries][1]
"""

# the tail appended since the last chunk, then the consumer groups and the stream's ids, then the swap
_SWAP = """
local source, target, last = KEYS[1], KEYS[2], ARGV[1]
while true do
  local entries
  if last == '' then
    entries = redis.call('XRANGE', source, '-', '+', 'COUNT', 1000)
  else
    entries = redis.call('XRANGE', source, '(' .. last, '+', 'COUNT', 1000)
  end
  if #entries == 0 then break end
  for _, entry in ipairs(entries) do
    redis.call('XADD', target, entry[1], unpack(entry[2]))
  end
  last = entries[#entries][1]
end
local function record(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local info = record(redis.call('XINFO', 'STREAM', source))
if redis.call('EXISTS', target) == 0 then
  -- nothing is left: an empty stream under the same groups (created, then its one placeholder removed)
  redis.call('XADD', target, '0-1', 'x', '')
  redis.call('XDEL', target, '0-1')
end
redis.call('XSETID', target, info['last-generated-id'], 'ENTRIESADDED', info['entries-added'],
  'MAXDELETEDID', info['max-deleted-entry-id'])
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', source)) do
  local group = record(raw)
  local name = group['name']
  if group['entries-read'] then
    redis.call('XGROUP', 'CREATE', target, name, group['last-delivered-id'], 'ENTRIESREAD', group['entries-read'])
  else
    redis.call('XGROUP', 'CREATE', target, name, group['last-delivered-id'])
  end
  for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', source, name)) do
    redis.call('XGROUP', 'CREATECONSUMER', target, name, record(consumer)['name'])
  end
  local start = '-'
  while true do
    local pending = redis.call('XPENDING', source, name, start, '+', 1000)
    if #pending == 0 then break end
    for _, p in ipairs(pending) do
      redis.call('XCLAIM', target, name, p[2], 0, p[1], 'IDLE', p[3], 'RETRYCOUNT', p[4], 'FORCE', 'JUSTID')
    end
    start = '(' .. pending[#pending][1]
  end
end
redis.call('RENAME', target, source)
return 1
"""

_ADD_REWARDS = """
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local list = old and cjson.decode(old) or {}
  list[#list + 1] = cjson.decode(ARGV[i + 1])
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(list))
end
return 1
"""

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redis_client(url: str) -> Any:
    """A redis-py client for ``url`` (strings decoded as UTF-8); fails with one clear line if unreachable."""
    try:
        import redis
    except ImportError as error:  # pragma: no cover - the extra is part of the test install
        raise BackendUnavailable("the Redis backend needs the 'redis' extra: pip install 'liverec[redis]'") from error
    client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        raise BackendUnavailable(f"redis_url: cannot reach Redis at {url!r} ({error})") from error
    return client


class RedisEventLog:
    """The append-only event log, the item catalogue and metadata in Redis (see the module docstring).

    ``client`` is a redis-py client created with ``decode_responses=True`` (:func:`redis_client`);
    ``prefix`` namespaces every key. ``on_commit(events)`` runs after each append with the new events,
    in offset order, before the append returns (the engine applies them to the state there).
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "liverec",
        on_commit: Any = None,
        *,
        threads: int = 4,
        pseudonymise: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._on_commit = on_commit
        self._pseudonymise = pseudonymise
        self.stream = f"{prefix}:events"
        self._seq = f"{prefix}:seq"
        self._ids = f"{prefix}:event-id-set"
        self._legacy_ids = f"{prefix}:event-ids"  # the hash of the versions before session 34
        self.catalog_key = f"{prefix}:catalog"
        self.catalog_changes_key = f"{prefix}:catalog:changes"
        self._meta = f"{prefix}:meta"
        self._erasures = f"{prefix}:erasures"
        self._erasure_lock = f"{prefix}:erasure-lock"
        self.impressions_stream = f"{prefix}:impressions"
        self._impression_ids = f"{prefix}:impression-ids"
        self._rewards = f"{prefix}:rewards"
        self._add_rewards = client.register_script(_ADD_REWARDS)
        self._pending: set[Future[None]] = set()
        self._append = client.register_script(_APPEND)
        self._copy = client.register_script(_COPY)
        self._swap = client.register_script(_SWAP)
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._delete_item = client.register_script(_DELETE_ITEM)
        self._fold_legacy_ids = client.register_script(_FOLD_LEGACY_IDS)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="liverec-redis-log")
        self._closed = False
        self._lock = threading.Lock()
        self._commits = 0

    # -- appending -------------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store ``events`` (skipping known ``event_id``s); returns once Redis has executed the append."""
        return self._append_events(list(events), keep=True)

    def append_async(self, events: Sequence[Event]) -> Future[AppendResult]:
        """:meth:`append` in a worker thread (the API's event loop awaits the future)."""
        if self._closed:
            raise RuntimeError(f"{self.stream}: the event log is closed")
        return self._pool.submit(self._append_events, list(events), keep=True)

    def _append_events(self, events: list[Event], *, keep: bool) -> AppendResult:
        if not events:
            return AppendResult(0, 0, self.last_offset())
        if self._pseudonymise is not None:
            key = self._pseudonymise
            events = [dataclasses.replace(event, user_id=key(event.user_id)) for event in events]
        received = time.time()
        args: list[str] = []
        for event in events:
            args += _fields(event, received)
        return self._append_args(args, lambda: events, keep=keep)

    def _append_args(self, args: list[str], events: Callable[[], Sequence[Event]], *, keep: bool) -> AppendResult:
        """Run the append script on ``args`` (``event_id``, body pairs). ``events()`` gives the events they encode;
        it is called only when someone takes the stored ones (``keep``, ``on_commit``): a bulk import without
        ``on_commit`` builds no event object."""
        keys = [self._seq, self.stream, self._ids, self._legacy_ids]
        return self._appended(self._append(keys=keys, args=args), events, keep=keep)

    def _appended(self, result: list[Any], events: Callable[[], Sequence[Event]], *, keep: bool) -> AppendResult:
        """The append script's reply (each event's offset, 0 for a known id, then the last offset) as a result;
        ``on_commit`` is told the stored events."""
        offsets, last = [int(o) for o in result[:-1]], int(result[-1])
        new = len(offsets) - offsets.count(0)
        stored: list[StoredEvent] = []
        if keep or (self._on_commit is not None and new):
            stored = [_stored_event(event, offset) for event, offset in zip(events(), offsets, strict=True) if offset]
        with self._lock:
            self._commits += 1
        if self._on_commit is not None and stored:
            self._on_commit(stored)
        return AppendResult(new, len(offsets) - new, last, stored if keep else [])

    def import_events(self, events: Iterable[Event], batch_size: int = IMPORT_CHUNK) -> ImportResult:
        """Bulk-append ``events`` in script calls of ``batch_size``; idempotent by ``event_id``."""
        stored = duplicates = 0
        last = self.last_offset()
        iterator = iter(events)
        while chunk := list(itertools.islice(iterator, batch_size)):  # one chunk of events held at a time
            result = self._append_events(chunk, keep=False)
            stored, duplicates, last = stored + result.stored, duplicates + result.duplicates, result.last_offset
        return ImportResult(stored, duplicates, last)

    @contextlib.contextmanager
    def bulk_import(self) -> Iterator[None]:
        """A block of bulk imports: nothing to change here (each script call is its own unit)."""
        yield

    def import_columns(
        self,
        event_ids: Sequence[Any] | np.ndarray,
        user_ids: Sequence[Any] | np.ndarray,
        item_ids: Sequence[Any] | np.ndarray,
        types: str | Sequence[str] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray,
        values: Sequence[float | None] | np.ndarray | None = None,
        batch_size: int = IMPORT_CHUNK,
    ) -> ImportResult:
        """Bulk-append events given as columns (the signature of ``SQLiteEventLog.import_columns``).

        Each script call's arguments are built straight from the columns (no event object unless ``on_commit``
        wants the events) while Redis runs the call before, and sent one ahead of the replies read
        (:meth:`_import_calls`), so offsets follow the columns' order."""
        n = len(event_ids)
        stamps = np.asarray(timestamps, dtype=np.float64)
        lengths = {len(event_ids), len(user_ids), len(item_ids), len(stamps)}
        lengths |= set() if isinstance(types, str) else {len(types)}
        lengths |= set() if values is None else {len(values)}
        if len(lengths) != 1:
            raise ValueError(f"import_columns: columns have different lengths {sorted(lengths)}")
        if not np.isfinite(stamps).all():
            raise ValueError("import_columns: timestamps must be finite Unix seconds")
        received = time.time()

        def chunks() -> Iterator[tuple[list[str], Callable[[], list[Event]]]]:
            for start in range(0, n, batch_size):
                part = slice(start, start + batch_size)
                ids, users, items = as_strings(event_ids[part]), as_strings(user_ids[part]), as_strings(item_ids[part])
                if self._pseudonymise is not None:
                    users = [self._pseudonymise(user) for user in users]
                kinds = [types] * len(ids) if isinstance(types, str) else as_strings(types[part])
                seconds = stamps[part].tolist()
                numbers: list[float | None] = [None] * len(ids) if values is None else as_values(values[part])
                bodies = _bodies(users, items, kinds, seconds, numbers, received)
                columns = (ids, users, items, kinds, seconds, numbers)
                yield (
                    [*itertools.chain.from_iterable(zip(ids, bodies, strict=True))],
                    functools.partial(_events, columns),
                )

        results = self._import_calls(chunks())
        if not results:
            return ImportResult(0, 0, self.last_offset())
        stored = sum(result.stored for result in results)
        return ImportResult(stored, n - stored, results[-1].last_offset)

    def _import_calls(self, calls: Iterable[tuple[list[str], Callable[[], list[Event]]]]) -> list[AppendResult]:
        """Run the append script on each call's arguments, in order, on one connection, each call sent before the
        reply to the one before it is read: Redis runs a connection's commands in the order sent, so offsets follow
        the calls, and it starts each call as soon as it finishes the one before, while this process reads that
        reply and builds the next. With one call in flight from a worker thread, Redis waited on Python between
        calls: 163.7k against 277.1k events/s importing 5M events (docs/results.md, "Session 25")."""
        sha = self.client.script_load(_APPEND)  # EVALSHA below, outside the Script object's own NOSCRIPT retry
        keys = (self._seq, self.stream, self._ids, self._legacy_ids)
        pool = self.client.connection_pool
        connection = pool.get_connection()
        sent: collections.deque[Callable[[], list[Event]]] = collections.deque()
        results: list[AppendResult] = []
        try:
            for args, events in calls:
                connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                sent.append(events)
                if len(sent) > 1:
                    results.append(self._appended(connection.read_response(), sent.popleft(), keep=False))
            while sent:
                results.append(self._appended(connection.read_response(), sent.popleft(), keep=False))
        except BaseException:
            connection.disconnect()  # a reply may be left unread: the connection must not be reused as it is
            raise
        finally:
            pool.release(connection)
        return results

    # -- reading ---------------------------------------------------------------------------------
    def read(self, after_offset: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        """Events with ``offset > after_offset``, in offset order, at most ``limit``."""
        entries = self.client.xrange(self.stream, min=f"{after_offset + 1}-0", max="+", count=limit)
        return [_parse(entry_id, fields) for entry_id, fields in entries]

    def iter_all(self, batch: int = 50_000) -> Iterator[list[StoredEvent]]:
        after = 0
        while chunk := self.read(after, batch):
            yield chunk
            after = chunk[-1].offset

    def iter_columns(self, up_to: int | None = None, batch: int = 50_000) -> Iterator[EventColumns]:
        """The events with offset at most ``up_to`` (None: every one), in offset order, as columns of at most
        ``batch`` rows (one ``XRANGE`` each; the entry's JSON is parsed, no event object is built)."""
        after, end = 0, "+" if up_to is None else f"{up_to}-0"
        while True:
            with collector_paused():
                entries = self.client.xrange(self.stream, min=f"{after + 1}-0", max=end, count=batch)
                if not entries:
                    return
                columns = EventColumns.from_rows([_column_row(entry_id, fields) for entry_id, fields in entries])
                del entries
            yield columns
            after = int(columns.offsets[-1])

    def last_offset(self) -> int:
        return int(self.client.get(self._seq) or 0)

    def count(self) -> int:
        return int(self.client.xlen(self.stream))

    @property
    def commits(self) -> int:
        return self._commits

    def writable(self) -> bool:
        """Whether appends can be made now: not closed and Redis answers."""
        if self._closed:
            return False
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    # -- consumer groups -------------------------------------------------------------------------
    def ensure_group(self, group: str, consumer: str | None = None) -> None:
        """Create consumer group ``group`` reading from the start of the log (no-op if it exists), and
        ``consumer`` in it: a member is listed (``XINFO``) from the start, not only once it got entries."""
        try:
            self.client.xgroup_create(self.stream, group, id="0", mkstream=True)
        except Exception as error:
            if "BUSYGROUP" not in str(error):
                raise
        if consumer is not None:
            self.client.xgroup_createconsumer(self.stream, group, consumer)

    def consume(self, group: str, consumer: str, count: int = 1000, block_ms: int = 1000) -> list[StoredEvent]:
        """New entries for ``consumer`` of ``group`` (pending until :meth:`ack`); waits up to ``block_ms``."""
        reply = self.client.xreadgroup(group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [_parse(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    def reclaim(self, group: str, consumer: str, min_idle_ms: int, count: int = 1000) -> list[StoredEvent]:
        """Take over entries of ``group`` pending longer than ``min_idle_ms`` (their consumer died)."""
        claimed: list[StoredEvent] = []
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream, group, consumer, min_idle_ms, start_id=cursor, count=count)
            cursor, entries = reply[0], reply[1]
            claimed += [_parse(entry_id, fields) for entry_id, fields in entries if fields is not None]
            if cursor == "0-0" or len(claimed) >= count:
                return claimed

    def ack(self, group: str, offsets: Sequence[int]) -> int:
        if not offsets:
            return 0
        return int(self.client.xack(self.stream, group, *(f"{offset}-0" for offset in offsets)))

    def pending(self, group: str) -> int:
        """Entries of ``group`` delivered but not acknowledged."""
        try:
            return int(self.client.xpending(self.stream, group)["pending"])
        except Exception as error:
            if "NOGROUP" in str(error):
                return 0
            raise

    # -- catalogue and metadata ------------------------------------------------------------------
    def put_item(
        self,
        item_id: str,
        title: str | None = None,
        categories: Iterable[str] = (),
        available: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or replace an item's record (every field; PUT semantics)."""
        record = item_record(item_id, title, categories, available, attributes)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.catalog_key, item_id, json.dumps(record, ensure_ascii=False))
            pipe.rpush(self.catalog_changes_key, item_id)
            pipe.execute()
        return record

    def put_items(self, records: Iterable[Mapping[str, Any]], batch_size: int = IMPORT_CHUNK) -> int:
        """Create or replace many records, each as :meth:`put_item` with the mapping's fields as arguments, one
        pipelined transaction per ``batch_size`` records; returns how many were written."""
        iterator = iter(records)
        written = 0
        while chunk := [item_record(**record) for record in itertools.islice(iterator, batch_size)]:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.catalog_key, mapping={r["item_id"]: json.dumps(r, ensure_ascii=False) for r in chunk})
                pipe.rpush(self.catalog_changes_key, *(record["item_id"] for record in chunk))
                pipe.execute()
            written += len(chunk)
        return written

    def delete_item(self, item_id: str) -> bool:
        """Replace the item's record with a tombstone; returns whether a live record existed."""
        tombstone = tombstone_record(item_id)
        keys = [self.catalog_key, self.catalog_changes_key]
        return bool(self._delete_item(keys=keys, args=[item_id, json.dumps(tombstone)]))

    def get_item(self, item_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        raw = self.client.hget(self.catalog_key, item_id)
        record = None if raw is None else json.loads(raw)
        return None if record is None or (record["deleted"] and not include_deleted) else record

    def items(self) -> list[dict[str, Any]]:
        """Every catalogue record, tombstones included, by item id."""
        return sorted(self.iter_items(), key=lambda record: record["item_id"])

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """Every catalogue record, tombstones included, in the order ``HSCAN`` meets them (no list of them all)."""
        for _, raw in self.client.hscan_iter(self.catalog_key, count=1000):
            yield json.loads(raw)

    def search_items(self, query: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` live records whose id or title contains ``query`` (case-insensitive), in the order
        ``HSCAN`` meets them: the scan stops as soon as ``limit`` are found."""
        needle = query.casefold()
        found: list[dict[str, Any]] = []
        for _, raw in self.client.hscan_iter(self.catalog_key, count=1000):
            record = json.loads(raw)
            if record["deleted"]:
                continue
            if needle in record["item_id"].casefold() or needle in (record.get("title") or "").casefold():
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    def meta_get(self, key: str, default: str | None = None) -> str | None:
        value = self.client.hget(self._meta, key)
        return default if value is None else str(value)

    def meta_set(self, key: str, value: str) -> None:
        self.client.hset(self._meta, key, value)

    # -- erasure ----------------------------------------------------------------------------------
    def erase_events(
        self, user_id: str | None = None, before: float | None = None, on_erased: OnErased | None = None
    ) -> ErasedEvents:
        """Delete every event of ``user_id`` (the stored id), or every event timestamped before ``before``, and
        rewrite the stream so that no byte of them is left (see the module docstring). ``on_erased`` runs after
        the rewrite (appends go on meanwhile: a user's events appended during it are in ``remaining``)."""
        if (user_id is None) == (before is None):
            raise ValueError("erase_events: expected exactly one of user_id and before")
        if before is not None and not math.isfinite(before):
            raise ValueError(f"before: expected finite Unix seconds, got {before!r}")
        with self._erasure_locked():
            erased = self._erase_locked(user_id, before)
        if on_erased is not None and erased.count:
            remaining = [] if before is None else self.read_users(erased.users)
            on_erased(erased, remaining)
        return erased

    @contextlib.contextmanager
    def _erasure_locked(self) -> Iterator[None]:
        """Hold ``P:erasure-lock`` in the block: one erasure (or id fold) at a time across every replica."""
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + 600
        while not self.client.set(self._erasure_lock, owner, nx=True, px=600_000):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._erasure_lock}: another erasure holds the lock")
            time.sleep(0.05)
        try:
            yield
        finally:
            self._release_lock(keys=[self._erasure_lock], args=[owner])

    def _erase_locked(self, user_id: str | None, before: float | None) -> ErasedEvents:
        """:meth:`erase_events`' work, under the lock."""
        impressions = self._erase_impressions(user_id, before)
        entry_ids: list[str] = []
        event_ids: list[str] = []
        users: set[str] = set()
        for entry_id, fields in self._entries():
            user, timestamp = _user_and_time(fields["j"])
            if user == user_id or (before is not None and timestamp < before):
                entry_ids.append(entry_id)
                event_ids.append(fields["e"])
                users.add(user)
        if not entry_ids:
            return ErasedEvents(impressions=impressions)
        with self.client.pipeline(transaction=True) as pipe:
            for start in range(0, len(entry_ids), 1000):
                pipe.xdel(self.stream, *entry_ids[start : start + 1000])
                pipe.srem(self._ids, *event_ids[start : start + 1000])
                pipe.hdel(self._legacy_ids, *event_ids[start : start + 1000])
            pipe.execute()
        self.rewrite_stream()
        return ErasedEvents(len(entry_ids), sorted(int(e[:-2]) for e in entry_ids), sorted(users), impressions)

    def retire_legacy_event_ids(self, chunk: int = 10_000) -> int:
        """Fold the hash of event ids that versions before session 34 kept (``P:event-ids``) into the id set, and
        delete it; returns how many ids it held (0: there was none). Run once every replica runs this version
        (``liverec migrate``): until then the appends read and write both, so that an older replica still sees
        every id; after it, an older replica would store an id again. Holds the erasure lock, so that no id an
        erasure removes is folded back in."""
        with self._erasure_locked():
            held = int(self.client.hlen(self._legacy_ids))
            cursor = "0"
            while held:
                cursor = self._fold_legacy_ids(keys=[self._ids, self._legacy_ids], args=[cursor, chunk])
                if cursor == "0":
                    break
        return held

    def rewrite_stream(self, stream: str | None = None) -> None:
        """Copy the stream (default: the events) to a new key without its deleted entries' bytes and rename it
        over the original, keeping entry ids, consumer groups (with their pending entries) and the last id."""
        stream = stream or self.stream
        target = f"{stream}:rewrite"
        self.client.delete(target)
        last = ""
        while True:
            copied = self._copy(keys=[stream, target], args=[last, REWRITE_CHUNK])
            if not copied:
                break
            last = str(copied)
        self._swap(keys=[stream, target], args=[last])

    def read_users(self, user_ids: Sequence[str]) -> list[StoredEvent]:
        """Every event of ``user_ids`` (stored ids), in offset order (a scan of the whole stream)."""
        wanted = set(user_ids)
        return [
            _parse(entry_id, fields) for entry_id, fields in self._entries() if _user_and_time(fields["j"])[0] in wanted
        ]

    def _entries(self, stream: str | None = None, chunk: int = 10_000) -> Iterator[tuple[str, dict[str, str]]]:
        start = "-"
        while entries := self.client.xrange(stream or self.stream, min=start, max="+", count=chunk):
            yield from entries
            start = "(" + entries[-1][0]

    def _erase_impressions(self, user_id: str | None, before: float | None) -> int:
        """Delete the user's served lists (or those served before ``before``) and their rewards, then rewrite
        the stream so that no byte of them is left; returns how many."""
        self.flush()  # lists queued before the erasure are written first, then deleted with the rest
        entry_ids: list[str] = []
        lists: list[str] = []
        for entry_id, fields in self._entries(self.impressions_stream):
            user, served = fields.get("u", ""), float(fields.get("t", "0"))
            if (user_id is not None and user == user_id) or (before is not None and served < before):
                entry_ids.append(entry_id)
                lists.append(fields["r"])
        if not entry_ids:
            return 0
        with self.client.pipeline(transaction=True) as pipe:
            for start in range(0, len(entry_ids), 1000):
                pipe.xdel(self.impressions_stream, *entry_ids[start : start + 1000])
                pipe.hdel(self._impression_ids, *lists[start : start + 1000])
                pipe.hdel(self._rewards, *lists[start : start + 1000])
            pipe.execute()
        self.rewrite_stream(self.impressions_stream)
        return len(entry_ids)

    # -- impressions and rewards ------------------------------------------------------------------
    def log_impressions(self, impressions: Sequence[Impression]) -> None:
        """Write served lists from a log thread (one pipeline per call) and return at once."""
        if impressions and not self._closed:
            self._track(self._pool.submit(self._write_impressions, list(impressions)))

    def _write_impressions(self, impressions: list[Impression]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for impression in impressions:
                body = json.dumps(impression.to_json(), separators=(",", ":"), ensure_ascii=False)
                fields = {
                    "r": impression.recommendation_id,
                    "u": impression.user_id or "",
                    "t": repr(impression.served_at),
                    "j": body,
                }
                pipe.xadd(self.impressions_stream, fields)
            entry_ids = pipe.execute()
            for impression, entry_id in zip(impressions, entry_ids, strict=True):
                pipe.hset(self._impression_ids, impression.recommendation_id, entry_id)
            pipe.execute()

    def log_rewards(self, rewards: Sequence[Reward]) -> None:
        """Append joined rewards to their lists' entries of ``P:rewards`` (from a log thread)."""
        if not rewards or self._closed:
            return
        args: list[str] = []
        for reward in rewards:
            args += [reward.recommendation_id, json.dumps(reward.to_json(), separators=(",", ":"))]
        self._track(self._pool.submit(lambda: self._add_rewards(keys=[self._rewards], args=args) and None))

    def _track(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        if future.exception() is not None:
            logger.error("writing impressions or rewards failed: %s", future.exception())

    def flush(self) -> None:
        """Wait until every impression and reward queued so far is written."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            try:
                future.result()
            except Exception:  # logged by _done
                pass

    def get_impressions(self, recommendation_ids: Sequence[str]) -> dict[str, Impression]:
        if not recommendation_ids:
            return {}
        entry_ids = self.client.hmget(self._impression_ids, list(recommendation_ids))
        found: dict[str, Impression] = {}
        with self.client.pipeline(transaction=False) as pipe:
            wanted = [entry_id for entry_id in entry_ids if entry_id]
            for entry_id in wanted:
                pipe.xrange(self.impressions_stream, min=entry_id, max=entry_id)
            for entries in pipe.execute():
                for _entry_id, fields in entries:
                    impression = Impression.from_json(json.loads(fields["j"]))
                    found[impression.recommendation_id] = impression
        return found

    def get_rewards(self, recommendation_id: str) -> list[Reward]:
        raw = self.client.hget(self._rewards, recommendation_id)
        return [] if raw is None else [Reward.from_json(item) for item in json.loads(raw) or []]

    def count_impressions(self) -> int:
        return int(self.client.xlen(self.impressions_stream))

    def iter_impressions(self, served_after: float | None = None, batch: int = 10_000) -> Iterator[list[Impression]]:
        """Every stored impression (those written at or after ``served_after``: entry ids are the writing time in
        ms), in lists of at most ``batch``, in stream order."""
        start = "-" if served_after is None else f"{max(0, int(served_after * 1000) - 1)}-0"
        while entries := self.client.xrange(self.impressions_stream, min=start, count=batch):
            start = f"({entries[-1][0]}"
            found = [Impression.from_json(json.loads(fields["j"])) for _, fields in entries]
            yield [i for i in found if served_after is None or i.served_at >= served_after]

    def get_rewards_many(self, recommendation_ids: Sequence[str]) -> dict[str, list[Reward]]:
        """The rewards joined to each of ``recommendation_ids`` (lists without any are left out)."""
        found: dict[str, list[Reward]] = {}
        ids = list(recommendation_ids)
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            for recommendation_id, raw in zip(chunk, self.client.hmget(self._rewards, chunk), strict=True):
                if raw is not None:
                    found[recommendation_id] = [Reward.from_json(item) for item in json.loads(raw) or []]
        return found

    def record_erasure(self, kind: str, token: str | None = None) -> int:
        if kind not in ERASURE_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(ERASURE_KINDS)}, got {kind!r}")
        record = {"kind": kind, "token": token, "at": time.time()}
        return int(self.client.rpush(self._erasures, json.dumps(record)))

    def erasure_epoch(self) -> int:
        return int(self.client.llen(self._erasures))

    def erasures_after(self, epoch: int) -> list[ErasureRecord]:
        raw = self.client.lrange(self._erasures, epoch, -1)
        records = [json.loads(text) for text in raw]
        return [
            ErasureRecord(epoch + n, record["kind"], record["token"], record["at"])
            for n, record in enumerate(records, start=1)
        ]

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish queued appends and impressions and stop the threads (the client is the caller's; idempotent)."""
        self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> RedisEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key named ``prefix:*``. ``UNLINK``, not ``DEL``: Redis frees a large key's memory in the
    background instead of blocking every client while it does (a ``DEL`` of a 20M-event stream and its id hash
    outlasted the client's socket timeout)."""
    deleted = 0
    batch: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def _fields(event: Event, received: float) -> list[str]:
    """The append script's two arguments for one event: its id, and the rest as one compact JSON array."""
    body = [
        event.user_id,
        event.item_id,
        event.type,
        float(event.timestamp),
        event.value,
        event.context,
        event.recommendation_id,
        received,
    ]
    return [event.event_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False)]


def _bodies(
    users: list[str],
    items: list[str],
    kinds: list[str],
    seconds: list[float],
    values: list[float | None],
    received: float,
) -> list[str]:
    """The ``j`` fields of a bulk import's events, exactly as :func:`_fields` writes them (compact JSON, not
    ASCII-escaped, floats as ``repr``), with one JSON encoding per distinct string instead of a ``json.dumps``
    per event (half of an import's Python time)."""

    def encoded(column: list[str]) -> list[str]:
        text = {value: _JSON.encode(value) for value in set(column)}
        return [text[value] for value in column]

    tail = f",null,null,{received!r}]"  # context, recommendation id, received
    return [
        f"[{user},{item},{kind},{timestamp!r},{'null' if value is None else repr(value)}{tail}"
        for user, item, kind, timestamp, value in zip(
            encoded(users), encoded(items), encoded(kinds), seconds, values, strict=True
        )
    ]


def _events(columns: tuple[list[Any], ...]) -> list[Event]:
    """The events of a bulk import's columns (id, user, item, type, timestamp, value), for ``on_commit``."""
    return [Event(*row) for row in zip(*columns, strict=True)]


def _user_and_time(body: str) -> tuple[str, float]:
    """The user id and timestamp of an entry's ``j`` field."""
    values = json.loads(body)
    return values[0], float(values[3])


def _stored_event(event: Event, offset: int) -> StoredEvent:
    return StoredEvent(*(getattr(event, name) for name in _EVENT_FIELDS), offset=offset)


def _parse(entry_id: str, fields: dict[str, str]) -> StoredEvent:
    user, item, kind, timestamp, value, context, recommendation, _received = json.loads(fields["j"])
    return StoredEvent(
        fields["e"], user, item, kind, float(timestamp), value, context, recommendation, offset=int(entry_id[:-2])
    )


def _column_row(entry_id: str, fields: dict[str, str]) -> tuple[int, str, str, str, float, float | None]:
    """An entry as an :meth:`EventColumns.from_rows` row: offset, user, item, type, timestamp, value."""
    user, item, kind, timestamp, value = json.loads(fields["j"])[:5]
    return int(entry_id[:-2]), user, item, kind, float(timestamp), value


def _as_list(column: Sequence[Any] | np.ndarray) -> list[Any]:
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


_SHARED: type[ConsumerGroupLog] = RedisEventLog  # checked by mypy: the Redis log implements the interface
