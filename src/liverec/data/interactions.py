"""The core data types: id maps, interactions, per-user histories and datasets.

Everything below the edges of LiveRec works with dense internal integer ids (``0..n-1``).
External ids (whatever a shop or a data file calls its users and items) are always strings and are
translated at the edges by one :class:`IdMap` per entity type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Event type used when a source does not say what kind of event a row is.
DEFAULT_EVENT_TYPE = "interaction"


@dataclass(frozen=True)
class IdMap:
    """A frozen, bidirectional map between external ids (strings) and internal ids ``0..n-1``.

    Internal id ``i`` is the position of the external id in :attr:`external_ids`, so adding ids never
    changes the internal id of an existing one.
    """

    external_ids: np.ndarray  # [n] object array of str
    _index: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.external_ids, dtype=object)
        index = pd.Index(ids, dtype=object)
        if not index.is_unique:
            duplicated = index[index.duplicated()][0]
            raise ValueError(f"external_ids: id {duplicated!r} appears more than once")
        object.__setattr__(self, "external_ids", ids)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Build a map from raw values, in order of first appearance (values become strings)."""
        as_str = pd.Series(
            np.asarray(list(values) if not isinstance(values, np.ndarray | pd.Series) else values, dtype=object)
        ).astype(str)
        return cls(pd.unique(as_str.to_numpy()))

    @classmethod
    def empty(cls) -> IdMap:
        return cls(np.empty(0, dtype=object))

    @property
    def size(self) -> int:
        return len(self.external_ids)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def to_internal(self, external: Iterable[object], strict: bool = True) -> np.ndarray:
        """Internal ids of ``external``; unknown ids raise ``KeyError`` or, with ``strict=False``, map to -1."""
        values = np.asarray(
            list(external) if not isinstance(external, np.ndarray | pd.Series) else external,
            dtype=object,
        )
        values = pd.Series(values, dtype=object).astype(str).to_numpy()
        internal = self._index.get_indexer(values).astype(np.int64)
        if strict and (internal < 0).any():
            missing = values[internal < 0][0]
            raise KeyError(f"unknown id {missing!r}")
        return internal

    def to_external(self, internal: np.ndarray | Sequence[int]) -> np.ndarray:
        """External ids of internal ids ``internal`` (any shape)."""
        internal = np.asarray(internal, dtype=np.int64)
        if internal.size and (internal.min() < 0 or internal.max() >= self.size):
            raise IndexError(f"internal ids must be in [0, {self.size}), got {internal.min()}..{internal.max()}")
        return self.external_ids[internal]

    def add(self, external: Iterable[object]) -> IdMap:
        """A new map with the unseen ids of ``external`` appended (existing ids keep their internal id)."""
        new = IdMap.from_values(external).external_ids
        unseen = new[self._index.get_indexer(new) < 0]
        if len(unseen) == 0:
            return self
        return IdMap(np.concatenate([self.external_ids, unseen]))


@dataclass(frozen=True)
class Interactions:
    """A table of events with internal ids, column-oriented.

    Rows are kept in the order given; :meth:`sorted` orders them by (user, time) stably, which is
    the chronological order every sequence protocol relies on (ties keep their source order).

    ``timed`` False marks a source that gives each user's order but no time (the ``user item1 item2 ...``
    sequence files of the literature): ``timestamps`` are then each event's position in its user's
    sequence (0, 1, 2, ...), which orders a user's events and measures nothing. Steps that read time
    know it: :meth:`Histories.from_interactions` gives no timestamps (SASRec then takes the order as
    exact: no tie shuffling, no time-gap loss windows), time-decayed popularity weighs every event the
    same, and a global temporal split or a replay refuses.
    """

    user_ids: np.ndarray  # [n] int64 internal user ids
    item_ids: np.ndarray  # [n] int64 internal item ids
    timestamps: np.ndarray  # [n] float64 Unix seconds
    values: np.ndarray  # [n] float32 (rating, quantity, ...); 1.0 when the source has none
    event_types: np.ndarray  # [n] int16 codes into ``event_type_names``
    n_users: int
    n_items: int
    event_type_names: tuple[str, ...] = (DEFAULT_EVENT_TYPE,)
    timed: bool = True  # False: timestamps are positions in each user's sequence (order without time)

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        for name in ("item_ids", "timestamps", "values", "event_types"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: expected {n} rows like user_ids, got {len(getattr(self, name))}")
        object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=np.int64))
        object.__setattr__(self, "item_ids", np.asarray(self.item_ids, dtype=np.int64))
        object.__setattr__(self, "timestamps", np.asarray(self.timestamps, dtype=np.float64))
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float32))
        object.__setattr__(self, "event_types", np.asarray(self.event_types, dtype=np.int16))
        if n:
            if self.user_ids.min() < 0 or self.user_ids.max() >= self.n_users:
                raise ValueError(
                    f"user_ids: expected values in [0, {self.n_users}), got "
                    f"{self.user_ids.min()}..{self.user_ids.max()}"
                )
            if self.item_ids.min() < 0 or self.item_ids.max() >= self.n_items:
                raise ValueError(
                    f"item_ids: expected values in [0, {self.n_items}), got "
                    f"{self.item_ids.min()}..{self.item_ids.max()}"
                )

    @classmethod
    def from_arrays(
        cls,
        user_ids: np.ndarray | Sequence[int],
        item_ids: np.ndarray | Sequence[int],
        timestamps: np.ndarray | Sequence[float] | None = None,
        values: np.ndarray | Sequence[float] | None = None,
        n_users: int | None = None,
        n_items: int | None = None,
        timed: bool = True,
    ) -> Interactions:
        """Convenience constructor for internal-id arrays (timestamps default to row order)."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        n = len(user_ids)
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            timestamps=np.arange(n, dtype=np.float64) if timestamps is None else np.asarray(timestamps),
            values=np.ones(n, dtype=np.float32) if values is None else np.asarray(values),
            event_types=np.zeros(n, dtype=np.int16),
            n_users=int(user_ids.max() + 1 if n else 0) if n_users is None else n_users,
            n_items=int(item_ids.max() + 1 if n else 0) if n_items is None else n_items,
            timed=timed,
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask or an index array (id spaces unchanged)."""
        return Interactions(
            user_ids=self.user_ids[rows],
            item_ids=self.item_ids[rows],
            timestamps=self.timestamps[rows],
            values=self.values[rows],
            event_types=self.event_types[rows],
            n_users=self.n_users,
            n_items=self.n_items,
            event_type_names=self.event_type_names,
            timed=self.timed,
        )

    def sorted(self) -> Interactions:
        """Rows ordered by user, then time; ties keep their original order (stable)."""
        order = np.lexsort((self.timestamps, self.user_ids))
        return self.subset(order)

    def with_sizes(self, n_users: int, n_items: int) -> Interactions:
        """The same rows in (possibly larger) id spaces."""
        if n_users < self.n_users or n_items < self.n_items:
            raise ValueError(f"id spaces can only grow: ({self.n_users}, {self.n_items}) -> ({n_users}, {n_items})")
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.timestamps,
            self.values,
            self.event_types,
            n_users,
            n_items,
            self.event_type_names,
            self.timed,
        )

    @staticmethod
    def concat(parts: Sequence[Interactions]) -> Interactions:
        """Rows of all parts, in order, in the largest id spaces among them."""
        if not parts:
            raise ValueError("parts: expected at least one Interactions")
        names = parts[0].event_type_names
        if any(p.event_type_names != names for p in parts):
            raise ValueError("parts: event_type_names differ between parts")
        if len({p.timed for p in parts}) > 1:
            raise ValueError("parts: some are timed and some are order without time (timed differs)")
        return Interactions(
            user_ids=np.concatenate([p.user_ids for p in parts]),
            item_ids=np.concatenate([p.item_ids for p in parts]),
            timestamps=np.concatenate([p.timestamps for p in parts]),
            values=np.concatenate([p.values for p in parts]),
            event_types=np.concatenate([p.event_types for p in parts]),
            n_users=max(p.n_users for p in parts),
            n_items=max(p.n_items for p in parts),
            event_type_names=names,
            timed=parts[0].timed,
        )

    def to_csr(self, binary: bool = True) -> sp.csr_matrix:
        """User-item matrix ``[n_users, n_items]``; binary (1 if any event) or summed values."""
        data = np.ones(len(self), dtype=np.float32) if binary else self.values
        matrix = sp.csr_matrix((data, (self.user_ids, self.item_ids)), shape=(self.n_users, self.n_items))
        matrix.sum_duplicates()
        if binary:
            matrix.data[:] = 1.0
        return matrix

    def item_counts(self) -> np.ndarray:
        """Number of events per item, ``[n_items]`` int64."""
        return np.bincount(self.item_ids, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user_ids, minlength=self.n_users).astype(np.int64)


@dataclass(frozen=True)
class Histories:
    """Chronological item sequences of a batch of users, stored ragged (CSR-like).

    Row ``r`` is user ``users[r]`` (internal id, or -1 for a user the models have never seen, such as
    an anonymous session) with items ``items[indptr[r]:indptr[r+1]]``, oldest first.
    """

    users: np.ndarray  # [n_rows] int64
    indptr: np.ndarray  # [n_rows + 1] int64
    items: np.ndarray  # [nnz] int64
    timestamps: np.ndarray | None = None  # [nnz] float64, aligned with items

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.asarray(self.users, dtype=np.int64))
        object.__setattr__(self, "indptr", np.asarray(self.indptr, dtype=np.int64))
        object.__setattr__(self, "items", np.asarray(self.items, dtype=np.int64))
        if len(self.indptr) != len(self.users) + 1:
            raise ValueError(f"indptr: expected {len(self.users) + 1} entries, got {len(self.indptr)}")
        if self.indptr[-1] != len(self.items):
            raise ValueError(f"indptr: last entry {self.indptr[-1]} != number of items {len(self.items)}")

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]], users: Sequence[int] | None = None) -> Histories:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        items = np.zeros(0, dtype=np.int64)
        if len(sequences):
            items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        users_arr = np.full(len(sequences), -1, dtype=np.int64) if users is None else np.asarray(users)
        return cls(users_arr, indptr, items)

    @classmethod
    def from_interactions(cls, interactions: Interactions, users: np.ndarray | None = None) -> Histories:
        """Histories of ``users`` (default: every user id), in chronological order.

        Timestamps come along only from ``timed`` interactions: positions in a sequence are no clock.
        """
        ordered = interactions.sorted()
        counts = np.bincount(ordered.user_ids, minlength=interactions.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)])
        stamps = ordered.timestamps if interactions.timed else None
        if users is None:
            return cls(np.arange(interactions.n_users), starts, ordered.item_ids, stamps)
        users = np.asarray(users, dtype=np.int64)
        lengths = counts[users]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        take = concat_ranges(starts[users], lengths)
        return cls(users, indptr, ordered.item_ids[take], None if stamps is None else stamps[take])

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        return self.items[self.indptr[r] : self.indptr[r + 1]]

    def select(self, rows: np.ndarray | slice) -> Histories:
        """A batch made of some rows (index array or slice)."""
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        lengths = self.lengths()[rows]
        take = concat_ranges(self.indptr[rows], lengths)
        ts = None if self.timestamps is None else self.timestamps[take]
        return Histories(self.users[rows], np.concatenate([[0], np.cumsum(lengths)]), self.items[take], ts)

    def last(self, max_len: int) -> Histories:
        """Each sequence truncated to its ``max_len`` most recent items."""
        lengths = np.minimum(self.lengths(), max_len)
        take = concat_ranges(self.indptr[1:] - lengths, lengths)
        ts = None if self.timestamps is None else self.timestamps[take]
        return Histories(self.users, np.concatenate([[0], np.cumsum(lengths)]), self.items[take], ts)

    def to_csr(self, n_items: int) -> sp.csr_matrix:
        """Binary matrix ``[n_rows, n_items]`` of the items each row has seen."""
        data = np.ones(len(self.items), dtype=np.float32)
        matrix = sp.csr_matrix((data, self.items, self.indptr), shape=(len(self), n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


@dataclass(frozen=True)
class ItemMetadata:
    """Optional per-item side information, aligned with internal item ids."""

    titles: np.ndarray  # [n_items] object (str or None)
    genres: list[tuple[str, ...]]  # [n_items]

    def genre_vocabulary(self) -> list[str]:
        return sorted({g for gs in self.genres for g in gs})

    def genre_matrix(self) -> tuple[sp.csr_matrix, list[str]]:
        """Binary ``[n_items, n_genres]`` CSR (row = internal item id) and its column names, sorted.

        The sparse item -> feature index models take as side features (e.g. ``SASRec.set_item_features``).
        """
        vocabulary = self.genre_vocabulary()
        column = {genre: index for index, genre in enumerate(vocabulary)}
        lengths = np.array([len(set(gs)) for gs in self.genres], dtype=np.int64)
        indices = np.array([column[g] for gs in self.genres for g in sorted(set(gs))], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(self.genres), len(vocabulary))), vocabulary


@dataclass(frozen=True)
class UserMetadata:
    """Optional per-user attributes, aligned with internal user ids (what a data set says about its users).

    ``attributes`` maps a name to an ``[n_users]`` array: numbers as float64 (NaN where unknown, e.g. ``age``),
    categories as object arrays of str (None where unknown, e.g. ``gender``, ``occupation``). Group metrics
    (:mod:`liverec.evaluation.groups`) report accuracy per value of each.
    """

    attributes: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        lengths = {name: len(values) for name, values in self.attributes.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"attributes: expected arrays of one length (one entry per user), got {lengths}")

    @property
    def names(self) -> list[str]:
        return list(self.attributes)


@dataclass(frozen=True)
class Dataset:
    """Interactions plus the id maps that translate them, and item and user metadata where the source has it."""

    interactions: Interactions
    user_map: IdMap
    item_map: IdMap
    items: ItemMetadata | None = None
    name: str = "dataset"
    users: UserMetadata | None = None

    def __post_init__(self) -> None:
        if self.interactions.n_users != self.user_map.size:
            raise ValueError(
                f"user_map: {self.user_map.size} ids but interactions have n_users={self.interactions.n_users}"
            )
        if self.interactions.n_items != self.item_map.size:
            raise ValueError(
                f"item_map: {self.item_map.size} ids but interactions have n_items={self.interactions.n_items}"
            )
        if self.users is not None and any(len(v) != self.user_map.size for v in self.users.attributes.values()):
            raise ValueError(f"users: attributes must have one entry per user ({self.user_map.size})")

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        name: str = "dataset",
        items: pd.DataFrame | None = None,
        timed: bool = True,
        users: pd.DataFrame | None = None,
    ) -> Dataset:
        """Build from a frame with columns ``user_id, item_id, timestamp, event_type, value``.

        ``timed`` False: the timestamps are positions in each user's sequence (see :class:`Interactions`).

        ``items`` (optional) has ``item_id``, ``title`` and ``genres`` (a tuple of strings); items that
        appear only there (never interacted with) are part of the catalogue too.

        ``users`` (optional) has ``user_id`` and one column per attribute (numeric columns stay numbers,
        the others become str): :class:`UserMetadata`. Users that appear only there are left out (a user
        with no event is no part of the data), and a user it does not list gets NaN / None.
        """
        # factorize: codes in order of first appearance, one hash pass per column (fast on 25M rows)
        user_codes, user_values = pd.factorize(frame["user_id"].astype(str))
        item_codes, item_values = pd.factorize(frame["item_id"].astype(str))
        user_map = IdMap(np.asarray(user_values, dtype=object))
        item_map = IdMap(np.asarray(item_values, dtype=object))
        if items is not None:
            item_map = item_map.add(items["item_id"].to_numpy())
        event_names, event_codes = _encode_event_types(frame["event_type"])
        interactions = Interactions(
            user_ids=user_codes,
            item_ids=item_codes,
            timestamps=frame["timestamp"].to_numpy(dtype=np.float64),
            values=frame["value"].to_numpy(dtype=np.float32),
            event_types=event_codes,
            n_users=user_map.size,
            n_items=item_map.size,
            event_type_names=event_names,
            timed=timed,
        )
        metadata = None
        if items is not None:
            titles = np.full(item_map.size, None, dtype=object)
            genres: list[tuple[str, ...]] = [()] * item_map.size
            rows = item_map.to_internal(items["item_id"].to_numpy())
            titles[rows] = items["title"].to_numpy(dtype=object)
            for row, item_genres in zip(rows, items["genres"], strict=True):
                genres[row] = tuple(item_genres)
            metadata = ItemMetadata(titles, genres)
        user_metadata = _user_metadata(users, user_map) if users is not None else None
        return cls(interactions, user_map, item_map, metadata, name, user_metadata)


def _user_metadata(users: pd.DataFrame, user_map: IdMap) -> UserMetadata:
    """The attribute columns of ``users`` (``user_id`` + attributes) aligned with ``user_map``'s internal ids."""
    positions = pd.Index(users["user_id"].astype(str)).get_indexer(pd.Index(user_map.external_ids))
    known = positions >= 0
    attributes: dict[str, np.ndarray] = {}
    for name in users.columns:
        if name == "user_id":
            continue
        column = users[name]
        if pd.api.types.is_numeric_dtype(column.dtype):
            values = np.full(user_map.size, np.nan)
            values[known] = column.to_numpy(dtype=np.float64, na_value=np.nan)[positions[known]]
        else:
            text = column.astype(object).where(column.notna(), None).to_numpy(dtype=object)
            values = np.full(user_map.size, None, dtype=object)
            values[known] = [None if v is None else str(v) for v in text[positions[known]]]
        attributes[str(name)] = values
    return UserMetadata(attributes)


def _encode_event_types(column: pd.Series) -> tuple[tuple[str, ...], np.ndarray]:
    codes, names = pd.factorize(column.astype(str), sort=True)
    if len(names) == 0:
        return (DEFAULT_EVENT_TYPE,), codes.astype(np.int16)
    return tuple(str(n) for n in names), codes.astype(np.int16)
