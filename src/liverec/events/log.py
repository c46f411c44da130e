"""The durable event log: one SQLite file (WAL) holding the events, the item catalogue and small metadata.

Why SQLite: one file, transactions, and in WAL mode readers never block the writer, which is all a
single-node engine needs. ``synchronous=FULL`` (the default) syncs the WAL at every commit, so an
event acknowledged by :meth:`SQLiteEventLog.append` survives a power loss; ``NORMAL`` syncs only at
checkpoints: still safe against a crash of the process, but the last commits can be lost with the
machine's power.

Why group commit: a sync costs the same for one event as for fifty thousand. One writer thread owns
the write connection; callers queue their batch with a future, and the writer takes everything
waiting, writes it in one transaction, syncs once, hands the new events to ``on_commit`` (in log
order, in the writer thread, so the serving state is updated serially) and only then resolves the
callers' futures. Under load, many small appends share one sync.

Events are deduplicated by ``event_id`` (unique; ids already stored are skipped), so a client may resend a batch and an
import may be re-run: what is already there is counted as a duplicate, never stored twice.

Erasure (:meth:`SQLiteEventLog.erase_events`: one user's events, or every event older than a time) deletes rows
with ``secure_delete`` on (SQLite overwrites deleted content with zeros) and then checkpoints the WAL with
``TRUNCATE``, so no older copy of the pages is left in ``events.db-wal`` either. Offsets are never reused, so
after an erasure the log's offsets have holes (``last_offset`` is the highest offset ever given out). Each
erasure is recorded in the ``erasures`` table (no user id: a salted hash), whose count is the *erasure epoch*
other processes poll to learn that they must forget too.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import itertools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from liverec.events.impressions import Impression, ImpressionLog, Reward
from liverec.events.schema import Event

logger = logging.getLogger(__name__)

#: Accepted values of ``PRAGMA synchronous``.
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Most events the writer puts in one transaction (a bigger single batch still goes alone).
MAX_GROUP_EVENTS = 50_000
#: The writer connection's page cache (MiB): the event_id index of a big log stays in memory.
CACHE_MIB = 64
#: ... and during a bulk import (:meth:`SQLiteEventLog.bulk_import`): once the ``event_id`` index outgrows the cache,
#: inserts read and write its pages through the OS. At 20M events (a 1.8 GB log) 256 MiB made the import 11-12 %
#: faster than 64 MiB in three pairs of runs, for 213 MiB more peak memory (docs/results.md, "Session 31").
IMPORT_CACHE_MIB = 256
#: How long the writer lets impressions gather when nothing else waits (nobody waits on them: one commit, and one
#: sync, per this many seconds of served lists instead of one per list).
IMPRESSION_DELAY_S = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    value REAL,
    context TEXT,
    recommendation_id TEXT,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    title TEXT,
    categories TEXT NOT NULL,
    available INTEGER NOT NULL,
    attributes TEXT,
    updated_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id TEXT PRIMARY KEY,
    user_id TEXT,
    served_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards (
    id INTEGER PRIMARY KEY,
    recommendation_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rewards_by_list ON rewards (recommendation_id);
CREATE TABLE IF NOT EXISTS erasures (
    epoch INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    token TEXT,
    at REAL NOT NULL
);
"""
_INSERT = (
    "INSERT INTO events (event_id, user_id, item_id, type, timestamp, value, context, recommendation_id,"
    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Rows per ``INSERT`` statement when many are written: with one statement per row, the statement's own work is
#: paid every row; 100 rows per statement made raw inserts of 1M events 35-50 % faster here (issue 22). 900
#: parameters: far below SQLite's limit of 32,766.
INSERT_ROWS = 100
_INSERT_GROUP = _INSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * INSERT_ROWS)
)
_INSERT_IMPRESSION = (
    "INSERT OR REPLACE INTO impressions (recommendation_id, user_id, served_at, body) VALUES (?, ?, ?, ?)"
)
_KNOWN = "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
# the highest offset ever given out: erasure leaves holes, and a deleted last event must not give its offset again
_LAST = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
_ITEM_COLUMNS = "item_id, title, categories, available, attributes, updated_at, deleted"
_PUT_ITEM = f"INSERT OR REPLACE INTO items ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT = 'SELECT "offset", event_id, user_id, item_id, type, timestamp, value, context, recommendation_id FROM events'
_SELECT_COLUMNS = (
    'SELECT "offset", user_id, item_id, type, timestamp, value FROM events WHERE "offset" > ? AND "offset" <= ?'
    ' ORDER BY "offset" LIMIT ?'
)
_MAX_OFFSET = 2**63 - 1  # SQLite's largest integer: "no upper bound" in an offset range

#: One events row as written: the :data:`_INSERT` parameters.
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StoredEvent(Event):
    """An event as the log holds it: the event plus its ``offset`` (1, 2, 3, ... in commit order)."""

    offset: int = field(kw_only=True)


@dataclass(frozen=True)
class AppendResult:
    """What one :meth:`SQLiteEventLog.append` did.

    ``duplicates`` counts events whose ``event_id`` was already in the log or earlier in the same
    group; ``last_offset`` is the log's last offset once the batch was committed, so every event of the
    batch (new or duplicate) is at or below it.
    """

    stored: int
    duplicates: int
    last_offset: int
    events: list[StoredEvent] = field(default_factory=list)


@dataclass(frozen=True)
class ErasedEvents:
    """What one erasure deleted from a log: how many events, their offsets (ascending) and the users they
    belonged to (stored user ids: pseudonyms where ids are pseudonymised); and how many impressions (served
    lists) went with them."""

    count: int = 0
    offsets: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    impressions: int = 0


#: ``on_erased(erased, remaining)``: told what an erasure deleted and every event the affected users still have,
#: in offset order (an event log calls it before any later append is applied: the state can follow exactly).
OnErased = Callable[[ErasedEvents, list["StoredEvent"]], None]

#: Kinds of erasure record: one user's events, or every event older than the retention period.
ERASURE_KINDS = ("user", "retention")


@dataclass(frozen=True)
class ErasureRecord:
    """One erasure as the log records it for other processes: ``epoch`` (1, 2, ...), ``kind`` (``user`` or
    ``retention``), ``token`` (``salt:HMAC(salt, user)`` for a user erasure, never the id) and when."""

    epoch: int
    kind: str
    token: str | None
    at: float


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch of rows is built (re-enabled after, if it was on).

    Why: tens of thousands of row tuples (no reference cycles: reference counting frees them) set off
    collections that scan every live object, again and again; measured on a 5M-event log, they were 40 % of the
    time of a columnar read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class EventColumns:
    """A run of the log's events as columns (:meth:`EventLog.iter_columns`), the fields training reads.

    Why columns: ``read_log`` turns tens of millions of events into arrays; a :class:`StoredEvent` per row cost
    more time than the rest of the read and, kept in lists, about 350 bytes per event. ``offsets``: [n] int64;
    ``user_ids``, ``item_ids``, ``types``: [n] stored strings; ``timestamps``: [n] float64; ``values``: [n]
    float64, NaN where the event has no value.
    """

    offsets: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    types: list[str]
    timestamps: np.ndarray
    values: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str, str, float, float | None]]) -> EventColumns:
        """Columns of ``(offset, user_id, item_id, type, timestamp, value)`` rows (at least one; value None: NaN)."""
        offsets, users, items, types, timestamps, values = zip(*rows, strict=True)
        return cls(
            np.array(offsets, dtype=np.int64),
            list(users),
            list(items),
            list(types),
            np.array(timestamps, dtype=np.float64),
            np.array(values, dtype=np.float64),  # None becomes NaN
        )

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class ImportResult:
    """What a bulk import did (no per-event list: imports run to millions of rows)."""

    stored: int
    duplicates: int
    last_offset: int


class EventLog(ImpressionLog, Protocol):
    """What the engine, the importer and the updater use of an event log (with the impressions and rewards of
    ``events.impressions.ImpressionLog``): :class:`SQLiteEventLog` (embedded)
    or ``liverec.events.redis_log.RedisEventLog`` (scale-out). Offsets are gap-free integers from 1 in both."""

    def append(self, events: Sequence[Event]) -> AppendResult: ...
    def append_async(self, events: Sequence[Event]) -> Future[AppendResult]: ...
    def import_columns(
        self,
        event_ids: Sequence[Any] | np.ndarray,
        user_ids: Sequence[Any] | np.ndarray,
        item_ids: Sequence[Any] | np.ndarray,
        types: str | Sequence[str] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray,
        values: Sequence[float | None] | np.ndarray | None = None,
        batch_size: int = ...,
    ) -> ImportResult: ...
    def bulk_import(self) -> contextlib.AbstractContextManager[None]:
        """A block of bulk imports (:meth:`import_columns` calls): the store may trade memory for speed inside it."""
        ...

    def read(self, after_offset: int = 0, limit: int = 10_000) -> list[StoredEvent]: ...
    def iter_all(self, batch: int = 50_000) -> Iterator[list[StoredEvent]]: ...
    def iter_columns(self, up_to: int | None = None, batch: int = 50_000) -> Iterator[EventColumns]:
        """The events with offset at most ``up_to`` (None: every one), in offset order, as columns of at most
        ``batch`` rows: the bulk read of ``read_log``, with no event object per row."""
        ...

    def last_offset(self) -> int: ...
    def count(self) -> int: ...
    def writable(self) -> bool: ...
    def put_item(
        self,
        item_id: str,
        title: str | None = None,
        categories: Iterable[str] = (),
        available: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]: ...
    def put_items(self, records: Iterable[Mapping[str, Any]], batch_size: int = 50_000) -> int: ...
    def delete_item(self, item_id: str) -> bool: ...
    def get_item(self, item_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None: ...
    def items(self) -> list[dict[str, Any]]: ...
    def iter_items(self) -> Iterator[dict[str, Any]]:
        """The records of :meth:`items` one at a time (in no promised order), never a list of the whole
        catalogue: what start-up reads a million records with."""
        ...

    def search_items(self, query: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` live catalogue records whose id or title contains ``query`` (case-insensitive),
        without reading the whole catalogue into memory where the store can avoid it."""
        ...

    def meta_get(self, key: str, default: str | None = None) -> str | None: ...
    def meta_set(self, key: str, value: str) -> None: ...
    def erase_events(
        self, user_id: str | None = None, before: float | None = None, on_erased: OnErased | None = None
    ) -> ErasedEvents:
        """Delete, leaving no copy behind, every event of ``user_id`` (a stored id) or timestamped before
        ``before``; ``on_erased`` sees what was deleted and what the affected users have left."""
        ...

    def record_erasure(self, kind: str, token: str | None = None) -> int:
        """Record an erasure for other processes to follow; returns the new erasure epoch."""
        ...

    def erasure_epoch(self) -> int:
        """How many erasures were recorded (0: none): a process that saw it change must forget too."""
        ...

    def erasures_after(self, epoch: int) -> list[ErasureRecord]:
        """The erasure records after ``epoch``, oldest first."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


class ConsumerGroupLog(EventLog, Protocol):
    """An event log that several worker processes can share out between them (Redis Streams' consumer groups):
    each entry is delivered to one consumer of a group and stays pending until acknowledged."""

    def ensure_group(self, group: str, consumer: str | None = None) -> None: ...
    def consume(self, group: str, consumer: str, count: int = 1000, block_ms: int = 1000) -> list[StoredEvent]: ...
    def reclaim(self, group: str, consumer: str, min_idle_ms: int, count: int = 1000) -> list[StoredEvent]: ...
    def ack(self, group: str, offsets: Sequence[int]) -> int: ...


EVENT_TIME_META = "event_time"  # metadata key: "order" once the log holds events with order but no time


def log_is_timed(log: EventLog) -> bool:
    """False once the log holds events with order but no time (``liverec import`` of a sequences file): their
    timestamps are positions in each user's sequence. The whole log is then read as order only
    (``Interactions.timed`` False): events with real times sort after the positions, so each user's order
    stays right, and no step measures a gap between two events or an event's age."""
    return log.meta_get(EVENT_TIME_META, "clock") != "order"


@dataclass
class _Write:
    """One caller's rows waiting for the writer; ``keep`` asks for the stored events back."""

    rows: list[Row]
    future: Future[AppendResult]
    keep: bool = True


@dataclass
class _Side:
    """Rows of the impression tables, written in the next group commit; nobody waits for ``future``
    unless they flush."""

    statements: list[tuple[str, list[tuple[Any, ...]]]]
    future: Future[None]
    urgent: bool = False  # someone waits (a flush): write it now
    impressions: list[Impression] = field(default_factory=list)  # serialised in the writer, off the request path


@dataclass
class _Task:
    """Work done alone by the writer, in one transaction (catalogue, metadata, erasure) unless ``transaction``
    is False (a WAL checkpoint, which cannot run inside one)."""

    work: Callable[[sqlite3.Connection], Any]
    future: Future[Any]
    transaction: bool = True


class SQLiteEventLog:
    """The append-only event log, the item catalogue and metadata in one SQLite file.

    ``on_commit(events)`` runs in the writer thread after each commit with the new events in offset
    order; if it raises, the error is logged and the append still succeeds (the events are durable).
    It must not append itself: the writer would wait for its own commit.
    ``readonly=True`` opens the file for reading only (no writer thread), e.g. from a second process
    while ``liverec serve`` writes. ``pseudonymise``: what user ids are stored as (``events.pseudonyms``;
    None: as given); events handed back (``on_commit``, :class:`AppendResult`) carry the stored form.
    """

    def __init__(
        self,
        path: str | Path,
        on_commit: Callable[[list[StoredEvent]], None] | None = None,
        synchronous: str = "FULL",
        *,
        readonly: bool = False,
        pseudonymise: Callable[[str], str] | None = None,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.readonly = readonly
        self._on_commit = on_commit
        self._pseudonymise = pseudonymise
        self._queue: collections.deque[_Write | _Side | _Task] = collections.deque()
        self._wakeup = threading.Condition()
        self._closing = False
        self._commits = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        if readonly:
            self._conn: sqlite3.Connection | None = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 10000")
        if self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite could not switch the file to WAL mode")
        self._conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_MIB * 1024}")
        # deleted content is overwritten with zeros (erasure; also whatever else a write frees)
        self._conn.execute("PRAGMA secure_delete = ON")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(items)")}
        if "deleted" not in columns:  # a log written before item tombstones existed
            self._conn.execute("ALTER TABLE items ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")
        self._writer = threading.Thread(target=self._run, name="liverec-event-log-writer", daemon=True)
        self._writer.start()

    # -- appending -------------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store ``events`` (skipping known ``event_id``s); returns once they are durably committed."""
        return self.append_async(events).result()

    def append_async(self, events: Sequence[Event]) -> Future[AppendResult]:
        """Queue ``events`` for the next group commit; the future resolves after the commit."""
        received = time.time()
        return self._submit_rows([_row(event, received, self._pseudonymise) for event in events], keep=True)

    def import_events(self, events: Iterable[Event], batch_size: int = 50_000) -> ImportResult:
        """Bulk-append ``events`` in transactions of ``batch_size``; idempotent by ``event_id``."""
        received = time.time()
        iterator = iter(events)

        def chunks() -> Iterator[list[Row]]:
            key = self._pseudonymise
            while rows := [_row(event, received, key) for event in itertools.islice(iterator, batch_size)]:
                yield rows

        return self._import(chunks())

    def import_columns(
        self,
        event_ids: Sequence[Any] | np.ndarray,
        user_ids: Sequence[Any] | np.ndarray,
        item_ids: Sequence[Any] | np.ndarray,
        types: str | Sequence[str] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray,
        values: Sequence[float | None] | np.ndarray | None = None,
        batch_size: int = 50_000,
    ) -> ImportResult:
        """Bulk-append events given as columns, without building an :class:`Event` per row.

        Ids become ``str``; ``types`` may be one type for all rows; NaN or ``None`` values are stored as
        NULL. Re-running the same import stores nothing new (same ``event_id``s), so an interrupted
        import can simply be run again. Types are not checked here: the importer validates them.
        Each transaction's rows are converted to Python objects only when it is built (while the writer
        writes the one before), so the memory held is the columns given plus about two transactions' rows.
        """
        n = len(event_ids)
        stamps = np.asarray(timestamps, dtype=np.float64)
        lengths = {len(event_ids), len(user_ids), len(item_ids), len(stamps)}
        lengths |= set() if isinstance(types, str) else {len(types)}
        lengths |= set() if values is None else {len(values)}
        if len(lengths) != 1:
            raise ValueError(f"import_columns: columns have different lengths {sorted(lengths)}")
        if not np.isfinite(stamps).all():
            raise ValueError("import_columns: timestamps must be finite Unix seconds")
        received = itertools.repeat(time.time())
        nothing = itertools.repeat(None)  # context and recommendation_id

        def chunks() -> Iterator[list[Row]]:
            for start in range(0, n, batch_size):
                part = slice(start, start + batch_size)
                with collector_paused():  # the rows hold no cycles; see collector_paused
                    users = as_strings(user_ids[part])
                    if self._pseudonymise is not None:
                        users = [self._pseudonymise(user) for user in users]
                    size = len(users)
                    kinds = itertools.repeat(types, size) if isinstance(types, str) else as_strings(types[part])
                    numbers = itertools.repeat(None, size) if values is None else as_values(values[part])
                    columns = (as_strings(event_ids[part]), users, as_strings(item_ids[part]), kinds)
                    rows = list(zip(*columns, stamps[part].tolist(), numbers, nothing, nothing, received, strict=False))
                yield rows

        return self._import(chunks())

    @contextlib.contextmanager
    def bulk_import(self) -> Iterator[None]:
        """A block of bulk imports: the writer's page cache holds up to ``IMPORT_CACHE_MIB`` inside it, and is cut
        back to ``CACHE_MIB`` after it (SQLite frees the pages over the limit), so a long-running server that
        imported once does not keep the import's cache."""
        self._set_cache(IMPORT_CACHE_MIB)
        try:
            yield
        finally:
            self._set_cache(CACHE_MIB)

    def _set_cache(self, mib: int) -> None:
        self._call(lambda conn: conn.execute(f"PRAGMA cache_size = -{mib * 1024}"), False)

    def _import(self, chunks: Iterable[list[Row]]) -> ImportResult:
        """Write ``chunks`` one transaction each, building the next chunk while the writer writes this one."""
        results: list[AppendResult] = []
        pending: Future[AppendResult] | None = None
        for rows in chunks:
            submitted = self._submit_rows(rows, keep=False)
            if pending is not None:
                results.append(pending.result())
            pending = submitted
        if pending is not None:
            results.append(pending.result())
        return ImportResult(
            sum(result.stored for result in results),
            sum(result.duplicates for result in results),
            results[-1].last_offset if results else self.last_offset(),
        )

    def _submit_rows(self, rows: list[Row], *, keep: bool) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        if not rows:
            future.set_result(AppendResult(0, 0, self.last_offset()))
            return future
        self._enqueue(_Write(rows, future, keep))
        return future

    # -- reading ---------------------------------------------------------------------------------
    def read(self, after_offset: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        """Events with ``offset > after_offset``, in offset order, at most ``limit``."""
        rows = self._reader().execute(f'{_SELECT} WHERE "offset" > ? ORDER BY "offset" LIMIT ?', (after_offset, limit))
        return [_read_row(row) for row in rows]

    def iter_all(self, batch: int = 50_000) -> Iterator[list[StoredEvent]]:
        """The whole log in offset order, as lists of at most ``batch`` events."""
        after = 0
        while chunk := self.read(after, batch):
            yield chunk
            after = chunk[-1].offset

    def iter_columns(self, up_to: int | None = None, batch: int = 50_000) -> Iterator[EventColumns]:
        """The events with offset at most ``up_to`` (None: every one), in offset order, as columns of at most
        ``batch`` rows. One short query per batch (a range of the primary key), like :meth:`iter_all`: no read
        transaction stays open across batches to hold the WAL back."""
        after, last = 0, _MAX_OFFSET if up_to is None else up_to
        while True:
            with collector_paused():
                rows = self._reader().execute(_SELECT_COLUMNS, (after, last, batch)).fetchall()
                if not rows:
                    return
                columns = EventColumns.from_rows(rows)
                del rows
            yield columns
            after = int(columns.offsets[-1])

    def last_offset(self) -> int:
        """The highest offset in the log (0 when empty)."""
        return int(self._reader().execute(_LAST).fetchone()[0])

    def count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM events").fetchone()[0])

    @property
    def commits(self) -> int:
        """Transactions committed by the writer so far (fewer than appends when group commit works)."""
        return self._commits

    def writable(self) -> bool:
        """Whether appends are accepted: opened for writing, not closed, writer thread alive."""
        return self._writer is not None and self._writer.is_alive() and not self._closing

    # -- catalogue and metadata ------------------------------------------------------------------
    def put_item(
        self,
        item_id: str,
        title: str | None = None,
        categories: Iterable[str] = (),
        available: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or replace an item's record (every field; PUT semantics); durable on return."""
        record = item_record(item_id, title, categories, available, attributes)
        row = _item_row(record)
        self._call(lambda conn: conn.execute(_PUT_ITEM, row))
        return record

    def put_items(self, records: Iterable[Mapping[str, Any]], batch_size: int = 50_000) -> int:
        """Create or replace many records, each as :meth:`put_item` with the mapping's fields as arguments
        (``item_id``, and any of ``title``, ``categories``, ``available``, ``attributes``), in transactions of
        ``batch_size``; durable on return. Returns how many records were written (a later one of the same item
        replaces an earlier one, as successive puts would). A catalogue import: one commit per item costs
        about 1.4 ms on this machine's disk (a million items: over 20 minutes), one per batch does not."""
        iterator = iter(records)
        written = 0
        while chunk := list(itertools.islice(iterator, batch_size)):
            rows = [_item_row(item_record(**record)) for record in chunk]
            self._call(functools.partial(_put_rows, rows=rows))
            written += len(rows)
        return written

    def delete_item(self, item_id: str) -> bool:
        """Mark an item deleted: its record becomes a tombstone (never recommended again, even after a
        restart, until it is put back). Returns whether a live record existed. Its events stay in the log."""

        def tombstone(conn: sqlite3.Connection) -> bool:
            now = time.time()
            existed = conn.execute(
                "UPDATE items SET deleted = 1, available = 0, title = NULL, categories = '[]', attributes = NULL,"
                " updated_at = ? WHERE item_id = ? AND deleted = 0",
                (now, item_id),
            ).rowcount
            conn.execute(
                f"INSERT OR IGNORE INTO items ({_ITEM_COLUMNS}) VALUES (?, NULL, '[]', 0, NULL, ?, 1)", (item_id, now)
            )
            return bool(existed)

        return bool(self._call(tombstone))

    def get_item(self, item_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        """The item's record, or None when there is none or it was deleted (``include_deleted``: its tombstone)."""
        row = self._reader().execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None or (row[-1] and not include_deleted) else _item_record(row)

    def items(self) -> list[dict[str, Any]]:
        """Every catalogue record, tombstones of deleted items included (``deleted: True``), by item id."""
        return list(self.iter_items())

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """:meth:`items` one record at a time, by item id (a cursor over the table, not a list)."""
        for row in self._reader().execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY item_id"):
            yield _item_record(row)

    def search_items(self, query: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` live records whose id or title contains ``query`` (ASCII case-insensitive, SQLite's
        ``LIKE``), by item id: one scan of the items table, never a list of the whole catalogue."""
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._reader().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE deleted = 0 AND (item_id LIKE ? ESCAPE '\\' "
            "OR title LIKE ? ESCAPE '\\') ORDER BY item_id LIMIT ?",
            (pattern, pattern, limit),
        )
        return [_item_record(row) for row in rows]

    def meta_get(self, key: str, default: str | None = None) -> str | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        self._call(lambda conn: conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    # -- erasure ----------------------------------------------------------------------------------
    def erase_events(
        self, user_id: str | None = None, before: float | None = None, on_erased: OnErased | None = None
    ) -> ErasedEvents:
        """Delete every event of ``user_id`` (the stored id), or every event timestamped before ``before``.

        The rows are deleted with ``secure_delete`` on (their bytes are zeroed in the pages), in the writer
        thread like any write; ``on_erased(erased, remaining)`` runs there too, inside the transaction,
        before any later append is committed or applied. Then the WAL is checkpointed (``TRUNCATE``) so
        that no older copy of the pages survives in ``events.db-wal``.
        """
        where, parameters = _erasure_filter(user_id, before)

        lists_where, lists_parameters = (
            ("user_id = ?", (user_id,)) if user_id is not None else ("served_at < ?", (before,))
        )

        def erase(conn: sqlite3.Connection) -> ErasedEvents:
            # the user's served lists (or every list served before the cut-off) and the rewards joined to them
            lists = f"SELECT recommendation_id FROM impressions WHERE {lists_where}"
            conn.execute(f"DELETE FROM rewards WHERE recommendation_id IN ({lists})", lists_parameters)
            impressions = conn.execute(f"DELETE FROM impressions WHERE {lists_where}", lists_parameters).rowcount
            rows = conn.execute(f'SELECT "offset", user_id FROM events WHERE {where} ORDER BY "offset"', parameters)
            found = rows.fetchall()
            if not found:
                return ErasedEvents(impressions=impressions)
            conn.execute(f"DELETE FROM events WHERE {where}", parameters)
            erased = ErasedEvents(
                len(found), [offset for offset, _ in found], sorted({user for _, user in found}), impressions
            )
            if on_erased is not None:
                remaining: list[StoredEvent] = []
                if before is not None:  # a user erasure leaves its user nothing
                    query = f'{_SELECT} WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY "offset"'
                    remaining = [_read_row(row) for row in conn.execute(query, (json.dumps(erased.users),))]
                try:
                    on_erased(erased, remaining)
                except Exception:
                    logger.exception("on_erased failed after erasing %d events; the events are erased", erased.count)
            return erased

        erased: ErasedEvents = self._call(erase)
        if erased.count or erased.impressions:
            self.checkpoint()
        return erased

    def checkpoint(self, attempts: int = 20) -> bool:
        """Copy the WAL into the database file and truncate it (``wal_checkpoint(TRUNCATE)``); retried while
        a reader of another connection holds an older snapshot. Returns whether the WAL was emptied."""
        for attempt in range(attempts):
            busy = self._call(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0], False)
            if not busy:
                return True
            time.sleep(0.05 * (attempt + 1))
        logger.warning("%s: the WAL could not be truncated (a reader kept an older snapshot)", self.path)
        return False

    def record_erasure(self, kind: str, token: str | None = None) -> int:
        """Append an erasure record (no user id: ``token`` is a salted hash) and return the new epoch."""
        if kind not in ERASURE_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(ERASURE_KINDS)}, got {kind!r}")

        def insert(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO erasures (kind, token, at) VALUES (?, ?, ?)", (kind, token, time.time()))
            return int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])

        return int(self._call(insert))

    def erasure_epoch(self) -> int:
        try:
            return int(self._reader().execute("SELECT coalesce(max(epoch), 0) FROM erasures").fetchone()[0])
        except sqlite3.OperationalError as error:  # a file written before erasure existed, opened read-only
            if "no such table" in str(error):
                return 0
            raise

    def erasures_after(self, epoch: int) -> list[ErasureRecord]:
        query = "SELECT epoch, kind, token, at FROM erasures WHERE epoch > ? ORDER BY epoch"
        try:
            return [ErasureRecord(*row) for row in self._reader().execute(query, (epoch,))]
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise

    # -- impressions and rewards ------------------------------------------------------------------
    def log_impressions(self, impressions: Sequence[Impression]) -> None:
        """Queue served lists for the next group commit and return at once (serving does not wait for the sync);
        appends queued after them are committed in the same transaction or a later one."""
        if impressions:
            self._enqueue(_Side([], Future(), impressions=list(impressions)))

    def log_rewards(self, rewards: Sequence[Reward]) -> None:
        """Queue joined rewards for the next group commit (they are derived from events already stored)."""
        rows = [
            (reward.recommendation_id, json.dumps(reward.to_json(), separators=(",", ":"), ensure_ascii=False))
            for reward in rewards
        ]
        if rows:
            self._enqueue(
                _Side([("INSERT INTO rewards (recommendation_id, body) VALUES (?, ?)", rows)], Future(), True)
            )

    def flush(self) -> None:
        """Wait until every impression and reward queued so far is committed."""
        future: Future[None] = Future()
        self._enqueue(_Side([], future, urgent=True))
        future.result()

    def get_impressions(self, recommendation_ids: Sequence[str]) -> dict[str, Impression]:
        """The stored impressions among ``recommendation_ids``, by id (unknown ids are left out)."""
        if not recommendation_ids:
            return {}
        query = "SELECT body FROM impressions WHERE recommendation_id IN (SELECT value FROM json_each(?))"
        rows = self._reader().execute(query, (json.dumps(list(recommendation_ids)),))
        found = [Impression.from_json(json.loads(body)) for (body,) in rows]
        return {impression.recommendation_id: impression for impression in found}

    def get_rewards(self, recommendation_id: str) -> list[Reward]:
        """The rewards joined to one list, in the order they were joined."""
        rows = self._reader().execute(
            "SELECT body FROM rewards WHERE recommendation_id = ? ORDER BY id", (recommendation_id,)
        )
        return [Reward.from_json(json.loads(body)) for (body,) in rows]

    def count_impressions(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM impressions").fetchone()[0])

    def iter_impressions(self, served_after: float | None = None, batch: int = 10_000) -> Iterator[list[Impression]]:
        """Every stored impression (those served at or after ``served_after``), in lists of at most ``batch``,
        in the order they were stored."""
        query = "SELECT rowid, body FROM impressions WHERE rowid > ? AND served_at >= ? ORDER BY rowid LIMIT ?"
        after, since = 0, float("-inf") if served_after is None else served_after
        while rows := self._reader().execute(query, (after, since, batch)).fetchall():
            after = rows[-1][0]
            yield [Impression.from_json(json.loads(body)) for _, body in rows]

    def get_rewards_many(self, recommendation_ids: Sequence[str]) -> dict[str, list[Reward]]:
        """The rewards joined to each of ``recommendation_ids`` (lists without any are left out)."""
        query = (
            "SELECT recommendation_id, body FROM rewards WHERE recommendation_id IN (SELECT value FROM json_each(?))"
        )
        found: dict[str, list[Reward]] = {}
        ids = list(recommendation_ids)
        for start in range(0, len(ids), 10_000):
            rows = self._reader().execute(query + " ORDER BY id", (json.dumps(ids[start : start + 10_000]),))
            for recommendation_id, body in rows:
                found.setdefault(recommendation_id, []).append(Reward.from_json(json.loads(body)))
        return found

    def _call(self, work: Callable[[sqlite3.Connection], Any], transaction: bool = True) -> Any:
        """Run ``work`` in the writer thread (in its own transaction unless told not); returns once done."""
        future: Future[Any] = Future()
        self._enqueue(_Task(work, future, transaction))
        return future.result()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Write what is queued, stop the writer and close every connection (idempotent)."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if self._conn is not None:
            self._conn.close()  # the last connection closes last: it checkpoints and removes the WAL
            self._conn = None

    def __enter__(self) -> SQLiteEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------
    def _enqueue(self, job: _Write | _Side | _Task) -> None:
        with self._wakeup:
            if self._closing or self._writer is None:
                raise RuntimeError(f"{self.path}: the event log is {'closed' if self._closing else 'read-only'}")
            self._queue.append(job)
            self._wakeup.notify()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (WAL: it reads the last commit and never blocks the writer)."""
        if self._closing:
            raise RuntimeError(f"{self.path}: the event log is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _run(self) -> None:
        while (job := self._take()) is not None:
            if isinstance(job, _Task):
                try:
                    if job.transaction:
                        job.future.set_result(self._transaction(job.work))
                    elif self._conn is None:
                        raise RuntimeError(f"{self.path}: the event log has no writer connection")
                    else:
                        job.future.set_result(job.work(self._conn))
                except Exception as error:
                    job.future.set_exception(error)
            else:
                self._write_group(job)

    def _take(self) -> _Task | list[_Write | _Side] | None:
        """The next task, or every write waiting (up to :data:`MAX_GROUP_EVENTS` events, with the impressions
        queued among them); None once closed and drained."""
        with self._wakeup:
            while not self._queue:
                if self._closing:
                    return None
                self._wakeup.wait()
            first = self._queue.popleft()
            if isinstance(first, _Task):
                return first
            if isinstance(first, _Side) and not first.urgent:  # let served lists gather while nobody waits
                deadline = time.monotonic() + IMPRESSION_DELAY_S
                while not self._closing and all(isinstance(job, _Side) and not job.urgent for job in self._queue):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wakeup.wait(left)
            group: list[_Write | _Side] = [first]
            size = len(first.rows) if isinstance(first, _Write) else 0
            while self._queue:
                head = self._queue[0]
                if isinstance(head, _Task) or (isinstance(head, _Write) and size + len(head.rows) > MAX_GROUP_EVENTS):
                    break
                self._queue.popleft()
                group.append(head)
                size += len(head.rows) if isinstance(head, _Write) else 0
            return group

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._conn is None:
            raise RuntimeError(f"{self.path}: the event log has no writer connection (read-only or closed)")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._conn)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._commits += 1
        return result

    def _write_group(self, jobs: list[_Write | _Side]) -> None:
        group = [job for job in jobs if isinstance(job, _Write)]
        sides = [job for job in jobs if isinstance(job, _Side)]
        rows = [row for write in group for row in write.rows]

        def work(conn: sqlite3.Connection) -> tuple[list[int | None], int]:
            for side in sides:
                for statement, parameters in side.statements:
                    conn.executemany(statement, parameters)
                if side.impressions:
                    conn.executemany(_INSERT_IMPRESSION, [_impression_row(i) for i in side.impressions])
            return _insert(conn, rows) if rows else ([], 0)

        try:
            offsets, last = self._transaction(work)
        except Exception as error:  # rolled back: nothing of the group is stored
            if len(jobs) > 1 and not isinstance(error, sqlite3.OperationalError):
                for job in jobs:  # a data error belongs to one caller's batch: the others must not fail with it
                    self._write_group([job])
                return
            for job in jobs:
                job.future.set_exception(error)
            if sides:
                logger.error("%d impression batches were not stored: %s", len(sides), error)
            return
        for side in sides:
            side.future.set_result(None)
        if not group:
            return
        outcomes = []
        start = 0
        for write in group:
            mine = offsets[start : start + len(write.rows)]
            start += len(write.rows)
            new = sum(offset is not None for offset in mine)
            wanted = write.keep or self._on_commit is not None
            events = (
                [_stored(row, o) for row, o in zip(write.rows, mine, strict=True) if o is not None] if wanted else []
            )
            outcomes.append((new, events))
        if self._on_commit is not None and any(new for new, _ in outcomes):
            try:
                self._on_commit([event for _, events in outcomes for event in events])
            except Exception:
                logger.exception("on_commit failed for events up to offset %d; the events are stored", last)
        for write, (new, events) in zip(group, outcomes, strict=True):
            write.future.set_result(AppendResult(new, len(write.rows) - new, last, events if write.keep else []))


def _insert(conn: sqlite3.Connection, rows: list[Row]) -> tuple[list[int | None], int]:
    """Insert the rows whose event_id is new (inside the writer's transaction): each row's offset or None.

    First, all of them in a savepoint: where every id is new (a fresh import, almost every append) that is
    the whole work. A known id fails that ``INSERT`` (the ``UNIQUE`` constraint); the savepoint is rolled
    back and the known ids are looked up, then the rest inserted. They are looked up rather than left to
    ``INSERT OR IGNORE``, because an ignored insert still burns an AUTOINCREMENT value and offsets would
    get gaps. The writer holds the write lock, so the new rows get consecutive offsets ending at
    ``last_insert_rowid()``; a plain ``INSERT`` fails loudly if that ever stopped being true.
    """
    conn.execute("SAVEPOINT all_new")
    try:
        _insert_rows(conn, rows)
    except sqlite3.IntegrityError:  # a known id (or one repeated in the rows); another error fails again below
        conn.execute("ROLLBACK TO all_new")
        conn.execute("RELEASE all_new")
    else:
        conn.execute("RELEASE all_new")
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - len(rows) + 1, last + 1)), last
    ids = json.dumps([row[0] for row in rows])
    seen = {event_id for (event_id,) in conn.execute(_KNOWN, (ids,))}
    fresh = []
    for position, row in enumerate(rows):
        if row[0] not in seen:  # the first occurrence of an id repeated inside the group is the one kept
            seen.add(row[0])
            fresh.append(position)
    offsets: list[int | None] = [None] * len(rows)
    if not fresh:
        return offsets, conn.execute(_LAST).fetchone()[0]
    _insert_rows(conn, rows if len(fresh) == len(rows) else [rows[p] for p in fresh])
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    for offset, position in enumerate(fresh, start=last - len(fresh) + 1):
        offsets[position] = offset
    return offsets, last


def _insert_rows(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """``INSERT`` the rows in order, :data:`INSERT_ROWS` per statement, then the rest one by one."""
    whole = len(rows) - len(rows) % INSERT_ROWS
    with collector_paused():  # the flattened parameter tuples hold no cycles
        groups = (
            tuple(itertools.chain.from_iterable(rows[start : start + INSERT_ROWS]))
            for start in range(0, whole, INSERT_ROWS)
        )
        conn.executemany(_INSERT_GROUP, groups)
        conn.executemany(_INSERT, rows[whole:])


def _impression_row(impression: Impression) -> tuple[Any, ...]:
    body = json.dumps(impression.to_json(), separators=(",", ":"), ensure_ascii=False)
    return (impression.recommendation_id, impression.user_id, impression.served_at, body)


def _read_row(row: tuple[Any, ...]) -> StoredEvent:
    """A :data:`_SELECT` row as a stored event."""
    offset, event_id, user, item, kind, timestamp, value, context, recommendation = row
    context = None if context is None else json.loads(context)
    return StoredEvent(event_id, user, item, kind, timestamp, value, context, recommendation, offset=offset)


def _erasure_filter(user_id: str | None, before: float | None) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause of an erasure: one user's events, or the events timestamped before a time."""
    if (user_id is None) == (before is None):
        raise ValueError("erase_events: expected exactly one of user_id and before")
    if user_id is not None:
        return "user_id = ?", (user_id,)
    if before is None or not math.isfinite(before):
        raise ValueError(f"before: expected finite Unix seconds, got {before!r}")
    return "timestamp < ?", (float(before),)


def _row(event: Event, received: float, pseudonymise: Callable[[str], str] | None = None) -> Row:
    context = None if event.context is None else json.dumps(event.context, separators=(",", ":"), ensure_ascii=False)
    return (
        event.event_id,
        event.user_id if pseudonymise is None else pseudonymise(event.user_id),
        event.item_id,
        event.type,
        event.timestamp,
        event.value,
        context,
        event.recommendation_id,
        received,
    )


def _stored(row: Row, offset: int) -> StoredEvent:
    context = None if row[6] is None else json.loads(row[6])
    return StoredEvent(row[0], row[1], row[2], row[3], row[4], row[5], context, row[7], offset=offset)


def item_record(
    item_id: str,
    title: str | None = None,
    categories: Iterable[str] = (),
    available: bool = True,
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A catalogue record as every event log stores and returns it."""
    if isinstance(categories, str):
        raise TypeError("categories must be a list of strings, not one string")
    return {
        "item_id": item_id,
        "title": title,
        "categories": [str(category) for category in categories],
        "available": bool(available),
        "attributes": attributes,
        "updated_at": time.time(),
        "deleted": False,
    }


def _put_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(_PUT_ITEM, rows)


def _item_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The ``items`` table's row of an :func:`item_record` (columns ``_ITEM_COLUMNS``)."""
    attributes = record["attributes"]
    return (
        record["item_id"],
        record["title"],
        json.dumps(record["categories"], ensure_ascii=False),
        int(record["available"]),
        None if attributes is None else json.dumps(attributes, ensure_ascii=False),
        record["updated_at"],
        0,
    )


def tombstone_record(item_id: str) -> dict[str, Any]:
    """The record of a deleted item: never recommended again until it is put back."""
    return {**item_record(item_id, available=False), "deleted": True}


def _as_list(column: Sequence[Any] | np.ndarray) -> list[Any]:
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


def as_strings(column: Sequence[Any] | np.ndarray) -> list[str]:
    """An id column of a bulk import as ``str`` (ids may come as integers; ``str`` of a ``str`` is itself)."""
    return list(map(str, _as_list(column)))


def as_values(column: Sequence[float | None] | np.ndarray) -> list[float | None]:
    """A value column of a bulk import as floats, None where it has NaN or None (an event without a value)."""
    array = np.asarray(column, dtype=np.float64)  # None becomes NaN
    numbers: list[float | None] = array.tolist()
    if np.isnan(array).any():
        numbers = [None if math.isnan(number) else number for number in array.tolist()]
    return numbers


def _item_record(row: tuple[Any, ...]) -> dict[str, Any]:
    item_id, title, categories, available, attributes, updated_at, deleted = row
    return {
        "item_id": item_id,
        "title": title,
        "categories": json.loads(categories),
        "available": bool(available),
        "attributes": None if attributes is None else json.loads(attributes),
        "updated_at": updated_at,
        "deleted": bool(deleted),
    }


_EMBEDDED: type[EventLog] = SQLiteEventLog  # checked by mypy: the SQLite log implements the interface
