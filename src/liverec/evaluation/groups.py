"""Fairness and popularity bias, measured by group: who gets exposure, and who gets accuracy.

Item side (the top-``k`` lists of the evaluated users, ``k`` = 10 by default):

* **popularity deciles**: the catalogue sorted by training interactions, most first (ties: lower item id
  first), cut into 10 groups of equal size (decile 1 = the 10 % most popular items; sizes differ by at most
  one). For each: its share of the training interactions and its share of the recommended slots. An even
  engine would expose each decile about as much as it is interacted with; a popularity-amplifying one gives
  decile 1 more than its interaction share.
* **categories** (genres): exposure share ``sum over slots of p(g | i)`` over all slots, against the
  interaction share ``sum_i n_i p(g | i) / sum_i n_i``, where ``p(g | i) = 1 / |genres(i)|`` for each of the
  item's genres (an item's unit of mass split evenly; items without a genre are left out of both).
* Gini of exposure, long-tail share and coverage (:func:`~liverec.evaluation.metrics.beyond_accuracy_metrics`).
* **calibration** (Steck, RecSys 2018): per user, ``KL(p(g|u) || q̃(g|u)) = sum_g p(g|u) log(p(g|u) / q̃(g|u))``
  (natural log) where ``p(g|u) = sum_{i in H_u} p(g|i) / Z`` is the category mix of the history ``H_u``
  (every history event counts once), ``q(g|u)`` the same over the user's top-``k`` list (every slot once, no
  rank weighting), and ``q̃ = (1 - α) q + α p`` with ``α = 0.01``, which keeps it finite (at most
  ``log(1/α)`` = 4.61). 0 is a list whose genre mix is the history's. Averaged over the users whose history has
  at least one categorised item; reported with its standard error.

User side: a per-user accuracy metric (NDCG@10 by default) by group, each group with ``n``, mean and the
standard error of the mean (sample standard deviation / sqrt(n)), and the **largest gap**: the highest minus
the lowest group mean among the groups with at least ``min_group_size`` users (10 by default; smaller groups
are listed but too noisy to rank), with its standard error ``sqrt(se_high² + se_low²)`` (independent groups).
Groups:

* **activity**: quintiles of the history length (the events the model ranks from), equal-sized groups in
  increasing order (ties by user row), Q1 the least active.
* every user attribute the data set has (:class:`~liverec.data.interactions.UserMetadata`): text attributes
  by value (ml-100k: gender, occupation); ``age`` by band, the bands of MovieLens 1M (:data:`AGE_BANDS`:
  under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+). Users without a value are left out of that attribute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from liverec.data.interactions import Histories, UserMetadata
from liverec.evaluation.metrics import (
    CALIBRATION_ALPHA,
    beyond_accuracy_metrics,
    calibration_kl,
    category_distributions,
    category_weights,
)

__all__ = [
    "AGE_BANDS",
    "age_bands",
    "category_exposure",
    "equal_groups",
    "group_report",
    "group_statistics",
    "largest_gap",
    "list_calibration",
    "plot_exposure",
    "popularity_deciles",
    "user_groups",
]

#: Age bands (lower bound inclusive, label), the groups MovieLens 1M codes ages in.
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (0, "under 18"),
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-49"),
    (50, "50-55"),
    (56, "56+"),
)


def equal_groups(order_key: np.ndarray, n_groups: int) -> np.ndarray:
    """Group ``0..n_groups-1`` of each entry: entries sorted by ``order_key`` ascending (ties: lower position
    first) and cut into ``n_groups`` runs whose sizes differ by at most one (entry of rank r: ``r * n_groups // n``)."""
    if n_groups < 1:
        raise ValueError(f"n_groups: expected a positive integer, got {n_groups}")
    order = np.argsort(np.asarray(order_key), kind="stable")
    groups = np.empty(len(order), dtype=np.int64)
    groups[order] = np.arange(len(order)) * n_groups // max(len(order), 1)
    return groups


def popularity_deciles(popularity: np.ndarray, n_groups: int = 10) -> np.ndarray:
    """``[n_items]`` decile index 0..9 of each item, 0 = the most popular tenth (see the module docstring)."""
    return equal_groups(-np.asarray(popularity, dtype=np.float64), n_groups)


def _slot_items(ranked: np.ndarray, k: int) -> np.ndarray:
    top = np.asarray(ranked)[:, :k]
    return top[top >= 0]


def decile_exposure(ranked: np.ndarray, popularity: np.ndarray, k: int = 10) -> list[dict[str, Any]]:
    """Per popularity decile: ``decile`` (1 = most popular), ``items``, ``interaction_share``, ``exposure_share``."""
    popularity = np.asarray(popularity, dtype=np.float64)
    deciles = popularity_deciles(popularity)
    slots = _slot_items(ranked, k)
    exposure = np.bincount(deciles[slots], minlength=10).astype(np.float64)
    interactions = np.bincount(deciles, weights=popularity, minlength=10)
    sizes = np.bincount(deciles, minlength=10)
    exposure_share = exposure / max(exposure.sum(), 1.0)
    interaction_share = interactions / max(interactions.sum(), 1e-300)
    return [
        {
            "decile": decile + 1,
            "items": int(sizes[decile]),
            "interaction_share": float(interaction_share[decile]),
            "exposure_share": float(exposure_share[decile]),
        }
        for decile in range(10)
    ]


def category_exposure(
    ranked: np.ndarray, popularity: np.ndarray, categories: sp.spmatrix, names: Sequence[str], k: int = 10
) -> list[dict[str, Any]]:
    """Per category: ``category``, ``interaction_share`` and ``exposure_share`` (see the module docstring)."""
    weights = category_weights(categories)
    slots = _slot_items(ranked, k)
    exposure = np.asarray(weights[slots].sum(axis=0)).ravel()
    interactions = np.asarray(weights.T @ np.asarray(popularity, dtype=np.float64)).ravel()
    exposure_share = exposure / exposure.sum() if exposure.sum() > 0 else exposure
    interaction_share = interactions / interactions.sum() if interactions.sum() > 0 else interactions
    return [
        {"category": str(name), "interaction_share": float(share), "exposure_share": float(shown)}
        for name, share, shown in zip(names, interaction_share, exposure_share, strict=True)
    ]


def list_calibration(
    ranked: np.ndarray, history: Histories, categories: sp.spmatrix, k: int = 10, alpha: float = CALIBRATION_ALPHA
) -> np.ndarray:
    """Steck's KL per row of ``ranked`` (row r: the user of ``history`` row r); NaN where the history has no
    categorised item (nothing to calibrate to)."""
    weights = category_weights(categories)
    n_items = weights.shape[0]
    top = np.asarray(ranked)[:, :k]
    rows, cols = np.nonzero(top >= 0)
    lists = sp.csr_matrix((np.ones(len(rows)), (rows, top[rows, cols])), shape=(len(top), n_items))
    known = history.items < n_items
    history_rows = np.repeat(np.arange(len(history)), history.lengths())[known]
    histories = sp.csr_matrix(
        (np.ones(len(history_rows)), (history_rows, history.items[known])), shape=(len(history), n_items)
    )
    p = category_distributions(histories, weights)
    q = category_distributions(lists, weights)
    values = calibration_kl(p, q, alpha)
    return np.where(p.sum(axis=1) > 0, values, np.nan)


def _mean_and_se(values: np.ndarray) -> tuple[float, float | None]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    se = float(values.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return mean, se


def group_statistics(
    values: np.ndarray, labels: np.ndarray, order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``n``, ``mean`` and ``se`` (None below 2 users) of ``values`` per distinct label (None: left out),
    in ``order`` when given (labels absent from the data are skipped), else sorted."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    present = {label for label in labels.tolist() if label is not None}
    names = [name for name in order if name in present] if order is not None else sorted(present)
    out = []
    for name in names:
        chosen = values[labels == name]
        mean, se = _mean_and_se(chosen)
        out.append({"group": name, "n": len(chosen), "mean": mean, "se": se})
    return out


def largest_gap(groups: Sequence[Mapping[str, Any]], min_group_size: int = 10) -> dict[str, Any] | None:
    """Highest minus lowest group mean among groups with ``n >= min_group_size`` (and a standard error), with
    ``se = sqrt(se_high² + se_low²)``; None when fewer than two groups qualify."""
    eligible = [g for g in groups if g["n"] >= min_group_size and g["se"] is not None]
    if len(eligible) < 2:
        return None
    high = max(eligible, key=lambda g: g["mean"])
    low = min(eligible, key=lambda g: g["mean"])
    gap = high["mean"] - low["mean"]
    se = math.sqrt(high["se"] ** 2 + low["se"] ** 2)
    return {
        "high": high["group"],
        "low": low["group"],
        "gap": gap,
        "se": se,
        "relative": gap / high["mean"] if high["mean"] > 0 else None,
        "min_group_size": min_group_size,
    }


def age_bands(ages: np.ndarray) -> np.ndarray:
    """The :data:`AGE_BANDS` label of each age (object array; None where the age is NaN)."""
    ages = np.asarray(ages, dtype=np.float64)
    bounds = np.array([low for low, _label in AGE_BANDS], dtype=np.float64)
    labels = np.array([label for _low, label in AGE_BANDS], dtype=object)
    index = np.clip(np.searchsorted(bounds, np.nan_to_num(ages, nan=0.0), side="right") - 1, 0, len(labels) - 1)
    bands: np.ndarray = labels[index]
    bands[np.isnan(ages)] = None
    return bands


def user_groups(users: UserMetadata, user_ids: np.ndarray) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    """Each attribute's label per user of ``user_ids`` (internal ids), and its display order (None: sorted).

    ``age`` becomes its band (:func:`age_bands`); any other numeric attribute is left out (no bands known).
    """
    out: dict[str, tuple[np.ndarray, list[str] | None]] = {}
    for name, values in users.attributes.items():
        chosen = values[np.asarray(user_ids, dtype=np.int64)]
        if name == "age":
            out["age"] = (age_bands(chosen), [label for _low, label in AGE_BANDS])
        elif chosen.dtype == object:
            out[name] = (chosen, None)
    return out


def _user_side(
    values: np.ndarray,
    history: Histories,
    users: UserMetadata | None,
    min_group_size: int,
) -> dict[str, Any]:
    lengths = history.lengths()
    quintile = equal_groups(lengths, 5)
    names = np.array([f"Q{q + 1}" for q in range(5)], dtype=object)
    activity = group_statistics(values, names[quintile], order=list(names))
    for group in activity:
        chosen = lengths[names[quintile] == group["group"]]
        group["min_events"], group["max_events"] = int(chosen.min()), int(chosen.max())
    side: dict[str, Any] = {"activity": {"groups": activity, "gap": largest_gap(activity, min_group_size)}}
    if users is not None:
        for name, (labels, order) in user_groups(users, history.users).items():
            stats = group_statistics(values, labels, order)
            side[name] = {"groups": stats, "gap": largest_gap(stats, min_group_size)}
    return side


def group_report(
    ranked: np.ndarray,
    user_values: np.ndarray,
    history: Histories,
    popularity: np.ndarray,
    n_train_users: int,
    categories: sp.spmatrix | None = None,
    category_names: Sequence[str] | None = None,
    users: UserMetadata | None = None,
    k: int = 10,
    metric: str = "ndcg@10",
    min_group_size: int = 10,
) -> dict[str, Any]:
    """The ``groups`` block of ``liverec evaluate --groups``: item side and user side (module docstring).

    ``ranked`` ``[n_users, >=k]`` top lists (-1 padded) of the users of ``history`` (same rows);
    ``user_values`` ``[n_users]`` the per-user accuracy (``metric``); ``popularity`` ``[n_items]`` training
    interactions per item; ``categories`` ``[n_items, n_categories]`` binary with ``category_names``;
    ``users`` the data set's user attributes (indexed by internal user id).
    """
    if len(ranked) != len(history) or len(user_values) != len(history):
        raise ValueError(
            f"ranked, user_values and history: expected one row per user, got {len(ranked)}, "
            f"{len(user_values)} and {len(history)}"
        )
    beyond = beyond_accuracy_metrics(ranked, popularity, n_train_users, k)
    items: dict[str, Any] = {
        "k": k,
        f"gini@{k}": beyond[f"gini@{k}"],
        f"long_tail@{k}": beyond[f"long_tail@{k}"],
        f"coverage@{k}": beyond[f"coverage@{k}"],
        "popularity_deciles": decile_exposure(ranked, popularity, k),
    }
    if categories is not None and category_names is not None:
        kl = list_calibration(ranked, history, categories, k)
        kl = kl[~np.isnan(kl)]
        mean, se = _mean_and_se(kl)
        items[f"calibration_kl@{k}"] = {"mean": mean, "se": se, "users": len(kl), "alpha": CALIBRATION_ALPHA}
        items["categories"] = category_exposure(ranked, popularity, categories, category_names, k)
    return {
        "items": items,
        "users": {
            "metric": metric,
            **_user_side(np.asarray(user_values, dtype=np.float64), history, users, min_group_size),
        },
    }


def format_groups(groups: Mapping[str, Any]) -> list[str]:
    """The ``groups`` block as readable lines (tables) for the text output of ``liverec evaluate``."""
    items = groups["items"]
    k = items["k"]
    lines = ["", f"item side (top-{k} lists)"]
    lines.append(f"  gini@{k} {items[f'gini@{k}']:.4f}   long_tail@{k} {items[f'long_tail@{k}']:.4f}")
    if f"calibration_kl@{k}" in items:
        kl = items[f"calibration_kl@{k}"]
        lines[-1] += f"   calibration_kl@{k} {kl['mean']:.4f} ± {kl['se'] or 0:.4f} ({kl['users']} users)"
    lines += ["", f"  {'popularity decile':<20}{'items':>7}{'interactions':>14}{'exposure':>10}{'ratio':>8}"]
    for row in items["popularity_deciles"]:
        ratio = row["exposure_share"] / row["interaction_share"] if row["interaction_share"] > 0 else math.inf
        lines.append(
            f"  {row['decile']:<20}{row['items']:>7}{row['interaction_share']:>14.4f}{row['exposure_share']:>10.4f}"
            f"{ratio:>8.2f}"
        )
    if "categories" in items:
        lines += ["", f"  {'category':<20}{'interactions':>14}{'exposure':>10}"]
        lines += [
            f"  {row['category']:<20}{row['interaction_share']:>14.4f}{row['exposure_share']:>10.4f}"
            for row in items["categories"]
        ]
    users = groups["users"]
    lines += ["", f"user side ({users['metric']} by group; gap = highest - lowest mean, groups of >= 10 users)"]
    for name, block in users.items():
        if name == "metric":
            continue
        lines.append(f"  {name}")
        for row in block["groups"]:
            se = f"{row['se']:.4f}" if row["se"] is not None else "-"
            extra = f"  ({row['min_events']}-{row['max_events']} events)" if "min_events" in row else ""
            lines.append(f"    {row['group']:<18}{row['n']:>6}  {row['mean']:.4f} ± {se}{extra}")
        gap = block["gap"]
        if gap is not None:
            lines.append(f"    largest gap {gap['high']} - {gap['low']}: {gap['gap']:.4f} ± {gap['se']:.4f}")
    return lines


def plot_exposure(groups: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Bars of exposure share against interaction share per popularity decile into a PNG (needs matplotlib)."""
    from matplotlib.figure import Figure  # the Agg canvas; no pyplot state, no display needed

    rows = groups["items"]["popularity_deciles"]
    x = np.arange(1, len(rows) + 1)
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    axis = figure.subplots()
    axis.bar(x - 0.2, [row["interaction_share"] for row in rows], width=0.4, label="share of training interactions")
    axis.bar(x + 0.2, [row["exposure_share"] for row in rows], width=0.4, label="share of recommended slots")
    axis.set_xticks(x)
    axis.set_xlabel("popularity decile (1 = the 10 % most interacted-with items)")
    axis.set_ylabel("share")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    axis.set_title(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
