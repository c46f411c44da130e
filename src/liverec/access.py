"""Access control's data: API keys with scopes, and the audit trail of admin actions.

A key reads ``lrk_<key_id>_<secret>``. Only ``sha256(secret)`` is stored, never the key: in
``<data-dir>/keys.json`` (mode 0600), and with the Redis backend also in the hash ``<prefix>:keys``, which
every replica re-reads at most :data:`REFRESH_S` after its last look, so a new or revoked key takes effect
on every replica within a second. Checking a key finds its record by ``key_id`` and compares the digests
with :func:`hmac.compare_digest` (constant time); the secret is 32 random bytes, so a fast hash is the right
one (a password hash protects guessable secrets, these are not).

The audit trail (:class:`AuditLog`) has one JSON record per admin action: who (the key's name), what (the
method and route), on what (the target), when, and how it ended. A user id as a target is stored as a hash,
so that erasing a user leaves no trace of their id in the data folder.

Serving's use of both is in :mod:`liverec.serving.auth`; ``liverec keys`` manages them from the shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverec.errors import UsageError
from liverec.events.redis_log import redis_client
from liverec.settings import Settings

__all__ = [
    "AUDIT_FILE",
    "KEYS_FILE",
    "SCOPES",
    "ApiKey",
    "AuditLog",
    "KeyStore",
    "open_audit_log",
    "open_key_store",
    "parse_scopes",
    "user_target",
]

#: The scopes, each with what it allows; ``admin`` allows everything.
SCOPES: Mapping[str, str] = {
    "ingest": "POST /v1/events",
    "read": "recommendations, similar items, sessions; GET users, items, models; /metrics",
    "catalog": "PUT and DELETE /v1/items/{item_id}",
    "admin": "everything: promote, roll back, erase a user, manage keys",
}
KEYS_FILE = "keys.json"
AUDIT_FILE = "audit.jsonl"
#: How long a process trusts the key table it read before it reads it again (seconds).
REFRESH_S = 1.0

_PREFIX = "lrk"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: A digest no secret has, compared against when the key id is unknown (the answer takes the same time).
_NO_DIGEST = hashlib.sha256(b"no such key").hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """``"read,ingest"`` as a set; :class:`UsageError` naming an unknown scope and the known ones."""
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(scopes - set(SCOPES))
    if not scopes or unknown:
        got = ", ".join(unknown) if unknown else repr(text)
        raise UsageError(f"--scopes: unknown scope {got}; expected a comma-separated list of {', '.join(SCOPES)}")
    return scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def user_target(user_id: str) -> str:
    """How the audit trail names a user: a hash, so that no file keeps an erased user's id."""
    return "user:sha256:" + hashlib.sha256(user_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ApiKey:
    """One key's record (what is stored: no secret)."""

    name: str
    key_id: str
    scopes: frozenset[str]
    digest: str = field(repr=False)
    created_at: float

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_id": self.key_id,
            "scopes": sorted(self.scopes),
            "sha256": self.digest,
            "created_at": self.created_at,
        }

    def public(self) -> dict[str, Any]:
        """What listing a key shows (no digest)."""
        return {"name": self.name, "key_id": self.key_id, "scopes": sorted(self.scopes), "created_at": self.created_at}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ApiKey:
        return cls(
            name=str(record["name"]),
            key_id=str(record["key_id"]),
            scopes=frozenset(record["scopes"]),
            digest=str(record["sha256"]),
            created_at=float(record["created_at"]),
        )


class KeyStore:
    """The API keys of a deployment: the file in the data folder, and the Redis hash where there is one.

    ``client``/``redis_key``: the Redis backend's copy, which is then the one read (replicas on other
    machines share it); writes go to both. :meth:`verify` serves requests from a cached table re-read at
    most every :data:`REFRESH_S` seconds.
    """

    def __init__(self, data_dir: str | Path, *, client: Any = None, redis_key: str | None = None) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self.client = client
        self.redis_key = redis_key
        self._cache: dict[str, ApiKey] = {}  # key_id -> record
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------------------
    def _read(self) -> list[ApiKey]:
        if self.client is not None:
            records = self.client.hgetall(self.redis_key)
            return [ApiKey.from_json(json.loads(text)) for text in records.values()]
        try:
            payload = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise UsageError(f"{self.path}: unreadable key file ({error})") from error
        return [ApiKey.from_json(record) for record in payload.get("keys", [])]

    def keys(self) -> list[ApiKey]:
        """Every key, oldest first (read now)."""
        return sorted(self._read(), key=lambda key: key.created_at)

    def _table(self) -> dict[str, ApiKey]:
        now = time.monotonic()
        if now - self._loaded_at >= REFRESH_S:
            with self._lock:
                if now - self._loaded_at >= REFRESH_S:
                    self._cache = {key.key_id: key for key in self._read()}
                    self._loaded_at = time.monotonic()
        return self._cache

    def enabled(self) -> bool:
        """Whether any key exists (then every protected route needs one)."""
        return bool(self._table())

    def verify(self, token: str) -> ApiKey | None:
        """The key whose secret ``token`` carries, else None; the digests are compared in constant time."""
        parts = token.split("_", 2)
        key = self._table().get(parts[1]) if len(parts) == 3 and parts[0] == _PREFIX else None
        secret = parts[2] if len(parts) == 3 else token
        matches = hmac.compare_digest(_digest(secret), key.digest if key is not None else _NO_DIGEST)
        return key if matches and key is not None else None

    # -- writing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[ApiKey]]:
        """The file's keys under an exclusive lock; what the block leaves in the list is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            keys = self._read_file()
            before = list(keys)
            yield keys
            if keys != before:
                self._write_file(keys)

    def _read_file(self) -> list[ApiKey]:
        if self.client is None:
            return self._read()
        return KeyStore(self.path.parent)._read()

    def _write_file(self, keys: list[ApiKey]) -> None:
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"keys": [key.to_json() for key in keys]}, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def create(self, name: str, scopes: frozenset[str]) -> tuple[ApiKey, str]:
        """A new key named ``name``: its record and the key itself (shown once, never stored)."""
        if not _NAME.match(name):
            raise UsageError(f"--name: {name!r} is not a key name; expected 1-64 letters, digits or _.@-")
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise UsageError(f"--scopes: unknown scope {unknown or '(none)'}; expected some of {', '.join(SCOPES)}")
        secret = secrets.token_urlsafe(32)
        key = ApiKey(name, secrets.token_hex(6), frozenset(scopes), _digest(secret), time.time())
        with self._locked() as keys:
            taken = {existing.name for existing in keys}
            if self.client is not None:
                taken |= set(self.client.hkeys(self.redis_key))
            if name in taken:
                raise UsageError(f"--name: a key named {name!r} exists; revoke it first or choose another name")
            keys.append(key)
            if self.client is not None:
                self.client.hset(self.redis_key, name, json.dumps(key.to_json()))
        self._loaded_at = float("-inf")
        return key, f"{_PREFIX}_{key.key_id}_{secret}"

    def revoke(self, name: str) -> bool:
        """Remove the key named ``name``; False when there is none."""
        with self._locked() as keys:
            found = any(key.name == name for key in keys)
            keys[:] = [key for key in keys if key.name != name]
            if self.client is not None:
                found = bool(self.client.hdel(self.redis_key, name)) or found
        self._loaded_at = float("-inf")
        return found


class AuditLog:
    """Admin actions, one JSON record each: appended to ``<data-dir>/audit.jsonl`` (flushed to disk before the
    call returns), or with the Redis backend to the stream ``<prefix>:audit`` that every replica shares."""

    def __init__(self, data_dir: str | Path, *, client: Any = None, stream: str | None = None) -> None:
        self.path = Path(data_dir) / AUDIT_FILE
        self.client = client
        self.stream = stream
        self._lock = threading.Lock()

    def record(self, *, actor: str, action: str, target: str | None = None, status: int | str | None = None) -> None:
        """Append one record; ``status``: the HTTP status of a refused action, ``"ok"`` for a done one."""
        entry = {"time": time.time(), "actor": actor, "action": action, "target": target, "status": status}
        if self.client is not None:
            self.client.xadd(self.stream, {"record": json.dumps(entry)})
            return
        line = json.dumps(entry) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, line.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        if self.client is not None:
            return [json.loads(fields["record"]) for _, fields in self.client.xrange(self.stream)]
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _redis(settings: Settings) -> Any:
    return redis_client(settings.redis_url) if settings.backend == "redis" else None


def open_key_store(settings: Settings, client: Any = None) -> KeyStore:
    """The key store of the deployment ``settings`` describe (``client``: a Redis client to reuse)."""
    client = client if client is not None or settings.backend != "redis" else _redis(settings)
    return KeyStore(settings.data_dir, client=client, redis_key=f"{settings.redis_prefix}:keys")


def open_audit_log(settings: Settings, client: Any = None) -> AuditLog:
    """The audit trail of the deployment ``settings`` describe (``client``: a Redis client to reuse)."""
    client = client if client is not None or settings.backend != "redis" else _redis(settings)
    return AuditLog(settings.data_dir, client=client, stream=f"{settings.redis_prefix}:audit")
