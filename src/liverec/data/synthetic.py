"""Seeded synthetic event streams with a known right answer.

Spotlight's idea (``spotlight/datasets/synthetic.py``): plant a structure, generate data from it, and
hand the structure back so a test can assert that a model found it. :func:`generate` plants four
things a recommender for live traffic should learn, each of which can be switched off:

* **taste clusters** — every item belongs to one cluster; a user likes ``clusters_per_user`` of them;
* **sequences** — with probability ``p_sequential`` the next item is one of ``n_successors`` planted
  successors of the user's previous item (mostly in the same cluster), otherwise a "fresh" draw;
* **drift** — a user's clusters move from a start set to a disjoint end set over the span;
* **time** — item popularity oscillates (random period and phase per item) and a fraction of the
  catalogue is released mid-stream, never seen before its release time.

Generative story, per event (timestamps in seconds from the start of the stream, ``0 <= t < T``):

1. the user is drawn by a Zipf activity distribution (every user gets at least one event), the
   user's timestamps are uniform over ``[0, T)``;
2. if the user has a previous item ``j``, with probability ``p_sequential`` the item is
   ``successors[j, k]`` for ``k`` uniform in ``0..n_successors-1``;
3. otherwise a cluster ``c`` is drawn uniformly from the user's end set with probability ``t / T``
   (drift) or from the start set otherwise, and the item from cluster ``c`` with probability
   ``∝ base_popularity[i] * (1 + A sin(2π t / wave_period[i] + wave_phase[i])) * [release_time[i] <= t]``.

:meth:`SyntheticTruth.next_item_probabilities` returns exactly this distribution, so it is the
Bayes-optimal next-item predictor: the ceiling a model can approach, and a check of the generator.

Everything is vectorised numpy (no Python loop per event, user or item): roughly a few million events
a second on two cores (see ``benchmarks/bench_synthetic.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from liverec.data.interactions import Dataset, IdMap, Interactions, ItemMetadata

__all__ = ["EVENT_TYPE", "SyntheticConfig", "SyntheticTruth", "generate"]

SECONDS_PER_DAY = 86_400.0
#: The event type of every generated event.
EVENT_TYPE = "view"

# Rejection rounds for fresh draws before the remaining few fall back to exact inverse-CDF sampling.
_MAX_REJECTION_ROUNDS = 64
# Upper bound on the elements of one temporary [rows, columns] block (keeps memory flat at any scale).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator; :func:`generate` takes one of these (or keyword overrides).

    The catalogue (clusters, successors, releases, waves) depends only on the seed and the item-side
    fields, the users' tastes only on the seed and the user-side fields: changing ``n_events`` gives
    more or fewer events from the same planted structure.
    """

    n_users: int = 1000
    n_items: int = 500
    n_events: int = 50_000
    n_clusters: int = 10
    duration_days: float = 180.0
    #: Probability that an event follows the user's previous item through the planted successor map.
    p_sequential: float = 0.5
    #: Candidate successors per item (drawn among items released no later than it).
    n_successors: int = 3
    #: Probability that a planted successor is drawn from the item's own cluster.
    successor_same_cluster: float = 0.8
    #: Clusters a user likes at any one time (the start set and the end set have this size).
    clusters_per_user: int = 2
    #: Whether a user's taste moves from the start clusters to (disjoint where possible) end clusters.
    drift: bool = True
    #: Whether item popularity oscillates over time.
    popularity_waves: bool = True
    #: Relative amplitude ``A`` of the waves, in ``[0, 1)``: popularity varies between ``1 - A`` and ``1 + A``.
    wave_amplitude: float = 0.8
    #: Range of wave periods, as fractions of the span (uniform per item).
    wave_periods: tuple[float, float] = (0.1, 0.5)
    #: Fraction of items released mid-stream (release time uniform over the span); the rest exist at t=0.
    new_item_fraction: float = 0.2
    #: Where in the span the mid-stream releases fall, as fractions ``(low, high)`` of it: release times are
    #: uniform over ``[low * T, high * T)`` (the simulator releases them all in its live part, after the past).
    release_window: tuple[float, float] = (0.0, 1.0)
    #: Zipf exponent of user activity and of item popularity within a cluster (0 = uniform).
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("n_users", self.n_users, 1)
        _check_int("n_items", self.n_items, 1)
        _check_int("n_clusters", self.n_clusters, 1)
        _check_int("n_events", self.n_events, self.n_users, "n_users")
        _check_int("n_successors", self.n_successors, 1)
        _check_int("clusters_per_user", self.clusters_per_user, 1)
        _check_int("seed", self.seed, 0)
        if self.n_clusters > self.n_items:
            raise ValueError(f"n_clusters: expected at most n_items={self.n_items}, got {self.n_clusters}")
        if self.clusters_per_user > self.n_clusters:
            raise ValueError(
                f"clusters_per_user: expected at most n_clusters={self.n_clusters}, got {self.clusters_per_user}"
            )
        if not (math.isfinite(self.duration_days) and self.duration_days > 0):
            raise ValueError(f"duration_days: expected a positive number, got {self.duration_days!r}")
        for name in ("p_sequential", "successor_same_cluster"):
            _check_fraction(name, getattr(self, name), upper_open=False)
        _check_fraction("new_item_fraction", self.new_item_fraction, upper_open=True)
        _check_fraction("wave_amplitude", self.wave_amplitude, upper_open=True)
        if not (math.isfinite(self.zipf_exponent) and self.zipf_exponent >= 0):
            raise ValueError(f"zipf_exponent: expected a number >= 0, got {self.zipf_exponent!r}")
        low, high = self.wave_periods
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"wave_periods: expected (low, high) with 0 < low <= high, got {self.wave_periods!r}")
        low, high = self.release_window
        if not (0 <= low < high <= 1):
            raise ValueError(
                f"release_window: expected (low, high) with 0 <= low < high <= 1, got {self.release_window!r}"
            )

    @property
    def duration(self) -> float:
        """The span of the stream in seconds (timestamps lie in ``[0, duration)``)."""
        return self.duration_days * SECONDS_PER_DAY

    @property
    def n_new_items(self) -> int:
        """Items released mid-stream; every cluster keeps at least one item present from the start."""
        return min(round(self.new_item_fraction * self.n_items), self.n_items - self.n_clusters)


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The planted structure behind a generated :class:`Dataset`; indices are internal ids.

    User ``u`` is external id ``f"u{u}"`` and internal id ``u``; item ``i`` is ``f"i{i}"`` and internal
    id ``i``, so these arrays index the dataset's id spaces directly.
    """

    config: SyntheticConfig
    item_cluster: np.ndarray  # [n_items] int64 cluster of each item
    item_rank: np.ndarray  # [n_items] int64 popularity rank within its cluster (0 = most popular)
    base_popularity: np.ndarray  # [n_items] float64 probability within its cluster, all items released
    release_time: np.ndarray  # [n_items] float64 seconds; 0 for items present from the start
    wave_period: np.ndarray  # [n_items] float64 seconds
    wave_phase: np.ndarray  # [n_items] float64 radians
    successors: np.ndarray  # [n_items, n_successors] int64, each released no later than its item
    user_clusters_start: np.ndarray  # [n_users, clusters_per_user] int64, distinct per row
    user_clusters_end: np.ndarray  # [n_users, clusters_per_user] int64, == start when drift=False
    user_activity: np.ndarray  # [n_users] float64 share of the events beyond each user's first

    @property
    def n_users(self) -> int:
        return len(self.user_clusters_start)

    @property
    def n_items(self) -> int:
        return len(self.item_cluster)

    def taste_weight(self, times: np.ndarray) -> np.ndarray:
        """Weight of the end clusters in a user's taste at ``times`` ``[batch]`` -> ``[batch]`` (``t / T``)."""
        times = np.asarray(times, dtype=np.float64)
        if not self.config.drift:
            return np.zeros_like(times)
        return np.clip(times / self.config.duration, 0.0, 1.0)

    def popularity_wave(self, times: np.ndarray) -> np.ndarray:
        """Multiplicative popularity factor of every item at ``times`` ``[batch]`` -> ``[batch, n_items]``."""
        times = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        amplitude = self.config.wave_amplitude if self.config.popularity_waves else 0.0
        if amplitude == 0.0:
            return np.ones((len(times), self.n_items))
        return 1.0 + amplitude * np.sin(2.0 * np.pi * times / self.wave_period + self.wave_phase)

    def cluster_probabilities(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Probability of each cluster in a fresh draw: ``[batch]``, ``[batch]`` -> ``[batch, n_clusters]``."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        weight = self.taste_weight(np.asarray(times).reshape(-1))
        m = self.config.clusters_per_user
        probs = np.zeros((len(users), self.config.n_clusters))
        rows = np.arange(len(users))[:, None]
        np.add.at(probs, (rows, self.user_clusters_start[users]), ((1.0 - weight) / m)[:, None])
        np.add.at(probs, (rows, self.user_clusters_end[users]), (weight / m)[:, None])
        return probs

    def item_probabilities_in_cluster(self, times: np.ndarray) -> np.ndarray:
        """``P(item | its cluster, t)`` at ``times`` ``[batch]`` -> ``[batch, n_items]``; 0 before release.

        Each row sums to 1 over the items of every cluster.
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        weights = self.base_popularity * self.popularity_wave(times[:, 0]) * (self.release_time <= times)
        one_hot = sp.csr_array(
            (np.ones(self.n_items), (np.arange(self.n_items), self.item_cluster)),
            shape=(self.n_items, self.config.n_clusters),
        )
        totals = np.asarray(one_hot.T @ weights.T).T  # [batch, n_clusters]
        return weights / totals[:, self.item_cluster]

    def fresh_probabilities(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Distribution of a fresh (non-sequential) draw: ``[batch]``, ``[batch]`` -> ``[batch, n_items]``."""
        clusters = self.cluster_probabilities(users, times)
        return clusters[:, self.item_cluster] * self.item_probabilities_in_cluster(times)

    def successor_probabilities(self, previous_items: np.ndarray) -> np.ndarray:
        """Distribution of a sequential step: ``[batch]`` -> ``[batch, n_items]`` (zero rows where -1)."""
        previous_items = np.asarray(previous_items, dtype=np.int64).reshape(-1)
        probs = np.zeros((len(previous_items), self.n_items))
        rows = np.flatnonzero(previous_items >= 0)
        np.add.at(probs, (rows[:, None], self.successors[previous_items[rows]]), 1.0 / self.config.n_successors)
        return probs

    def next_item_probabilities_batch(
        self, users: np.ndarray, times: np.ndarray, previous_items: np.ndarray | None = None
    ) -> np.ndarray:
        """The generative next-item distribution for many events at once.

        ``users``, ``times`` and ``previous_items`` are ``[batch]`` (``-1`` or ``None``: no previous
        item, as for a user's first event); returns ``[batch, n_items]``, rows summing to 1.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if len(times) != len(users):
            raise ValueError(f"times: expected {len(users)} entries like users, got {len(times)}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"users: expected ids in [0, {self.n_users}), got {users.min()}..{users.max()}")
        fresh = self.fresh_probabilities(users, times)
        if previous_items is None:
            return fresh
        previous_items = np.asarray(previous_items, dtype=np.int64).reshape(-1)
        if len(previous_items) != len(users):
            raise ValueError(f"previous_items: expected {len(users)} entries like users, got {len(previous_items)}")
        if len(previous_items) and (previous_items.min() < -1 or previous_items.max() >= self.n_items):
            raise ValueError(
                f"previous_items: expected ids in [-1, {self.n_items}), got "
                f"{previous_items.min()}..{previous_items.max()}"
            )
        p_sequential = np.where(previous_items >= 0, self.config.p_sequential, 0.0)[:, None]
        return (1.0 - p_sequential) * fresh + p_sequential * self.successor_probabilities(previous_items)

    def next_item_probabilities(self, user: int, time: float, previous_item: int | None) -> np.ndarray:
        """The true distribution of ``user``'s next item at ``time`` after ``previous_item``: ``[n_items]``.

        ``previous_item=None`` is a user's first event (always a fresh draw).
        """
        previous = np.array([-1 if previous_item is None else previous_item])
        return self.next_item_probabilities_batch(np.array([user]), np.array([time]), previous)[0]


def generate(config: SyntheticConfig | None = None, **overrides: object) -> tuple[Dataset, SyntheticTruth]:
    """A seeded synthetic stream and the structure planted in it.

    ``generate(n_events=10_000, seed=3)`` and ``generate(SyntheticConfig(...), seed=3)`` both work:
    keyword overrides replace fields of ``config`` (default :class:`SyntheticConfig`).

    Returns a :class:`Dataset` whose rows are in chronological order (the stream as it arrived) with
    event type ``"view"`` and value 1.0, holding every user (each has at least one event) and the whole
    catalogue (items never interacted with included, with titles ``"Item 7"`` and genres
    ``("cluster3",)``), and the :class:`SyntheticTruth` behind it.
    """
    if config is None:
        config = SyntheticConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    catalogue_seed, users_seed, events_seed = np.random.SeedSequence(config.seed).spawn(3)
    truth = _plant(config, np.random.default_rng(catalogue_seed), np.random.default_rng(users_seed))
    user_ids, item_ids, timestamps = _sample_events(truth, np.random.default_rng(events_seed))
    interactions = Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        timestamps=timestamps,
        values=np.ones(config.n_events, dtype=np.float32),
        event_types=np.zeros(config.n_events, dtype=np.int16),
        n_users=config.n_users,
        n_items=config.n_items,
        event_type_names=(EVENT_TYPE,),
    )
    cluster_genres = np.empty(config.n_clusters, dtype=object)
    for cluster in range(config.n_clusters):  # one tuple per cluster, shared by its items
        cluster_genres[cluster] = (f"cluster{cluster}",)
    metadata = ItemMetadata(
        titles=_numbered("Item ", config.n_items), genres=cluster_genres[truth.item_cluster].tolist()
    )
    dataset = Dataset(
        interactions,
        IdMap(_numbered("u", config.n_users)),
        IdMap(_numbered("i", config.n_items)),
        metadata,
        name="synthetic",
    )
    return dataset, truth


# --- planting the structure ------------------------------------------------------------------------


def _plant(
    config: SyntheticConfig, catalogue_rng: np.random.Generator, users_rng: np.random.Generator
) -> SyntheticTruth:
    n_items, n_clusters, duration = config.n_items, config.n_clusters, config.duration

    # Which items are released mid-stream; every cluster gets at least one item present from the start.
    shuffled = catalogue_rng.permutation(n_items)
    n_new = config.n_new_items
    present, new = shuffled[: n_items - n_new], shuffled[n_items - n_new :]
    release_time = np.zeros(n_items)
    low, high = config.release_window
    release_time[new] = catalogue_rng.uniform(low * duration, high * duration, size=n_new)
    item_cluster = np.empty(n_items, dtype=np.int64)
    item_cluster[present[:n_clusters]] = np.arange(n_clusters)
    item_cluster[present[n_clusters:]] = catalogue_rng.integers(0, n_clusters, size=len(present) - n_clusters)
    item_cluster[new] = catalogue_rng.integers(0, n_clusters, size=n_new)

    # A random popularity rank within each cluster, Zipf-distributed base popularity over the ranks.
    cluster_sizes = np.bincount(item_cluster, minlength=n_clusters)
    cluster_starts = np.concatenate([[0], np.cumsum(cluster_sizes)[:-1]])
    by_cluster = np.lexsort((catalogue_rng.random(n_items), item_cluster))
    item_rank = np.empty(n_items, dtype=np.int64)
    item_rank[by_cluster] = np.arange(n_items) - cluster_starts[item_cluster[by_cluster]]
    base_popularity = _zipf_mass(item_rank, cluster_sizes[item_cluster], config.zipf_exponent)

    low, high = config.wave_periods
    wave_period = catalogue_rng.uniform(low, high, size=n_items) * duration
    wave_phase = catalogue_rng.uniform(0.0, 2.0 * np.pi, size=n_items)
    successors = _plant_successors(
        item_cluster, release_time, config.n_successors, config.successor_same_cluster, catalogue_rng
    )

    # Users: Zipf activity over a random ranking, distinct start (and end) clusters per user.
    n_users, m = config.n_users, config.clusters_per_user
    activity = (users_rng.permutation(n_users) + 1.0) ** -config.zipf_exponent
    activity /= activity.sum()
    n_chosen = min(2 * m, n_clusters) if config.drift else m
    chosen = _distinct_choices(users_rng, n_users, n_clusters, n_chosen)
    start = np.ascontiguousarray(chosen[:, :m])
    end = np.ascontiguousarray(chosen[:, n_chosen - m :]) if config.drift else start.copy()

    return SyntheticTruth(
        config=config,
        item_cluster=item_cluster,
        item_rank=item_rank,
        base_popularity=base_popularity,
        release_time=release_time,
        wave_period=wave_period,
        wave_phase=wave_phase,
        successors=successors,
        user_clusters_start=start,
        user_clusters_end=end,
        user_activity=activity,
    )


def _zipf_log_integral(x: np.ndarray, exponent: float) -> np.ndarray:
    """``∫_1^x y^-s dy`` for ``x >= 1`` (``log x`` at ``s = 1``), stable near ``s = 1``."""
    a = 1.0 - exponent
    log_x = np.log(x)
    if abs(a) < 1e-9:
        return log_x
    return np.expm1(a * log_x) / a


def _zipf_mass(rank: np.ndarray, size: np.ndarray, exponent: float) -> np.ndarray:
    """Probability of ``rank`` (0-based) under the discretised power law on ``size`` ranks.

    Rank ``r`` gets ``∫_{r+1}^{r+2} y^-s dy / ∫_1^{size+1} y^-s dy`` — close to ``(r+1)^-s`` normalised,
    and exactly what :class:`_ZipfSampler` samples by inversion.
    """
    rank = rank.astype(np.float64)
    size = np.asarray(size, dtype=np.float64)
    upper = _zipf_log_integral(rank + 2.0, exponent)
    lower = _zipf_log_integral(rank + 1.0, exponent)
    return (upper - lower) / _zipf_log_integral(size + 1.0, exponent)


class _ZipfSampler:
    """Inverse-CDF sampling of :func:`_zipf_mass` ranks for a few distribution sizes (one per cluster)."""

    def __init__(self, sizes: np.ndarray, exponent: float) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.a = 1.0 - exponent
        log_top = np.log(self.sizes + 1.0)
        self.log_scale = log_top if abs(self.a) < 1e-9 else np.expm1(self.a * log_top)

    def ranks(self, uniform: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Ranks ``[n]`` for uniforms ``[n]`` in ``[0, 1)`` under distributions ``which`` ``[n]``."""
        if abs(self.a) < 1e-9:
            x = np.exp(uniform * self.log_scale[which])
        else:
            x = np.exp(np.log1p(uniform * self.log_scale[which]) / self.a)
        return np.minimum(x.astype(np.int64) - 1, self.sizes[which] - 1)  # x >= 1, so ranks are >= 0


def _plant_successors(
    item_cluster: np.ndarray, release_time: np.ndarray, n_successors: int, same_cluster: float, rng: np.random.Generator
) -> np.ndarray:
    """``[n_items, n_successors]`` successors, each released no later than its item, never the item itself.

    With probability ``same_cluster`` a successor comes from the item's cluster (when it has another
    item released by then), otherwise from the whole catalogue released by then. An item with no
    other item released by its release time (only possible with a one-item catalogue) succeeds itself.
    """
    n_items = len(item_cluster)
    tiebreak = rng.random(n_items)
    by_cluster = np.lexsort((tiebreak, release_time, item_cluster))
    by_release = np.lexsort((tiebreak, release_time))
    position_in_cluster_order = np.empty(n_items, dtype=np.int64)
    position_in_cluster_order[by_cluster] = np.arange(n_items)
    position_in_release_order = np.empty(n_items, dtype=np.int64)
    position_in_release_order[by_release] = np.arange(n_items)
    cluster_starts = np.concatenate([[0], np.cumsum(np.bincount(item_cluster))[:-1]])

    # Candidates of an item: the prefix of its cluster (resp. of the catalogue) up to the end of its
    # release-time tie group, i.e. every item released no later than it, itself included.
    cluster_group_end = _tie_group_ends(item_cluster[by_cluster], release_time[by_cluster])
    n_in_cluster = (cluster_group_end[position_in_cluster_order] - cluster_starts[item_cluster])[:, None]
    n_overall = _tie_group_ends(np.zeros(n_items), release_time[by_release])[position_in_release_order][:, None]

    uniform = rng.random((n_items, n_successors))
    own_cluster = position_in_cluster_order[:, None]
    pick = cluster_starts[item_cluster][:, None] + (uniform * (n_in_cluster - 1)).astype(np.int64)
    pick += pick >= own_cluster  # skip the item itself
    in_cluster = by_cluster[np.minimum(pick, n_items - 1)]
    own_overall = position_in_release_order[:, None]
    pick = (uniform * (n_overall - 1)).astype(np.int64)
    pick += pick >= own_overall
    overall = by_release[np.minimum(pick, n_items - 1)]

    use_cluster = (rng.random((n_items, n_successors)) < same_cluster) & (n_in_cluster >= 2)
    successors = np.where(use_cluster, in_cluster, overall)
    itself = np.broadcast_to(np.arange(n_items)[:, None], successors.shape)
    return np.where(use_cluster | (n_overall >= 2), successors, itself).astype(np.int64)


def _tie_group_ends(first_key: np.ndarray, second_key: np.ndarray) -> np.ndarray:
    """For rows sorted by two keys, the exclusive end index of the run of equal keys each row is in."""
    n = len(first_key)
    last_of_run = np.ones(n, dtype=bool)
    last_of_run[:-1] = (first_key[1:] != first_key[:-1]) | (second_key[1:] != second_key[:-1])
    ends = np.flatnonzero(last_of_run) + 1
    return ends[np.searchsorted(ends, np.arange(n), side="right")]


def _distinct_choices(rng: np.random.Generator, n_rows: int, n_options: int, k: int) -> np.ndarray:
    """``[n_rows, k]`` int64: per row, ``k`` distinct options in random order (random keys, in chunks)."""
    out = np.empty((n_rows, k), dtype=np.int64)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_options)
    for low in range(0, n_rows, rows_per_chunk):
        keys = rng.random((min(rows_per_chunk, n_rows - low), n_options))
        smallest = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < n_options else np.argsort(keys, axis=1)
        order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
        out[low : low + len(keys)] = np.take_along_axis(smallest, order, axis=1)
    return out


# --- sampling the events ---------------------------------------------------------------------------


def _sample_events(truth: SyntheticTruth, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User ids, item ids and timestamps ``[n_events]`` each, in chronological order."""
    config = truth.config
    n_events, n_users = config.n_events, config.n_users

    # Chronological timeline: sorted uniforms from normalised exponential spacings (O(n), no sort).
    spacings = np.cumsum(rng.standard_exponential(n_events + 1))
    timestamps = spacings[:n_events] * (config.duration / spacings[n_events])
    np.minimum(timestamps, np.nextafter(config.duration, 0.0), out=timestamps)

    # Each user gets one event plus a Zipf share of the rest, at uniformly random places in time.
    counts = 1 + rng.multinomial(n_events - n_users, truth.user_activity)
    users_in_sequence = np.repeat(np.arange(n_users, dtype=np.int64), counts)  # sorted by user
    user_ids = users_in_sequence.copy()
    rng.shuffle(user_ids)
    # Sequence order: events by (user, time); sequence position k is chronological row sequence[k].
    sequence = _stable_argsort_ids(user_ids, n_users)
    times_in_sequence = timestamps[sequence]

    first_of_user = np.zeros(n_events, dtype=bool)
    first_of_user[np.cumsum(counts)[:-1]] = True
    first_of_user[0] = True
    follows = rng.random(n_events) < config.p_sequential
    follows[first_of_user] = False

    items_in_sequence = np.empty(n_events, dtype=np.int64)
    fresh = np.flatnonzero(~follows)
    items_in_sequence[fresh] = _sample_fresh(truth, users_in_sequence[fresh], times_in_sequence[fresh], rng)
    _follow_successors(truth.successors, items_in_sequence, follows, rng)

    item_ids = np.empty(n_events, dtype=np.int64)
    item_ids[sequence] = items_in_sequence
    return user_ids, item_ids, timestamps


def _stable_argsort_ids(ids: np.ndarray, n_ids: int) -> np.ndarray:
    """Stable argsort of ids in ``[0, n_ids)`` by 16-bit radix passes (numpy radix-sorts 16-bit keys)."""
    if n_ids <= 1 << 16:
        return np.argsort(ids.astype(np.uint16), kind="stable")
    if n_ids <= 1 << 32:
        order = np.argsort(ids.astype(np.uint16), kind="stable")  # the cast keeps the low 16 bits
        return order[np.argsort((ids[order] >> 16).astype(np.uint16), kind="stable")]
    return np.argsort(ids, kind="stable")


def _sample_fresh(truth: SyntheticTruth, users: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fresh draws ``[n]`` for ``users`` ``[n]`` at ``times`` ``[n]``: a taste cluster, then an item in it."""
    config = truth.config
    slot = users * config.clusters_per_user + rng.integers(0, config.clusters_per_user, size=len(users))
    clusters = truth.user_clusters_start.reshape(-1)[slot]
    if config.drift:
        use_end = rng.random(len(users)) * config.duration < times
        clusters[use_end] = truth.user_clusters_end.reshape(-1)[slot[use_end]]
    return _sample_in_clusters(truth, clusters, times, rng)


def _sample_in_clusters(
    truth: SyntheticTruth, clusters: np.ndarray, times: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Items ``[n]`` drawn from ``P(item | cluster, t)`` (:meth:`SyntheticTruth.item_probabilities_in_cluster`).

    Rejection sampling: propose from the static Zipf base popularity by inverting its CDF (O(1) per
    draw, no tables), accept with probability ``wave(t) / (1 + A)`` if released by ``t``. The few draws
    still pending after ``_MAX_REJECTION_ROUNDS`` rounds (only in extreme configs) are drawn exactly.
    """
    config = truth.config
    sizes = np.bincount(truth.item_cluster, minlength=config.n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    zipf = _ZipfSampler(sizes, config.zipf_exponent)
    # Item attributes laid out by (cluster, rank): a proposal is one position, ``starts[c] + rank``.
    by_rank = np.lexsort((truth.item_rank, truth.item_cluster))
    release = truth.release_time[by_rank]
    amplitude = config.wave_amplitude if config.popularity_waves else 0.0
    frequency = 2.0 * np.pi / truth.wave_period[by_rank]
    phase = truth.wave_phase[by_rank]

    items = np.empty(len(clusters), dtype=np.int64)
    pending = np.arange(len(clusters))
    for _ in range(_MAX_REJECTION_ROUNDS):
        if len(pending) == 0:
            return items
        cluster, time = clusters[pending], times[pending]
        uniform = rng.random((2, len(pending)))
        proposal = starts[cluster] + zipf.ranks(uniform[0], cluster)
        accept = release[proposal] <= time
        if amplitude > 0.0:
            wave = np.sin(time * frequency[proposal] + phase[proposal])
            wave *= amplitude
            wave += 1.0
            accept &= uniform[1] * (1.0 + amplitude) < wave
        items[pending[accept]] = by_rank[proposal[accept]]
        pending = pending[~accept]

    rows_per_chunk = max(1, _CHUNK_ELEMENTS // truth.n_items)
    for low in range(0, len(pending), rows_per_chunk):
        chunk = pending[low : low + rows_per_chunk]
        probs = truth.item_probabilities_in_cluster(times[chunk])
        probs *= truth.item_cluster == clusters[chunk][:, None]
        cumulative = np.cumsum(probs, axis=1)
        target = rng.random(len(chunk)) * cumulative[:, -1]
        picked = (cumulative <= target[:, None]).sum(axis=1)
        last_positive = truth.n_items - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
        items[chunk] = np.minimum(picked, last_positive)
    return items


def _follow_successors(
    successors: np.ndarray, items: np.ndarray, follows: np.ndarray, rng: np.random.Generator
) -> None:
    """Fill ``items[k]`` for every ``follows[k]`` with a uniform successor of ``items[k - 1]``, in place.

    ``items`` ``[n]`` is in sequence order with fresh draws filled in. A run of follows after a fresh
    draw is resolved level by level: every event ``d`` steps after its fresh draw at once, for
    ``d = 1, 2, ...`` (about ``log n / log(1 / p_sequential)`` levels).
    """
    n = len(items)
    positions = np.arange(n)
    depth = positions - np.maximum.accumulate(np.where(follows, 0, positions))
    max_depth = int(depth.max(initial=0))
    if max_depth == 0:
        return
    n_successors = successors.shape[1]
    flat_successors = successors.reshape(-1)
    choice = rng.integers(0, n_successors, size=n)
    by_depth = np.argsort(depth.astype(np.uint16) if max_depth < 1 << 16 else depth, kind="stable")
    level_ends = np.cumsum(np.bincount(depth))
    for level in range(1, max_depth + 1):
        rows = by_depth[level_ends[level - 1] : level_ends[level]]
        items[rows] = flat_successors[items[rows - 1] * n_successors + choice[rows]]


# --- helpers ---------------------------------------------------------------------------------------


def _numbered(prefix: str, n: int) -> np.ndarray:
    """``[prefix + "0", prefix + "1", ...]`` as an object array of ``n`` str, built without a Python loop."""
    return np.strings.add(prefix, np.arange(n).astype(np.str_)).astype(object)


def _check_int(name: str, value: object, minimum: int, minimum_name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        bound = f"{minimum_name}={minimum}" if minimum_name else str(minimum)
        raise ValueError(f"{name}: expected at least {bound}, got {value}")


def _check_fraction(name: str, value: float, upper_open: bool) -> None:
    inside = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not (isinstance(value, int | float) and inside):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
