"""How SASRec's training data is cut: windows of each history, same-timestamp runs shuffled, length-bucketed
batches, and the padded network rows of a batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from liverec.data.interactions import Histories, concat_ranges
from liverec.models.sasrec.config import SASRecConfig


def padded_sequences(histories: Histories, length: int) -> np.ndarray:
    """``[len(histories), length]`` of each row's last ``length`` items as network rows (item + 1), left-padded."""
    recent = histories.last(length)
    lengths = recent.lengths()
    out = np.zeros((len(recent), length), dtype=np.int64)
    rows = np.repeat(np.arange(len(recent)), lengths)
    columns = (
        np.arange(len(recent.items)) - np.repeat(recent.indptr[:-1], lengths) + np.repeat(length - lengths, lengths)
    )
    out[rows, columns] = recent.items + 1
    return out


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """One training epoch's data: each user's window, and the global batches in the order they are visited.

    Every process of a distributed fit draws the same plan from the same generator, then trains its
    share of each batch (see :class:`liverec.models.sasrec.training.Training`).
    """

    #: each row's window of at most ``max_len + 1`` items (its runs shuffled, when asked)
    windows: Histories
    #: ``[len(windows)]`` window lengths
    lengths: np.ndarray
    #: per item of ``windows``: 1 if close enough in time to the item before to share a loss window
    #: (``window_gap_s``), else 0; None when the window is not limited by time
    ties: Histories | None
    #: per item of ``windows``: 1 if it is to be learned as a target, 0 if it is context only; None: all
    learn: Histories | None
    #: the rows of ``windows`` in each batch, in visiting order (batches with nothing to learn left out)
    batches: list[np.ndarray]

    def tensors(
        self, rows: np.ndarray, to_tensor: Callable[[np.ndarray], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The batch of ``rows``, padded to its longest window: items ``[batch, width]`` (network rows),
        whether each item is tied in time to the one before, and whether each target (column 1 on) is
        to be learned (each None when the plan has no such flags)."""
        width = int(self.lengths[rows].max())
        batch = to_tensor(padded_sequences(self.windows.select(rows), width))
        # padded like the items, flags come back + 1: 2 = set, 1 = not, 0 = padding
        tied = None if self.ties is None else to_tensor(padded_sequences(self.ties.select(rows), width)) == 2
        learned = None
        if self.learn is not None:
            learned = to_tensor(padded_sequences(self.learn.select(rows), width))[:, 1:] == 2
        return batch, tied, learned


def learned_tail(learned: torch.Tensor | None, inputs: torch.Tensor) -> int | None:
    """How many trailing columns of a batch's ``inputs`` ``[batch, width]`` hold every position to learn (``learned``:
    ``[batch, width]``, or None: every position), so that the network's final block need compute those alone
    (``SASRecNetwork.forward``'s ``tail``); None when that is every column. An update learns a user's new events,
    which are the last items of the user's window: a few columns of a window of up to ``max_len``."""
    if learned is None:
        return None
    columns = (learned & (inputs > 0)).any(dim=0).nonzero()
    width = inputs.shape[1]
    tail = width - int(columns[0]) if len(columns) else width
    return tail if tail < width else None


def plan_epoch(
    histories: Histories,
    config: SASRecConfig,
    rng: np.random.Generator,
    learn: Histories | None = None,
    shuffle: bool = False,
    min_positions: int | None = None,
) -> EpochPlan:
    """Cut one epoch over every row of ``histories`` into batches of users of similar length (little padding).

    ``learn``: per item of ``histories``, 1 if it is to be learned as a target, 0 if it is context only (a
    batch with no target to learn is left out). ``shuffle``: reorder each run of items logged at most
    ``shuffle_gap_s`` apart, at random, for this epoch (when that is set; full training only: see
    :func:`_shuffled_runs`). ``min_positions``: a batch takes more than ``batch_size`` windows while its windows
    hold fewer than this many positions (None: ``batch_size`` windows each). Every random number of the epoch's
    data is drawn here, from ``rng``.
    """
    windows, take = _windows(histories, config.max_len + 1, rng if config.crop == "random" else None)
    if shuffle and config.shuffle_gap_s is not None and windows.timestamps is not None:
        take = take[_shuffled_runs(windows, config.shuffle_gap_s, rng)]
        windows = Histories(windows.users, windows.indptr, histories.items[take], windows.timestamps)
    lengths = windows.lengths()
    ties = None  # which items are close enough in time to the one before to share a window (None: all)
    untimed_window = windows.timestamps is None and config.untimed_window
    if config.window > 1 and config.window_gap_s is not None and not untimed_window:
        ties = _tie_flags(windows, config.window_gap_s)  # without timestamps: no ties, the next item only
    targets_to_learn = None  # per window: how many of its targets (items after the first) are learned
    learned_span = np.zeros(len(lengths), dtype=np.int64)  # per window: items from its first learned target on
    if learn is not None:
        learn = Histories(windows.users, windows.indptr, learn.items[take])
        flags = learn.items.copy()
        flags[windows.indptr[:-1]] = 0  # a window's first item is never a target
        targets_to_learn = np.add.reduceat(flags, windows.indptr[:-1]) if len(flags) else flags
        if len(flags):
            offsets = np.arange(len(flags)) - np.repeat(windows.indptr[:-1], lengths)
            first = np.minimum.reduceat(np.where(flags > 0, offsets, lengths.max()), windows.indptr[:-1])
            learned_span = np.maximum(lengths - first, 0)
    # sort by length (and, in an update, by the span its learned targets take: windows whose new events are their
    # last few items batch together, so the final block computes few columns, learned_tail), with random tie
    # order; cut into batches, visit batches in random order
    by_length = np.lexsort((rng.random(len(lengths)), learned_span, lengths))
    batches = _cut(by_length, lengths - 1, config.batch_size, min_positions)
    visited = [batches[index] for index in rng.permutation(len(batches))]
    if targets_to_learn is not None:  # decided on the global batch, before sharing it out across processes
        visited = [rows for rows in visited if targets_to_learn[rows].any()]
    return EpochPlan(windows, lengths, ties, learn, visited)


def _cut(order: np.ndarray, positions: np.ndarray, size: int, min_positions: int | None) -> list[np.ndarray]:
    """``order`` cut into consecutive batches of ``size`` rows, a batch taking more rows while its rows hold fewer
    than ``min_positions`` of ``positions`` (per row; None: ``size`` rows each)."""
    if min_positions is None:
        return [order[i : i + size] for i in range(0, len(order), size)]
    total = np.cumsum(positions[order])  # positions of the first j + 1 rows
    batches, start = [], 0
    while start < len(order):
        before = int(total[start - 1]) if start else 0
        enough = int(np.searchsorted(total, before + min_positions)) + 1  # rows from start holding min_positions
        stop = min(len(order), max(start + size, enough))
        batches.append(order[start:stop])
        start = stop
    return batches


def trainable(histories: Histories) -> Histories:
    """Rows with at least two items (one input, one target)."""
    return histories.select(np.flatnonzero(histories.lengths() >= 2))


def _windows(histories: Histories, length: int, rng: np.random.Generator | None) -> tuple[Histories, np.ndarray]:
    """Each row cut to a window of at most ``length`` consecutive items: the last one, or a random one;
    and the indices of the windows' items in ``histories.items``."""
    lengths = histories.lengths()
    size = np.minimum(lengths, length)
    end = histories.indptr[1:].copy()
    if rng is not None:
        slack = lengths - size  # how far back a window may start
        end -= (rng.random(len(lengths)) * (slack + 1)).astype(np.int64)
    start = end - size
    take = concat_ranges(start, size)
    timestamps = None if histories.timestamps is None else histories.timestamps[take]
    windows = Histories(histories.users, np.concatenate([[0], np.cumsum(size)]), histories.items[take], timestamps)
    return windows, take


def _shuffled_runs(histories: Histories, gap_s: float, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``histories.items`` that shuffles each run of consecutive items of a row that
    came at most ``gap_s`` seconds after the one before (0: the same timestamp), and moves nothing across
    runs or rows. The timestamps stay where they are, so the runs (and the loss windows) keep their place.

    A log's order within such a run is often arbitrary (in ml-100k many consecutive ratings share a
    timestamp), and a model trained on one fixed order learns it as if it meant something; a fresh
    order each epoch is an augmentation that says it does not. Only full training shuffles: an online
    update's history from the state has no real times (see ``UNKNOWN_PAST``) and would be one run.
    """
    n = len(histories.items)
    starts = _tie_flags(histories, gap_s).items == 0  # where a run begins; without times, every item
    starts[histories.indptr[:-1][histories.lengths() > 0]] = True  # and each row's first item
    if starts.all():  # nothing to shuffle: no random numbers drawn, so training is as without shuffling
        return np.arange(n)
    return np.lexsort((rng.random(n), np.cumsum(starts)))


def _tie_flags(histories: Histories, gap_s: float = 0.0) -> Histories:
    """The same rows with, for items, 1 where an item came at most ``gap_s`` seconds after the item
    before it (0: at the same timestamp), else 0.

    Without timestamps every flag is 0: the order is taken as exact. A row's first flag is never read.
    """
    flags = np.zeros(len(histories.items), dtype=np.int64)
    if histories.timestamps is not None and len(flags) > 1:
        flags[1:] = np.diff(histories.timestamps) <= gap_s
    return Histories(histories.users, histories.indptr, flags)
