"""Keyed hashes of user ids: pseudonyms (the ``pseudonym_secret`` setting) and the tokens of erasure records.

With a secret set, every log stores ``pseudonym(secret, user_id)`` instead of the user id, so the state, the
models and every file derived from the log hold only that: HMAC-SHA256 under the secret, as hex, behind a
prefix that says what it is. Without the secret a pseudonym cannot be computed from an id, nor an id found
from a pseudonym; with it, the API maps the raw id it is given to the stored one (requests, erasure).

An erasure record (``EventLog.record_erasure``) tells other processes which user to drop without naming
them: it carries a random salt and ``HMAC-SHA256(salt, user key)``; a process holding the user (a server's
in-memory state) recognises it by hashing its own users with the record's salt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

__all__ = ["PSEUDONYM_PREFIX", "erasure_token", "matches_token", "pseudonym", "pseudonymiser"]

#: What a stored pseudonym starts with (``ps-`` + 64 hex digits: within the 256-character id limit).
PSEUDONYM_PREFIX = "ps-"


def pseudonym(secret: str, user_id: str) -> str:
    """The stored form of ``user_id`` under ``secret``: ``ps-`` + hex HMAC-SHA256."""
    digest = hmac.new(secret.encode("utf-8"), user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest


def pseudonymiser(secret: str | None) -> Callable[[str], str] | None:
    """The function that maps a raw user id to its stored form, or None when ids are stored as given."""
    if secret is None:
        return None
    if not secret:
        raise ValueError("pseudonym_secret: expected a non-empty secret, got an empty string")

    def to_pseudonym(user_id: str) -> str:
        return pseudonym(secret, user_id)

    return to_pseudonym


def erasure_token(user_key: str, salt: str | None = None) -> str:
    """``salt:HMAC-SHA256(salt, user_key)`` with a fresh random salt unless one is given."""
    salt = secrets.token_hex(16) if salt is None else salt
    digest = hmac.new(salt.encode("ascii"), user_key.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{salt}:{digest}"


def matches_token(user_key: str, token: str) -> bool:
    """Whether ``token`` (from :func:`erasure_token`) was made from ``user_key``."""
    salt, _, _ = token.partition(":")
    return hmac.compare_digest(erasure_token(user_key, salt), token)
