"""The one interface of the live state: what serving, the CLI and the workers use of it.

Two implementations: :class:`~liverec.state.store.State` (in process, snapshotted to a file) and
:class:`~liverec.state.redis_store.RedisState` (in Redis, shared by every replica). Nothing outside
``liverec.backends`` needs to know which one it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from liverec.state.store import Catalogue, EventLike, State, StateConfig

__all__ = ["StateStore"]


class StateStore(Protocol):
    """User sequences, item statistics and the catalogue, folded from the event log in log order.

    Item indices are dense and given in order of first sight; ``item_ids[i]`` is the external id of
    index ``i`` and ``item_index`` the reverse mapping (both local mirrors for the Redis state: call
    :meth:`sync` to bring them up to date).
    """

    config: StateConfig
    catalogue: Catalogue
    item_ids: list[str]
    item_index: dict[str, int]

    # -- sizes and counters
    @property
    def n_items(self) -> int: ...
    @property
    def n_users(self) -> int: ...
    @property
    def n_events(self) -> int: ...
    @property
    def offset(self) -> int:
        """The last log offset applied."""
        ...

    @property
    def clock(self) -> float:
        """The newest event time applied (popularity decays against it)."""
        ...

    # -- writing
    def apply(self, events: Iterable[EventLike]) -> int | None:
        """Fold committed events in, skipping offsets already applied (the Redis state: how many were new)."""
        ...

    def reset_users(self, user_ids: Iterable[str], events: Iterable[EventLike] = ()) -> int:
        """Rebuild the named users' sequences and seen sets from ``events`` (what they have left in the log, in
        log order); a user left with none is forgotten. Item statistics stay aggregated. Returns how many of
        the users were known (erasure: the user's keys are gone afterwards)."""
        ...

    def put_item(self, item_id: str, record: Mapping[str, Any]) -> int: ...
    def remove_item(self, item_id: str) -> bool: ...
    def items_for(self, item_ids: Sequence[str]) -> np.ndarray:
        """Dense indices of ``item_ids``, creating the unknown ones."""
        ...

    # -- reading
    def sync(self) -> None:
        """Bring local mirrors (item list, catalogue) up to date; nothing to do in process."""
        ...

    def history(self, user_id: str) -> np.ndarray: ...
    def seen(self, user_id: str) -> np.ndarray: ...
    def user_view(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's history (oldest first) and seen items, read together."""
        ...

    def has_user(self, user_id: str) -> bool: ...
    def find_users(self, prefix: str, limit: int) -> list[str]:
        """At most ``limit`` stored user keys that start with ``prefix`` (a pseudonym where ids are pseudonymised),
        stopping as soon as ``limit`` are found."""
        ...

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of known items (unknown ones are dropped), in the order given."""
        ...

    def counts(self) -> np.ndarray: ...
    def popularity(self, now: float | None = None) -> np.ndarray: ...
    def item_stats(self, item_id: str) -> dict[str, float] | None: ...
    def fingerprint(self) -> dict[str, Any]:
        """Everything derived from the log, keyed by external ids (live and rebuilt states compare equal)."""
        ...


_IN_PROCESS: type[StateStore] = State  # checked by mypy: the in-process state implements the interface
