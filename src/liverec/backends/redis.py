"""The Redis deployment: the log is a Redis Stream and the state lives in Redis, shared by every replica.

Every ``liverec serve`` replica and ``liverec worker`` of one ``redis_prefix`` shares the log, the state and
the catalogue; promotions are announced over Redis (:class:`~liverec.registry.RedisAnnouncer`) as well as
written to ``<data-dir>/models`` (every process must see that folder: one machine, or shared storage).
One Redis client per backend, shared by everything it opens.
"""

from __future__ import annotations

from typing import Any

from liverec.backends.base import Backend, OnCommit, StateFeed, consumer_name
from liverec.events.redis_log import RedisEventLog, redis_client
from liverec.experiments import RedisExperimentStore
from liverec.registry import RedisAnnouncer
from liverec.settings import Settings
from liverec.state.redis_store import RedisState

__all__ = ["STATE_GROUP", "LeaderLease", "RedisBackend"]

#: Consumer group of the workers that apply events to the Redis state.
STATE_GROUP = "state"

#: Key (under the prefix) of the lease that makes one worker the updater.
UPDATER_LEASE = "updater:leader"

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


class RedisBackend(Backend):
    """Redis Stream log + :class:`~liverec.state.redis_store.RedisState` + announcements (see the module docstring).

    Connecting raises :class:`~liverec.errors.BackendUnavailable` when Redis cannot be reached.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.prefix = settings.redis_prefix
        self.client: Any = redis_client(settings.redis_url)

    # -- the event log -----------------------------------------------------------------------------
    def open_log(self, on_commit: OnCommit | None = None, *, readonly: bool = False) -> RedisEventLog:
        """The stream (``readonly`` changes nothing: any process may read while others append)."""
        return RedisEventLog(self.client, self.prefix, on_commit=on_commit, pseudonymise=self.pseudonymise)

    def open_ingest_log(self) -> RedisEventLog:
        """A log whose appends are applied to the shared state right away (the workers would, later)."""
        return self.open_log(on_commit=self.open_state().apply)

    def describe(self) -> str:
        return f"{self.settings.redis_url} ({self.prefix})"

    def migrate(self) -> list[str]:
        """Fold the event-id hash of the versions before session 34 into the id set
        (:meth:`RedisEventLog.retire_legacy_event_ids`)."""
        with self.open_log() as log:
            folded = log.retire_legacy_event_ids()
        if not folded:
            return []
        return [f"folded {folded} event ids from {self.prefix}:event-ids (a hash) into {self.prefix}:event-id-set"]

    # -- the state ---------------------------------------------------------------------------------
    def open_state(self, *, popularity_ttl_s: float | None = None) -> RedisState:
        """The shared state (events stored but not applied by a replica are applied by ``liverec worker``).

        ``popularity_ttl_s``: how long the popularity vector read is reused (default: the setting).
        """
        ttl = self.settings.redis_popularity_ttl_s if popularity_ttl_s is None else popularity_ttl_s
        return RedisState(self.client, self.prefix, self.state_config, popularity_ttl_s=ttl)

    def rebuild_state(self) -> RedisState:
        """Clear the shared state and apply the whole stream to it again."""
        state = self.open_state()
        state.clear()
        with self.open_log() as event_log:
            for batch in event_log.iter_all():
                state.apply(batch)
        return state

    # -- models and the worker ---------------------------------------------------------------------
    def announcer(self) -> RedisAnnouncer:
        """Promotions are published on ``P:models``: every replica swaps on the message."""
        return RedisAnnouncer(self.client, self.prefix)

    def open_experiments(self) -> RedisExperimentStore:
        """Experiments in the hash ``P:experiments``, shared by every replica (not in the data folder)."""
        return RedisExperimentStore(self.client, self.prefix)

    def open_state_feed(self) -> StateFeed:
        """The stream through consumer group ``state``, applied to the shared state (popularity never cached)."""
        claim_idle_ms = int(self.settings.worker_claim_idle_s * 1000)
        return StateFeed(self.open_log(), self.open_state(popularity_ttl_s=0.0), STATE_GROUP, claim_idle_ms)

    def updater_lease(self, owner: str) -> LeaderLease:
        """One updater among all the workers of the prefix: the one holding ``P:updater:leader``."""
        return LeaderLease(self.client, f"{self.prefix}:{UPDATER_LEASE}", ttl_s=30.0, owner=owner)

    def close(self) -> None:
        self.client.close()


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
