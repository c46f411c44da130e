"""One query's allowed items, kept as a mask shared by many queries less a few ids of the query's own.

A recommendation is filtered by the catalogue's available items within the request's categories (the same for
every request that names the same categories, until the catalogue changes) and by the user's seen items (a few
dozen ids). Built as one dense ``[n_items]`` mask per request, the filter cost three passes over the catalogue a
query — the copy, its count and its packing into the graph search's bitmap — about a tenth of a serving thread's
work at a million items (docs/results.md, "Session 32"). :class:`AllowedBase` holds the shared mask with its
count and packed bits, computed once; :class:`AllowedItems` is one query's filter: a base less ``removed`` ids,
whose count, bitmap and membership tests cost work in proportion to those ids, not to the catalogue. Paths that
need the dense mask (exact scans, policies, re-ranking) take :attr:`AllowedItems.mask`, made once when first
asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np


class AllowedBase:
    """A boolean ``[n_items]`` mask shared by the queries that use it, with its count and its bits packed for a
    FAISS bitmap selector (little bit order), each computed once. The base keeps a read-only copy of the mask it
    is given: a change to what is allowed makes a new base."""

    __slots__ = ("_bits", "_lock", "_prefixes", "count", "mask")

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.ndim != 1:
            raise TypeError(f"mask: expected a 1-D boolean array, got {mask.dtype} with shape {mask.shape}")
        mask = mask.copy()
        mask.flags.writeable = False
        self.mask = mask
        self.count = int(np.count_nonzero(mask))
        self._bits: np.ndarray | None = None
        self._prefixes: dict[int, AllowedBase] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.mask)

    @property
    def bits(self) -> np.ndarray:
        """``[ceil(n_items / 8)]`` uint8: item ``i`` is bit ``i % 8`` of byte ``i // 8`` (read-only)."""
        if self._bits is None:
            bits = np.packbits(self.mask, bitorder="little")
            bits.flags.writeable = False
            self._bits = bits
        return self._bits

    def prefix(self, n_items: int) -> AllowedBase:
        """The base over items ``0 .. n_items - 1`` (a model that knows fewer items than the catalogue)."""
        if n_items >= len(self.mask):
            return self
        with self._lock:
            prefix = self._prefixes.get(n_items)
            if prefix is None:
                prefix = self._prefixes[n_items] = AllowedBase(self.mask[:n_items])
            return prefix


class AllowedItems:
    """One query's allowed items: those of ``base`` less ``removed`` (item ids; ids outside ``base`` or already
    not allowed there are ignored).

    :attr:`count`, :meth:`bits` and :meth:`contains` cost work in proportion to the removed ids; :attr:`mask`, the
    dense ``[n_items]`` form, is made the first time it is asked for and is read-only."""

    __slots__ = ("_mask", "base", "removed")

    def __init__(self, base: AllowedBase, removed: Iterable[int] | np.ndarray = ()) -> None:
        ids = np.unique(np.asarray(removed, dtype=np.int64).reshape(-1))  # sorted, distinct
        ids = ids[(ids >= 0) & (ids < len(base))]
        self.base = base
        self.removed = ids[base.mask[ids]]  # only those the base allows change anything
        self._mask: np.ndarray | None = None

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> AllowedItems:
        """A dense mask as a filter of its own (its base is used by this query alone)."""
        return cls(AllowedBase(np.asarray(mask, dtype=bool)))

    def __len__(self) -> int:
        return len(self.base)

    @property
    def count(self) -> int:
        """How many items are allowed."""
        return self.base.count - len(self.removed)

    @property
    def mask(self) -> np.ndarray:
        """The dense ``[n_items]`` boolean mask (read-only)."""
        if self._mask is None:
            if len(self.removed) == 0:
                self._mask = self.base.mask
            else:
                mask = self.base.mask.copy()
                mask[self.removed] = False
                mask.flags.writeable = False
                self._mask = mask
        return self._mask

    def bits(self) -> np.ndarray:
        """The mask packed as :attr:`AllowedBase.bits` packs it: the base's bytes with the removed ids' bits cleared
        (a copy of an eighth of the catalogue, not a pass over it). The caller owns the array."""
        bits = self.base.bits.copy()
        if len(self.removed):
            np.bitwise_and.at(bits, self.removed >> 3, ~np.left_shift(1, self.removed & 7).astype(np.uint8))
        return bits

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` (any shape, each in ``0 .. n_items - 1``) is allowed."""
        allowed = self.base.mask[ids]
        if len(self.removed):
            at = np.searchsorted(self.removed, ids).clip(max=len(self.removed) - 1)
            allowed &= self.removed[at] != ids
        return allowed

    def prefix(self, n_items: int) -> AllowedItems:
        """The filter over items ``0 .. n_items - 1``."""
        if n_items >= len(self.base):
            return self
        out = AllowedItems.__new__(AllowedItems)
        out.base, out.removed, out._mask = self.base.prefix(n_items), self.removed[self.removed < n_items], None
        return out
