"""When the client tries a request again, and how long it waits first (no I/O here: both clients use it).

Only idempotent requests are retried: reads (``GET``), and event posts, since every event carries an
``event_id`` the server stores once (a resent event is counted in ``duplicates``, not stored again). Admin
``POST``\\ s (promote, rollback, experiments, keys) and ``PUT``/``DELETE`` are sent once: their outcome is
reported, never guessed. A request is retried on a connection error or timeout, on 429 (after the server's
``Retry-After``) and on 502, 503 and 504 (a proxy or a restarting server); any other answer is final.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["NO_RETRY", "RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

#: Answers that say "not now" rather than "no": worth another attempt of an idempotent request.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in total time.

    Before attempt ``n + 1`` (``n`` >= 1 attempts made) the client waits a uniform random time in
    ``[0, min(max_backoff_s, backoff_s * 2 ** (n - 1))]``, or the server's ``Retry-After`` when it sent one
    (capped at ``max_backoff_s``). It gives up after ``max_attempts`` attempts, or sooner when the next wait
    would end more than ``max_total_s`` after the first attempt began.
    """

    max_attempts: int = 5
    backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    max_total_s: float = 30.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: expected an integer >= 1, got {self.max_attempts!r}")
        for name in ("backoff_s", "max_backoff_s", "max_total_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name}: expected seconds >= 0, got {value!r}")
        object.__setattr__(self, "_random", random.Random(self.seed))

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (``retry_after``: the server's, if any)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
        return self._random.uniform(0.0, ceiling)

    def next_delay(self, attempts: int, elapsed_s: float, retry_after: float | None = None) -> float | None:
        """The wait before another attempt, or None when the attempts or the time allowed are spent."""
        if attempts >= self.max_attempts:
            return None
        wait = self.delay(attempts, retry_after)
        return None if elapsed_s + wait > self.max_total_s else wait


#: Never retry: each request is sent once.
NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds (``"2"``, ``"0.5"``) or an HTTP date; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds()) if moment.tzinfo else None
