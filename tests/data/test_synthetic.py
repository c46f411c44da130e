"""The synthetic stream: sizes, determinism, and that the planted truth is really in the data.

The oracle (:meth:`SyntheticTruth.next_item_probabilities`) is checked against the generator itself:
summed over a stream, the oracle's next-item probabilities must predict the observed item counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liverec.data import synthetic
from liverec.data.interactions import Dataset, Interactions
from liverec.data.synthetic import SyntheticConfig, SyntheticTruth, generate

SMALL: dict[str, Any] = {"n_users": 200, "n_items": 120, "n_clusters": 6, "n_events": 20_000}


@pytest.fixture(scope="module")
def stream() -> tuple[Dataset, SyntheticTruth]:
    return generate(seed=7, **SMALL)


def in_sequence(interactions: Interactions) -> tuple[Interactions, np.ndarray]:
    """Rows in (user, time) order and each row's previous item of the same user (-1 for a first event)."""
    ordered = interactions.sorted()
    same_user = np.concatenate([[False], ordered.user_ids[1:] == ordered.user_ids[:-1]])
    previous = np.where(same_user, np.concatenate([[-1], ordered.item_ids[:-1]]), -1)
    return ordered, previous


def oracle_rows(truth: SyntheticTruth, interactions: Interactions) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """Sequence-ordered rows, previous items and the oracle distribution ``[n_events, n_items]`` of every row."""
    ordered, previous = in_sequence(interactions)
    probs = truth.next_item_probabilities_batch(ordered.user_ids, ordered.timestamps, previous)
    return ordered, previous, probs


def assert_valid(dataset: Dataset, truth: SyntheticTruth) -> None:
    """Invariants every generated stream satisfies, whatever the config."""
    config, events = truth.config, dataset.interactions
    assert len(events) == config.n_events
    assert (events.n_users, events.n_items) == (config.n_users, config.n_items)
    assert events.user_counts().min() >= 1  # every user in the id map has an event
    assert np.all(np.diff(events.timestamps) >= 0)  # chronological
    assert events.timestamps.min() >= 0 and events.timestamps.max() < config.duration
    assert np.all(truth.release_time[events.item_ids] <= events.timestamps)
    assert np.all(truth.release_time[truth.successors] <= truth.release_time[:, None])
    assert truth.successors.shape == (config.n_items, config.n_successors)
    # An item succeeds itself only when no other item was released by its release time.
    alone = (truth.release_time[None, :] <= truth.release_time[:, None]).sum(axis=1) == 1
    assert not np.any((truth.successors == np.arange(config.n_items)[:, None]) & ~alone[:, None])
    for table in (truth.user_clusters_start, truth.user_clusters_end):
        assert table.shape == (config.n_users, config.clusters_per_user)
        assert all(len(set(row)) == config.clusters_per_user for row in table.tolist())
    cluster_mass = np.bincount(truth.item_cluster, weights=truth.base_popularity, minlength=config.n_clusters)
    np.testing.assert_allclose(cluster_mass, 1.0)


# --- shape, ids and determinism --------------------------------------------------------------------


def test_sizes_ids_and_metadata(stream: tuple[Dataset, SyntheticTruth]) -> None:
    dataset, truth = stream
    assert_valid(dataset, truth)
    assert dataset.name == "synthetic"
    assert list(dataset.user_map.external_ids[:3]) == ["u0", "u1", "u2"]
    assert list(dataset.item_map.external_ids[:3]) == ["i0", "i1", "i2"]
    assert dataset.interactions.event_type_names == ("view",)
    assert np.all(dataset.interactions.values == 1.0)
    assert dataset.items is not None
    assert dataset.items.titles[7] == "Item 7"
    assert dataset.items.genres[7] == (f"cluster{truth.item_cluster[7]}",)
    assert dataset.items.genre_vocabulary() == [f"cluster{c}" for c in range(SMALL["n_clusters"])]


def test_equals_what_from_frame_builds(stream: tuple[Dataset, SyntheticTruth]) -> None:
    dataset, _ = stream
    events = dataset.interactions
    assert dataset.items is not None
    frame = pd.DataFrame(
        {
            "user_id": dataset.user_map.to_external(events.user_ids),
            "item_id": dataset.item_map.to_external(events.item_ids),
            "timestamp": events.timestamps,
            "event_type": "view",
            "value": 1.0,
        }
    )
    items = pd.DataFrame(
        {"item_id": dataset.item_map.external_ids, "title": dataset.items.titles, "genres": dataset.items.genres}
    )
    rebuilt = Dataset.from_frame(frame, items=items)
    assert rebuilt.interactions.n_items == events.n_items  # never-seen items stay in the catalogue
    assert rebuilt.interactions.n_users == events.n_users
    np.testing.assert_array_equal(rebuilt.item_map.to_external(rebuilt.interactions.item_ids), frame["item_id"])
    np.testing.assert_array_equal(rebuilt.user_map.to_external(rebuilt.interactions.user_ids), frame["user_id"])


def test_same_seed_same_stream_and_truth() -> None:
    (first, first_truth), (second, second_truth) = generate(seed=3, **SMALL), generate(seed=3, **SMALL)
    for name in ("user_ids", "item_ids", "timestamps"):
        np.testing.assert_array_equal(getattr(first.interactions, name), getattr(second.interactions, name))
    for name in ("item_cluster", "successors", "release_time", "user_clusters_start", "user_clusters_end"):
        np.testing.assert_array_equal(getattr(first_truth, name), getattr(second_truth, name))


def test_different_seed_differs() -> None:
    first, first_truth = generate(seed=3, **SMALL)
    second, second_truth = generate(seed=4, **SMALL)
    assert not np.array_equal(first.interactions.item_ids, second.interactions.item_ids)
    assert not np.array_equal(first_truth.successors, second_truth.successors)


def test_planted_structure_does_not_depend_on_the_number_of_events() -> None:
    _, short = generate(seed=5, **{**SMALL, "n_events": 1_000})
    _, long = generate(seed=5, **SMALL)
    for name in ("item_cluster", "successors", "release_time", "base_popularity", "user_clusters_end"):
        np.testing.assert_array_equal(getattr(short, name), getattr(long, name))


def test_overrides_replace_config_fields() -> None:
    dataset, truth = generate(SyntheticConfig(**SMALL), n_events=500, seed=9)
    assert len(dataset.interactions) == 500
    assert truth.config.seed == 9 and truth.config.n_items == SMALL["n_items"]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("n_events", 10, ValueError),  # fewer events than users
        ("n_clusters", 1_000, ValueError),
        ("clusters_per_user", 11, ValueError),
        ("p_sequential", 1.5, ValueError),
        ("new_item_fraction", 1.0, ValueError),
        ("wave_amplitude", 1.0, ValueError),
        ("duration_days", 0.0, ValueError),
        ("zipf_exponent", -1.0, ValueError),
        ("wave_periods", (0.5, 0.1), ValueError),
        ("n_items", 2.5, TypeError),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        SyntheticConfig(n_users=100, **{field: value})


# --- the planted structure is in the data ----------------------------------------------------------


def test_sequential_structure_matches_p_sequential(stream: tuple[Dataset, SyntheticTruth]) -> None:
    dataset, truth = stream
    ordered, previous, probs = oracle_rows(truth, dataset.interactions)
    pairs = previous >= 0
    follows = (truth.successors[previous[pairs]] == ordered.item_ids[pairs][:, None]).any(axis=1)
    # Expected rate: p_sequential plus the chance that a fresh draw lands on a successor anyway.
    in_successors = np.zeros_like(probs[pairs], dtype=bool)
    np.put_along_axis(in_successors, truth.successors[previous[pairs]], True, axis=1)
    expected = (probs[pairs] * in_successors).sum(axis=1).mean()
    assert follows.mean() == pytest.approx(expected, abs=0.015)
    assert truth.config.p_sequential - 0.015 < follows.mean() < truth.config.p_sequential + 0.15


def test_successors_are_recovered_by_counting_bigrams(stream: tuple[Dataset, SyntheticTruth]) -> None:
    """A bigram-count model learns the planted map: the top follower of a frequent item is a successor."""
    dataset, truth = stream
    ordered, previous = in_sequence(dataset.interactions)
    pairs = previous >= 0
    n_items = truth.n_items
    bigrams = np.bincount(previous[pairs] * n_items + ordered.item_ids[pairs], minlength=n_items**2)
    bigrams = bigrams.reshape(n_items, n_items)
    frequent = np.flatnonzero(bigrams.sum(axis=1) >= 100)
    assert len(frequent) >= 20
    top_follower = bigrams[frequent].argmax(axis=1)
    recovered = (truth.successors[frequent] == top_follower[:, None]).any(axis=1)
    assert recovered.mean() >= 0.95


def test_new_items_are_released_mid_stream(stream: tuple[Dataset, SyntheticTruth]) -> None:
    dataset, truth = stream
    events = dataset.interactions
    new = truth.release_time > 0
    assert new.sum() == truth.config.n_new_items > 0
    first_seen = np.full(truth.n_items, np.inf)
    np.minimum.at(first_seen, events.item_ids, events.timestamps)
    assert np.all(first_seen >= truth.release_time)
    second_half = first_seen >= truth.config.duration / 2
    assert (second_half & np.isfinite(first_seen) & new).sum() >= 5
    assert not np.any(second_half & ~new)  # items present from the start show up early


@pytest.mark.parametrize("drift", [True, False])
def test_taste_drifts_from_start_to_end_clusters(drift: bool) -> None:
    dataset, truth = generate(seed=1, drift=drift, p_sequential=0.0, **SMALL)
    events = dataset.interactions
    clusters = truth.item_cluster[events.item_ids]
    in_start = (truth.user_clusters_start[events.user_ids] == clusters[:, None]).any(axis=1)
    in_end = (truth.user_clusters_end[events.user_ids] == clusters[:, None]).any(axis=1)
    early = events.timestamps < 0.1 * truth.config.duration
    late = events.timestamps > 0.9 * truth.config.duration
    assert in_start[early].mean() > 0.9
    if drift:
        assert not np.any(truth.user_clusters_start[:, :, None] == truth.user_clusters_end[:, None, :])
        assert in_end[late].mean() > 0.9
        assert in_start[late].mean() < 0.1
    else:
        np.testing.assert_array_equal(truth.user_clusters_start, truth.user_clusters_end)
        assert in_start[late].mean() == 1.0


def test_popularity_waves_move_item_shares_over_time() -> None:
    common: dict[str, Any] = {
        "n_users": 50,
        "n_items": 20,
        "n_clusters": 1,
        "clusters_per_user": 1,
        "n_events": 60_000,
        "p_sequential": 0.0,
        "drift": False,
        "new_item_fraction": 0.0,
        "zipf_exponent": 0.5,
    }
    n_chunks = 10

    def shares(waves: bool) -> tuple[np.ndarray, np.ndarray]:
        dataset, truth = generate(seed=2, popularity_waves=waves, **common)
        events = dataset.interactions
        chunk = (events.timestamps / truth.config.duration * n_chunks).astype(int)
        counts = np.bincount(chunk * truth.n_items + events.item_ids, minlength=n_chunks * truth.n_items)
        observed = counts.reshape(n_chunks, truth.n_items)
        observed = observed / observed.sum(axis=1, keepdims=True)
        midpoints = (np.arange(n_chunks) + 0.5) / n_chunks * truth.config.duration
        return observed, truth.item_probabilities_in_cluster(midpoints)

    observed, expected = shares(waves=True)
    flat_observed, flat_expected = shares(waves=False)
    spread = observed.std(axis=0) / observed.mean(axis=0)
    flat_spread = flat_observed.std(axis=0) / flat_observed.mean(axis=0)
    assert np.median(spread) > 3 * np.median(flat_spread)
    deviation = observed - observed.mean(axis=0)
    predicted = expected - expected.mean(axis=0)
    assert np.corrcoef(deviation.ravel(), predicted.ravel())[0, 1] > 0.8
    np.testing.assert_allclose(flat_expected, flat_expected[:1].repeat(n_chunks, axis=0))


# --- the oracle ------------------------------------------------------------------------------------


def test_oracle_is_a_distribution_with_no_mass_before_release(stream: tuple[Dataset, SyntheticTruth]) -> None:
    _, truth = stream
    present = np.flatnonzero(truth.release_time == 0)
    for user, time, previous in [(0, 0.0, None), (5, 0.0, int(present[0])), (17, 0.7 * truth.config.duration, 3)]:
        probs = truth.next_item_probabilities(user, time, previous)
        assert probs.shape == (truth.n_items,)
        assert probs.sum() == pytest.approx(1.0)
        assert probs.min() >= 0
        if time == 0.0:
            assert np.all(probs[truth.release_time > time] == 0)
        if previous is not None:
            assert probs[truth.successors[previous]].sum() >= truth.config.p_sequential
    batch = truth.next_item_probabilities_batch(np.array([3, 4]), np.array([1e5, 2e6]), np.array([-1, 8]))
    np.testing.assert_allclose(batch[0], truth.next_item_probabilities(3, 1e5, None))
    np.testing.assert_allclose(batch[1], truth.next_item_probabilities(4, 2e6, 8))
    with pytest.raises(ValueError, match="users"):
        truth.next_item_probabilities(SMALL["n_users"], 0.0, None)


def test_oracle_predicts_the_generated_counts(stream: tuple[Dataset, SyntheticTruth]) -> None:
    dataset, truth = stream
    assert_oracle_matches(dataset, truth)


def test_exact_fallback_sampler_matches_the_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no rejection rounds every fresh draw takes the exact inverse-CDF path (in small chunks)."""
    monkeypatch.setattr(synthetic, "_MAX_REJECTION_ROUNDS", 0)
    monkeypatch.setattr(synthetic, "_CHUNK_ELEMENTS", 1_000)
    dataset, truth = generate(seed=11, n_users=100, n_items=60, n_clusters=3, n_events=8_000)
    assert_valid(dataset, truth)
    assert_oracle_matches(dataset, truth)


def assert_oracle_matches(dataset: Dataset, truth: SyntheticTruth) -> None:
    """Summed oracle probabilities predict the count of every item, overall and per time chunk.

    Per cell, observed count minus summed probabilities is a martingale whose variance is at most the
    expected count, so the chi-square statistic per cell stays near (in fact under) 1. Item totals
    catch wrong taste, drift, popularity or ``p_sequential``; 20 time chunks catch wrong waves.
    """
    ordered, _, probs = oracle_rows(truth, dataset.interactions)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[np.arange(len(ordered)), ordered.item_ids].min() > 0  # every event was possible
    for n_chunks, threshold in [(1, 1.35), (20, 1.1)]:
        chunk = (ordered.timestamps / truth.config.duration * n_chunks).astype(np.int64)
        expected = np.zeros((n_chunks, truth.n_items))
        np.add.at(expected, chunk, probs)
        observed = np.bincount(chunk * truth.n_items + ordered.item_ids, minlength=n_chunks * truth.n_items)
        observed = observed.reshape(n_chunks, truth.n_items)
        enough = expected >= 5
        statistic = ((observed[enough] - expected[enough]) ** 2 / expected[enough]).sum() / enough.sum()
        assert statistic < threshold, f"{n_chunks} time chunks: chi-square per cell {statistic:.2f}"


# --- any small config ------------------------------------------------------------------------------


@st.composite
def small_configs(draw: st.DrawFn) -> SyntheticConfig:
    n_items = draw(st.integers(1, 30))
    n_clusters = draw(st.integers(1, min(n_items, 5)))
    n_users = draw(st.integers(1, 15))
    return SyntheticConfig(
        n_users=n_users,
        n_items=n_items,
        n_clusters=n_clusters,
        n_events=draw(st.integers(n_users, 300)),
        duration_days=draw(st.floats(0.01, 400.0)),
        p_sequential=draw(st.floats(0.0, 1.0)),
        n_successors=draw(st.integers(1, 4)),
        successor_same_cluster=draw(st.floats(0.0, 1.0)),
        clusters_per_user=draw(st.integers(1, n_clusters)),
        drift=draw(st.booleans()),
        popularity_waves=draw(st.booleans()),
        wave_amplitude=draw(st.floats(0.0, 0.99)),
        new_item_fraction=draw(st.floats(0.0, 0.95)),
        zipf_exponent=draw(st.floats(0.0, 3.0)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=small_configs())
def test_any_small_config_generates_a_valid_stream(config: SyntheticConfig) -> None:
    dataset, truth = generate(config)
    assert_valid(dataset, truth)
    ordered, _, probs = oracle_rows(truth, dataset.interactions)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[np.arange(len(ordered)), ordered.item_ids].min() > 0
