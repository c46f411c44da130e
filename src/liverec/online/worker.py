"""``liverec worker`` (:func:`run_worker`): the online updater, and where the state is shared, its applier.

The backend says what a worker has to do: the embedded one has a single worker per data folder (serve's
child), which runs the updater over the SQLite log. With Redis each worker process is one consumer of the
log stream's consumer group ``state`` (the backend's :meth:`~liverec.backends.Backend.open_state_feed`):

* :class:`StateApplier` reads new entries (``XREADGROUP``), applies them to the Redis state and acknowledges
  them. An API replica applies the events it stores itself before acknowledging the client, so this is the
  safety net: events stored by a replica that died before applying them, and events appended by anything
  else (``liverec import``). Entries a dead worker left pending are taken over after ``claim_idle_ms``
  (``XAUTOCLAIM``). Application is idempotent by offset (the state's applied bitmap), so redelivery never
  counts an event twice.
* the backend's updater lease (Redis: :class:`~liverec.backends.redis.LeaderLease`) makes one worker at a
  time the updater (the online updater reads the whole log from its committed offset, so it must not be
  split across consumers). With Redis the lease is a key with a TTL, renewed at every step; when its holder
  dies, another worker takes over after at most ``ttl_s`` and resumes from the newest registered version's
  offset (at-least-once, like a restart). The embedded deployment has one worker per data folder: its
  lease is always held.
* where the serving processes do not run it (Redis: ``Backend.retention_by_server`` is False), the lease holder
  also runs the retention pass (``retention_days``) every ``retention_interval_s``, and once when it takes the
  lease.
"""

from __future__ import annotations

import logging
import threading
import time

from liverec.backends import Backend
from liverec.backends.base import consumer_name
from liverec.events.log import ConsumerGroupLog, EventLog
from liverec.state.base import StateStore

logger = logging.getLogger(__name__)

__all__ = ["StateApplier", "run_worker"]


class StateApplier:
    """One consumer of the ``group`` consumer group: apply, then acknowledge (at-least-once, idempotent)."""

    def __init__(
        self,
        event_log: ConsumerGroupLog,
        state: StateStore,
        *,
        group: str = "state",
        consumer: str | None = None,
        batch: int = 1000,
        block_ms: int = 500,
        claim_idle_ms: int = 5000,
    ) -> None:
        self.log = event_log
        self.state = state
        self.group = group
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.delivered = 0  # entries this consumer processed
        self.applied = 0  # ... of which it applied first (the rest were already applied)
        self.log.ensure_group(group, self.consumer)

    def step(self) -> int:
        """Process reclaimed entries, else wait up to ``block_ms`` for new ones; returns how many."""
        events = self.log.reclaim(self.group, self.consumer, self.claim_idle_ms, self.batch)
        if events:
            logger.info("reclaimed pending events", extra={"count": len(events), "consumer": self.consumer})
        else:
            events = self.log.consume(self.group, self.consumer, self.batch, self.block_ms)
        if not events:
            return 0
        self.applied += int(self.state.apply(events) or 0)
        self.log.ack(self.group, [event.offset for event in events])
        self.delivered += len(events)
        return len(events)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # Redis restarting, a network blip: log, wait, go on
                logger.exception("state applier step failed")
                stop.wait(1.0)


def run_worker(backend: Backend, stop: threading.Event) -> None:
    """``liverec worker``'s loop until ``stop``: the state applier where the state is shared, and the updater
    while this worker holds the backend's updater lease (always, with one worker per data folder)."""
    from liverec.online.updater import Updater, updater_config

    settings = backend.settings
    name = consumer_name()
    feed = backend.open_state_feed()
    applier = thread = None
    if feed is not None:
        applier = StateApplier(feed.log, feed.state, group=feed.group, consumer=name, claim_idle_ms=feed.claim_idle_ms)
        thread = threading.Thread(target=applier.run, args=(stop,), name="liverec-state-applier", daemon=True)
        thread.start()
        logger.info("worker running", extra={"consumer": name, "log": backend.describe()})
    lease = backend.updater_lease(name)
    updater: Updater | None = None
    retention = _Retention(backend, feed.state if feed is not None else None)
    try:
        while not stop.is_set():
            if not lease.held():
                if updater is not None:  # lost the lease: another worker updates from now on
                    logger.warning("updater lease lost; this worker only applies events now")
                    updater.close()
                    updater = None
                stop.wait(1.0)
                continue
            if updater is None:
                logger.info("updater running", extra={"consumer": name, "data_dir": str(settings.data_dir)})
                updater = Updater(
                    settings.data_dir,
                    settings.event_types,
                    updater_config(settings),
                    backend.state_config,
                    log=backend.open_log(readonly=True),
                    announcer=backend.announcer(),
                )
            retention.run_if_due()
            updater.run_once(stop)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=10)
        if updater is not None:
            updater.close()
        retention.close()
        lease.release()
        if feed is not None and applier is not None:
            feed.log.close()
            counts = {"delivered": applier.delivered, "applied": applier.applied}
            logger.info("worker stopped", extra={"consumer": name, **counts})


class _Retention:
    """The retention pass of a deployment whose servers do not run it, on the worker holding the updater lease."""

    def __init__(self, backend: Backend, state: StateStore | None) -> None:
        settings = backend.settings
        self.backend = backend
        self.state = state
        self.enabled = settings.retention_days is not None and not backend.retention_by_server
        self.interval = settings.retention_interval_s
        self.last: float | None = None
        self.log: EventLog | None = None

    def run_if_due(self) -> None:
        if not self.enabled or (self.last is not None and time.monotonic() - self.last < self.interval):
            return
        self.last = time.monotonic()
        try:
            if self.log is None:
                self.log = self.backend.open_log()
            self.backend.apply_retention(log=self.log, state=self.state)
        except Exception:  # retried at the next interval; the updater goes on
            logger.exception("retention pass failed")

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
