"""Matrix-factorisation models (mf-bpr, mf-bce, mf-mse) and rating metrics, on planted synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import liverec.models.mf as mf
from liverec.data.interactions import Histories, Interactions
from liverec.evaluation.rating import rating_metrics
from liverec.models.base import MODEL_REGISTRY, Recommender

N_GROUP_USERS = 20
BLOCK_SIZE = 10
IMPLICIT_MODELS = [mf.BPRMF, mf.BCEMF]
ALL_MODELS = [mf.BPRMF, mf.BCEMF, mf.MSEMF]
#: small, fast settings that learn the planted fixtures
FAST = {"n_factors": 8, "n_epochs": 20, "batch_size": 64, "learning_rate": 0.05, "l2": 0.1}


def fast(**overrides: object) -> dict[str, object]:
    """:data:`FAST` with some settings changed."""
    return {**FAST, **overrides}


def two_blocks(seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Users 0..19 consume items of block A (0..9), users 20..39 of block B (10..19).

    Each user consumes 7 of the 10 items of their block; ``held_out[u]`` is one of the other 3.
    """
    rng = np.random.default_rng(seed)
    users, items, held_out = [], [], []
    for user in range(2 * N_GROUP_USERS):
        block = 0 if user < N_GROUP_USERS else BLOCK_SIZE
        chosen = block + rng.permutation(BLOCK_SIZE)
        users += [user] * 7
        items += list(chosen[:7])
        held_out.append(chosen[7])
    interactions = Interactions.from_arrays(users, items, n_users=2 * N_GROUP_USERS, n_items=2 * BLOCK_SIZE)
    return interactions, np.array(held_out)


def known_users(interactions: Interactions) -> Histories:
    return Histories.from_interactions(interactions)


def block_of(items: np.ndarray) -> np.ndarray:
    return np.asarray(items) // BLOCK_SIZE


def planted_ratings(seed: int = 0) -> tuple[Interactions, Interactions, np.ndarray]:
    """A rank-2 biased rating matrix ``[60, 40]``; 70% of the entries to train on, the rest held out."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 40
    truth = (
        3.5
        + rng.normal(0, 0.3, (n_users, 1))
        + rng.normal(0, 0.3, (1, n_items))
        + rng.normal(0, 0.6, (n_users, 2)) @ rng.normal(0, 0.6, (2, n_items))
    ).astype(np.float32)
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    train = rng.random(len(users)) < 0.7
    everything = Interactions.from_arrays(users, items, values=truth[users, items], n_users=n_users, n_items=n_items)
    return everything.subset(train), everything.subset(~train), truth


# --------------------------------------------------------------------- registry and config
def test_models_are_registered_under_their_names() -> None:
    assert MODEL_REGISTRY["mf-bpr"] is mf.BPRMF
    assert MODEL_REGISTRY["mf-bce"] is mf.BCEMF
    assert MODEL_REGISTRY["mf-mse"] is mf.MSEMF
    for model_cls in ALL_MODELS:
        assert model_cls.supports_partial_fit and model_cls.handles_new_items
        assert not model_cls.needs_user_history


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_factors", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("l2", -1.0),
        ("n_epochs", -1),
        ("final_lr_ratio", 0.0),
    ],
)
def test_invalid_config_is_rejected_with_the_field_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        mf.BPRMF(**{field: value})


def test_implicit_config_rejects_zero_negatives() -> None:
    with pytest.raises(ValueError, match="n_negatives"):
        mf.BCEMF(n_negatives=0)


# --------------------------------------------------------------------- learning
@pytest.mark.parametrize("model_cls", IMPLICIT_MODELS)
def test_planted_blocks_are_learned(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, held_out = two_blocks()
    model = model_cls(**FAST).fit(interactions)
    scores = model.score(known_users(interactions))
    users = np.arange(interactions.n_users)
    in_block_a = users < N_GROUP_USERS
    block_a, block_b = scores[:, :BLOCK_SIZE], scores[:, BLOCK_SIZE:]
    other_block_best = np.where(in_block_a, block_b.max(axis=1), block_a.max(axis=1))
    own_block_worst = np.where(in_block_a, block_a.min(axis=1), block_b.min(axis=1))
    assert (scores[users, held_out] > other_block_best).all()
    assert (own_block_worst > other_block_best).all()
    assert model.epoch_losses[-1] < model.epoch_losses[0]


@pytest.mark.parametrize("model_cls", IMPLICIT_MODELS)
def test_recommendations_for_known_users_come_from_their_block(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, _ = two_blocks()
    model = model_cls(**FAST).fit(interactions)
    ids, _ = model.recommend(known_users(interactions), k=3)
    users = np.arange(interactions.n_users)
    assert (block_of(ids) == (users // N_GROUP_USERS)[:, None]).all()


def test_seeded_fit_is_reproducible_and_refit_restarts() -> None:
    interactions, _ = two_blocks()
    histories = known_users(interactions)
    first = mf.BPRMF(**fast(seed=3)).fit(interactions).score(histories)
    model = mf.BPRMF(**fast(seed=3))
    model.fit(interactions)
    model.fit(interactions)  # refit starts from scratch, so it equals a single fit
    assert np.array_equal(model.score(histories), first)
    other_seed = mf.BPRMF(**fast(seed=4)).fit(interactions).score(histories)
    assert not np.array_equal(other_seed, first)


@pytest.mark.parametrize("model_cls", ALL_MODELS)
def test_every_model_is_reproducible(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, _ = two_blocks()
    histories = known_users(interactions)
    config = fast(n_epochs=3)
    first = model_cls(**config).fit(interactions).score(histories)
    second = model_cls(**config).fit(interactions).score(histories)
    assert first.dtype == np.float32 and first.shape == (interactions.n_users, interactions.n_items)
    assert np.array_equal(first, second)


def test_fit_leaves_the_torch_thread_count_as_it_was() -> None:
    before = torch.get_num_threads()
    interactions, _ = two_blocks()
    mf.BPRMF(**fast(n_epochs=1, n_threads=1 if before != 1 else 2)).fit(interactions)
    assert torch.get_num_threads() == before


def test_negatives_never_hit_the_users_positives() -> None:
    interactions, _ = two_blocks()
    model = mf.BCEMF(n_negatives=5)
    users = np.repeat(np.arange(interactions.n_users), 50)
    keys = np.unique(interactions.user_ids * interactions.n_items + interactions.item_ids)
    negatives = model._epoch_negatives(users, keys, interactions.n_items, np.random.default_rng(0))
    assert negatives.shape == (len(users), 5)
    assert not np.isin(users[:, None] * interactions.n_items + negatives, keys).any()
    # uniform over the rest of the catalogue: every non-consumed item shows up
    assert len(np.unique(negatives)) == interactions.n_items


# --------------------------------------------------------------------- partial_fit
def new_block_a_item_data() -> Interactions:
    """Users 0..9 (block A) and two new users (40, 41) consume a new item 20; ids grow to 42 x 22."""
    users = [*range(10), 40, 40, 41, 41]
    items = [20] * 10 + [20, 0, 20, 1]
    return Interactions.from_arrays(users, items, n_users=42, n_items=22)


@pytest.mark.parametrize("model_cls", IMPLICIT_MODELS)
def test_partial_fit_grows_the_tables_and_learns_the_new_item(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, _ = two_blocks()
    model = model_cls(**fast(partial_fit_epochs=20)).fit(interactions)
    before = model._get_state()
    model.partial_fit(new_block_a_item_data())
    after = model._get_state()
    assert (model.n_users, model.n_items) == (42, 22)
    assert after["user_factors"].shape == (42, 8) and after["item_factors"].shape == (22, 8)
    assert after["user_bias"].shape == (42,) and after["item_bias"].shape == (22,)
    assert not np.array_equal(after["item_factors"][:20], before["item_factors"])  # the model changed
    scores = model.score(Histories.from_lists([[], []], users=[0, 30]))
    assert scores.shape == (2, 22)
    new_item = 20
    assert scores[0, new_item] > scores[1, new_item]  # block A user likes the new item more than a block B user
    assert model.score(Histories.from_lists([[]], users=[40])).shape == (1, 22)


def test_growing_keeps_existing_rows_unchanged() -> None:
    interactions, _ = two_blocks()
    model = mf.BPRMF(**fast(partial_fit_epochs=0)).fit(interactions)
    before = model._get_state()
    model.partial_fit(new_block_a_item_data())
    after = model._get_state()
    for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
        assert np.array_equal(after[key][: len(before[key])], before[key])
    assert np.array_equal(after["user_bias"][40:], np.zeros(2, dtype=np.float32))
    assert np.abs(after["item_factors"][20:]).max() > 0  # new rows are small random, not all zero


def test_partial_fit_on_an_unfitted_model_is_a_fit() -> None:
    interactions, _ = two_blocks()
    histories = known_users(interactions)
    partial = mf.BPRMF(**fast(n_epochs=3)).partial_fit(interactions).score(histories)
    full = mf.BPRMF(**fast(n_epochs=3)).fit(interactions).score(histories)
    assert np.array_equal(partial, full)


# --------------------------------------------------------------------- fold-in
@pytest.mark.parametrize("model_cls", ALL_MODELS)
def test_unknown_users_are_folded_in_from_their_history(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, _ = two_blocks()
    model = model_cls(**FAST).fit(interactions)
    state = model._get_state()
    history = [0, 1, 2, 25]  # item 25 is outside the catalogue and is ignored
    histories = Histories.from_lists([history, history, []], users=[-1, 999, -1])
    scores = model.score(histories)
    vector = state["item_factors"][[0, 1, 2]].mean(axis=0)
    expected = vector @ state["item_factors"].T + state["item_bias"] + state["global_bias"][0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scores[1], scores[0])  # an id beyond the table is unknown too
    np.testing.assert_allclose(scores[2], state["item_bias"] + state["global_bias"][0], rtol=1e-6)


@pytest.mark.parametrize("model_cls", IMPLICIT_MODELS)
def test_fold_in_recommends_from_the_histories_block(model_cls: type[mf._MatrixFactorization]) -> None:
    interactions, _ = two_blocks()
    model = model_cls(**FAST).fit(interactions)
    ids, _ = model.recommend(Histories.from_lists([[0, 1, 2, 3], [10, 11, 12, 13]]), k=3)
    assert (block_of(ids[0]) == 0).all() and (block_of(ids[1]) == 1).all()


def test_known_users_ignore_the_history_passed_in() -> None:
    interactions, _ = two_blocks()
    model = mf.BPRMF(**fast(n_epochs=3)).fit(interactions)
    with_history = model.score(Histories.from_lists([[10, 11]], users=[0]))
    without = model.score(Histories.from_lists([[]], users=[0]))
    assert np.array_equal(with_history, without)


def test_a_user_row_never_trained_on_is_folded_in() -> None:
    interactions, _ = two_blocks()
    grown = interactions.with_sizes(interactions.n_users + 1, interactions.n_items)  # user 40 has no events
    model = mf.BPRMF(**fast(n_epochs=3)).fit(grown)
    history = [0, 1]
    scores = model.score(Histories.from_lists([history, history], users=[40, -1]))
    assert np.array_equal(scores[0], scores[1])


# --------------------------------------------------------------------- persistence
@pytest.mark.parametrize("model_cls", ALL_MODELS)
def test_save_load_round_trip_gives_identical_scores(model_cls: type[mf._MatrixFactorization], tmp_path: Path) -> None:
    interactions, _ = two_blocks()
    model = model_cls(**fast(n_epochs=3, partial_fit_epochs=1)).fit(interactions)
    model.partial_fit(new_block_a_item_data())
    histories = Histories.from_lists([[0, 1], [], [5]], users=[0, -1, 41])
    model.save(tmp_path)
    loaded = Recommender.load(tmp_path)
    assert type(loaded) is model_cls and loaded.config == model.config
    assert (loaded.n_users, loaded.n_items) == (model.n_users, model.n_items)
    assert np.array_equal(loaded.score(histories), model.score(histories))
    # the loaded model continues exactly as the original would
    more = Interactions.from_arrays([1, 2], [3, 21], n_users=42, n_items=22)
    assert np.array_equal(loaded.partial_fit(more).score(histories), model.partial_fit(more).score(histories))


# --------------------------------------------------------------------- explicit ratings
def test_mse_recovers_a_planted_rating_matrix() -> None:
    train, held_out, truth = planted_ratings()
    model = mf.MSEMF(n_factors=4, n_epochs=60, batch_size=128, learning_rate=0.02, l2=0.001).fit(train)
    train_metrics = rating_metrics(model, train)
    held_out_metrics = rating_metrics(model, held_out)
    spread = float(np.std(truth))
    assert train_metrics["rmse"] < 0.15
    assert held_out_metrics["rmse"] < 0.35 * spread
    baseline = float(np.sqrt(np.mean((held_out.values - train.values.mean()) ** 2)))
    assert held_out_metrics["rmse"] < 0.5 * baseline


def test_mse_scores_rank_by_predicted_rating() -> None:
    train, _, _ = planted_ratings()
    model = mf.MSEMF(n_factors=4, n_epochs=5).fit(train)
    scores = model.score(Histories.from_lists([[], []], users=[3, 7]))
    items = np.arange(train.n_items)
    np.testing.assert_allclose(scores[0], model.predict(np.full(len(items), 3), items), rtol=1e-5)
    np.testing.assert_allclose(scores[1], model.predict(np.full(len(items), 7), items), rtol=1e-5)


def test_mse_predicts_unknown_users_and_items_from_biases() -> None:
    train, _, _ = planted_ratings()
    model = mf.MSEMF(n_factors=4, n_epochs=5).fit(train)
    state = model._get_state()
    predictions = model.predict(np.array([-1, 999, 3]), np.array([2, 2, 999]))
    expected = [
        state["global_bias"][0] + state["item_bias"][2],
        state["global_bias"][0] + state["item_bias"][2],
        state["global_bias"][0] + state["user_bias"][3],
    ]
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="item_ids"):
        model.predict(np.array([0, 1]), np.array([0]))


def test_mse_uses_the_latest_rating_of_a_repeated_pair() -> None:
    data = Interactions.from_arrays([0, 0, 1], [0, 0, 1], timestamps=[2.0, 1.0, 0.0], values=[5.0, 1.0, 3.0])
    users, items, targets = mf.MSEMF()._training_pairs(data)
    order = np.argsort(users)
    assert list(zip(users[order], items[order], targets[order], strict=True)) == [(0, 0, 5.0), (1, 1, 3.0)]


class _FixedPredictions:
    def __init__(self, predictions: list[float]) -> None:
        self.predictions = np.array(predictions)

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return self.predictions


def test_rating_metrics_match_a_hand_computation() -> None:
    test = Interactions.from_arrays([0, 1, 2], [0, 1, 2], values=[1.0, 3.0, 5.0])
    metrics = rating_metrics(_FixedPredictions([1.0, 2.0, 3.0]), test)  # errors 0, -1, -2
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["rmse"] == pytest.approx(np.sqrt(5.0 / 3.0))


def test_rating_metrics_of_a_fitted_model_match_its_predictions() -> None:
    train, held_out, _ = planted_ratings()
    model = mf.MSEMF(n_factors=4, n_epochs=3).fit(train)
    errors = model.predict(held_out.user_ids, held_out.item_ids).astype(np.float64) - held_out.values
    metrics = rating_metrics(model, held_out)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(errors)))


def test_rating_metrics_reject_models_without_predict_and_empty_data() -> None:
    interactions, _ = two_blocks()
    model = mf.BPRMF(**fast(n_epochs=1)).fit(interactions)
    with pytest.raises(TypeError, match="predict"):
        rating_metrics(model, interactions)
    with pytest.raises(ValueError, match="interactions_test"):
        rating_metrics(_FixedPredictions([]), interactions.subset(np.zeros(len(interactions), dtype=bool)))
