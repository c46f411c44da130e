"""Train/validation/test splits for offline evaluation.

Every split returns :class:`RankingSplit` objects: the events a model may train on, and for each
evaluated user the history it is given (what it may condition on and what is excluded from its
ranking) plus the held-out target items. Nothing that happens after a target leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverec.data.interactions import Dataset, Histories, Interactions
from liverec.errors import UsageError

#: The offline protocols by name: leave-one-out, a global temporal cut, a per-user temporal cut.
PROTOCOLS = ("loo", "temporal", "user-temporal")


@dataclass(frozen=True)
class RankingSplit:
    """One evaluation step: train on ``train``; for row r, rank items for ``history`` row r, hit ``targets`` row r.

    ``targets`` is a :class:`Histories` with the same rows (users) as ``history``; each row holds the
    held-out item ids (one for leave-one-out, several for temporal splits).
    """

    train: Interactions
    history: Histories
    targets: Histories
    name: str
    info: dict[str, float | int | str]
    #: the held-out events themselves (with values), for rating-prediction metrics
    test_events: Interactions | None = None


def _positions_from_end(ordered: Interactions) -> np.ndarray:
    """For rows sorted by (user, time): 0 for each user's last event, 1 for the one before, ..."""
    counts = np.bincount(ordered.user_ids, minlength=ordered.n_users)
    ends = np.cumsum(counts)
    return ends[ordered.user_ids] - 1 - np.arange(len(ordered))


def leave_one_out(interactions: Interactions, min_events: int = 3) -> tuple[RankingSplit, RankingSplit]:
    """SASRec-style leave-one-out: each user's last event is the test target, the one before it validation.

    Users with fewer than ``min_events`` events stay entirely in training and are not evaluated.
    Returns ``(validation, test)``: both train on the same events (all but the last two of each
    evaluated user); the test history also contains the validation item, as in SASRec and RecBole.
    """
    ordered = interactions.sorted()
    from_end = _positions_from_end(ordered)
    counts = ordered.user_counts()
    evaluated = counts[ordered.user_ids] >= min_events
    test_rows = evaluated & (from_end == 0)
    valid_rows = evaluated & (from_end == 1)
    train = ordered.subset(~(test_rows | valid_rows))
    users = np.flatnonzero(counts >= min_events)
    history_valid = Histories.from_interactions(train, users)
    history_test = Histories.from_interactions(ordered.subset(~test_rows), users)
    # one target per evaluated user; rows of ordered are grouped by user in increasing id order
    valid_targets = Histories(users, np.arange(len(users) + 1), ordered.item_ids[valid_rows])
    test_targets = Histories(users, np.arange(len(users) + 1), ordered.item_ids[test_rows])
    info: dict[str, float | int | str] = {"evaluated_users": len(users), "train_events": len(train)}
    return (
        RankingSplit(train, history_valid, valid_targets, "loo-validation", info, ordered.subset(valid_rows)),
        RankingSplit(train, history_test, test_targets, "loo-test", info, ordered.subset(test_rows)),
    )


def _targets_after(train: Interactions, test: Interactions, repeat: bool) -> RankingSplit:
    """Targets: each test user's distinct test items (minus items already in their train history unless ``repeat``)."""
    train_csr = train.to_csr()
    test_csr = test.to_csr()
    if not repeat:
        test_csr = test_csr - test_csr.multiply(train_csr)
        test_csr.eliminate_zeros()
    has_train = np.diff(train_csr.indptr) > 0
    has_target = np.diff(test_csr.indptr) > 0
    users = np.flatnonzero(has_train & has_target)
    rows = test_csr[users]
    targets = Histories(users, rows.indptr, rows.indices)
    history = Histories.from_interactions(train, users)
    test_users = np.flatnonzero(np.diff(test.to_csr().indptr) > 0)
    seen_items = train.item_counts() > 0
    test_items = np.unique(test.item_ids)
    info: dict[str, float | int | str] = {
        "train_events": len(train),
        "test_events": len(test),
        "test_users": len(test_users),
        "test_users_unseen_in_train": int((~has_train[test_users]).sum()),
        "evaluated_users": len(users),
        "test_items": len(test_items),
        "test_items_unseen_in_train": int((~seen_items[test_items]).sum()),
        "target_events_on_unseen_items": int((~seen_items[test.item_ids]).sum()),
    }
    return RankingSplit(train, history, targets, "", info, test)


def temporal_split(
    interactions: Interactions,
    test_fraction: float = 0.2,
    cut_time: float | None = None,
    repeat: bool = False,
) -> RankingSplit:
    """Global temporal split: events before the cut train, events from the cut on are test targets.

    The cut is ``cut_time`` (Unix seconds) if given, else the time below which ``1 - test_fraction`` of
    the events fall. Evaluated users are those with events on both sides; their targets are the distinct
    test items not already in their training history (unless ``repeat``). ``info`` reports how many test
    users and items were never seen before the cut — those can only be hit by luck or metadata.
    Interactions with order but no time (``timed`` False) have no global clock to cut: a UsageError.
    """
    if not interactions.timed:
        raise UsageError(
            "temporal split: the data has each user's order but no time (a sequences file), so there is no "
            "global time to cut at; use leave-one-out (loo) or the per-user split (user-temporal)"
        )
    if cut_time is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
        order = np.argsort(interactions.timestamps, kind="stable")
        n_train = round(len(interactions) * (1.0 - test_fraction))
        in_train = np.zeros(len(interactions), dtype=bool)
        in_train[order[:n_train]] = True
        cut = float(interactions.timestamps[order[n_train]]) if n_train < len(interactions) else np.inf
    else:
        in_train = interactions.timestamps < cut_time
        cut = float(cut_time)
    split = _targets_after(interactions.subset(in_train), interactions.subset(~in_train), repeat)
    info = dict(split.info, cut_time=cut)
    return RankingSplit(split.train, split.history, split.targets, "temporal", info, split.test_events)


def user_temporal_split(interactions: Interactions, test_fraction: float = 0.2, repeat: bool = False) -> RankingSplit:
    """Per-user temporal split: the last ``test_fraction`` of each user's events (at least one) are test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
    ordered = interactions.sorted()
    from_end = _positions_from_end(ordered)
    counts = ordered.user_counts()[ordered.user_ids]
    n_test = np.maximum(1, np.floor(counts * test_fraction)).astype(np.int64)
    is_test = (from_end < n_test) & (counts >= 2)
    split = _targets_after(ordered.subset(~is_test), ordered.subset(is_test), repeat)
    return RankingSplit(split.train, split.history, split.targets, "user-temporal", split.info, split.test_events)


def with_held_out(train: Interactions, validation: RankingSplit) -> Interactions | None:
    """``train`` plus ``validation``'s held-out events: what a model selected on ``validation`` may refit on.

    None when the split does not carry its events (``test_events``).
    """
    if validation.test_events is None:
        return None
    return Interactions.concat([train, validation.test_events])


def hold_out_last(interactions: Interactions, min_events: int = 3) -> tuple[Interactions, tuple[Histories, Histories]]:
    """Carve a validation set out of training data: each user's last event (users with >= ``min_events``).

    Returns the remaining events and ``(history, targets)`` for the held-out users; models use it for
    early stopping when no validation split is given.
    """
    split = last_event_split(interactions, min_events)
    return split.train, (split.history, split.targets)


def last_event_split(interactions: Interactions, min_events: int = 3) -> RankingSplit:
    """:func:`hold_out_last` as a :class:`RankingSplit` that carries the held-out events (``test_events``)."""
    ordered = interactions.sorted()
    counts = ordered.user_counts()
    is_last = np.zeros(len(ordered), dtype=bool)
    users = np.flatnonzero(counts >= min_events)
    is_last[np.cumsum(counts)[users] - 1] = True
    train = ordered.subset(~is_last)
    targets = Histories(users, np.arange(len(users) + 1), ordered.item_ids[is_last])
    info: dict[str, float | int | str] = {"evaluated_users": len(users), "train_events": len(train)}
    history = Histories.from_interactions(train, users)
    return RankingSplit(train, history, targets, "last-event", info, ordered.subset(is_last))


def sample_validation(
    train: Interactions, validation: RankingSplit, n_users: int, seed: int
) -> tuple[Interactions, RankingSplit]:
    """Keep the validation of ``n_users`` users (a sample seeded by ``seed``); the other users' held-out
    events join ``train``.

    Early stopping needs a held-out item per user only to compare epochs; on a dataset with many users a
    sample of them compares epochs as well, and the rest can train on their newest events from the start,
    so no second fit (a refit on training + validation events) is needed to learn them. Returns the
    enlarged training events and the sampled split (rows in their original order). ``validation`` must
    carry its events (``test_events``); with no more than ``n_users`` rows it is returned as it is.
    """
    if validation.test_events is None:
        raise ValueError("validation: expected a split that carries its held-out events (test_events)")
    if n_users < 1:
        raise ValueError(f"n_users: expected a positive integer, got {n_users!r}")
    if len(validation.history) <= n_users:
        return train, validation
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(validation.history), size=n_users, replace=False))
    kept_users = validation.history.users[rows]
    events = validation.test_events
    released = ~np.isin(events.user_ids, kept_users)
    enlarged = Interactions.concat([train, events.subset(released)])
    info = dict(validation.info, evaluated_users=n_users, sampled_from=len(validation.history))
    history, targets = validation.history.select(rows), validation.targets.select(rows)
    return enlarged, RankingSplit(enlarged, history, targets, validation.name, info, events.subset(~released))


def make_split(dataset: Dataset, protocol: str, test_fraction: float) -> tuple[RankingSplit, RankingSplit | None]:
    """The test split of ``protocol`` (one of :data:`PROTOCOLS`) and, for leave-one-out, the validation split."""
    if protocol == "loo":
        validation, test = leave_one_out(dataset.interactions)
        return test, validation
    if protocol == "temporal":
        return temporal_split(dataset.interactions, test_fraction=test_fraction), None
    if protocol == "user-temporal":
        return user_temporal_split(dataset.interactions, test_fraction=test_fraction), None
    raise UsageError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
