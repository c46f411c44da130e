"""``liverec worker`` with the Redis backend: apply events to the shared state, and run the updater as leader.

Each worker process is one consumer of the log stream's consumer group ``state``:

* :class:`StateApplier` reads new entries (``XREADGROUP``), applies them to the Redis state and acknowledges
  them. An API replica applies the events it stores itself before acknowledging the client, so this is the
  safety net: events stored by a replica that died before applying them, and events appended by anything
  else (``liverec import``). Entries a dead worker left pending are taken over after ``claim_idle_ms``
  (``XAUTOCLAIM``). Application is idempotent by offset (the state's applied bitmap), so redelivery never
  counts an event twice.
* :class:`LeaderLease` makes one worker at a time the updater (issue 5's loop: it reads the whole log from
  its committed offset, so it must not be split across consumers). The lease is a Redis key with a TTL,
  renewed at every step; when its holder dies, another worker takes over after at most ``ttl_s`` and
  resumes from the newest registered version's offset (at-least-once, like a restart).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

log = logging.getLogger("liverec.worker")

__all__ = ["LeaderLease", "StateApplier", "consumer_name"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class StateApplier:
    """One consumer of the ``group`` consumer group: apply, then acknowledge (at-least-once, idempotent)."""

    def __init__(
        self,
        event_log: Any,
        state: Any,
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
            log.info("reclaimed pending events", extra={"count": len(events), "consumer": self.consumer})
        else:
            events = self.log.consume(self.group, self.consumer, self.batch, self.block_ms)
        if not events:
            return 0
        self.applied += int(self.state.apply(events))
        self.log.ack(self.group, [event.offset for event in events])
        self.delivered += len(events)
        return len(events)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # Redis restarting, a network blip: log, wait, go on
                log.exception("state applier step failed")
                stop.wait(1.0)


class LeaderLease:
    """A Redis key held by one process at a time, with a TTL: ``held()`` acquires or renews it."""

    def __init__(self, client: Any, key: str, ttl_s: float = 30.0, owner: str | None = None) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.owner = owner or consumer_name()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def held(self) -> bool:
        """True when this process holds the lease now (renewed for another ``ttl_s``)."""
        if self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return None if value is None else str(value)

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])


def run_redis_worker(settings: Any, stop: threading.Event) -> None:
    """The worker loop of the Redis deployment: a state applier thread, and the updater while leader."""
    from liverec.backends import STATE_GROUP, open_event_log, open_redis_state
    from liverec.online.updater import Updater, updater_config
    from liverec.registry import RedisAnnouncer

    state = open_redis_state(settings, popularity_ttl_s=0.0)
    client = state.client
    event_log = open_event_log(settings, client=client)
    applier = StateApplier(event_log, state, group=STATE_GROUP, claim_idle_ms=int(settings.worker_claim_idle_s * 1000))
    thread = threading.Thread(target=applier.run, args=(stop,), name="liverec-state-applier", daemon=True)
    thread.start()
    log.info("worker running", extra={"consumer": applier.consumer, "redis_prefix": settings.redis_prefix})
    lease = LeaderLease(client, f"{settings.redis_prefix}:updater:leader", ttl_s=30.0, owner=applier.consumer)
    updater: Updater | None = None
    try:
        while not stop.is_set():
            if not lease.held():
                if updater is not None:  # lost the lease: another worker updates from now on
                    log.warning("updater lease lost; this worker only applies events now")
                    updater.close()
                    updater = None
                stop.wait(1.0)
                continue
            if updater is None:
                log.info("this worker holds the updater lease", extra={"consumer": applier.consumer})
                updater = Updater(
                    settings.data_dir,
                    settings.event_types,
                    updater_config(settings),
                    state.config,
                    log=open_event_log(settings, client=client),
                    announcer=RedisAnnouncer(client, settings.redis_prefix),
                )
            if updater.learner is None and not updater.start():
                stop.wait(updater.config.poll_interval_s)
                continue
            if updater.step() == 0:
                stop.wait(updater.config.poll_interval_s)
    finally:
        stop.set()
        thread.join(timeout=10)
        if updater is not None:
            updater.close()
        lease.release()
        event_log.close()
        counts = {"delivered": applier.delivered, "applied": applier.applied}
        log.info("worker stopped", extra={"consumer": applier.consumer, **counts})
