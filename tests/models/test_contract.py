"""The contract every registered model honours (run automatically over MODEL_REGISTRY)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from liverec.data.interactions import Histories, Interactions
from liverec.models import MODEL_REGISTRY, Recommender, create_model
from liverec.models.base import UpdateOptions

ALL_MODELS = sorted(MODEL_REGISTRY)


def random_interactions(seed: int, n_users: int = 30, n_items: int = 25, n_events: int = 400) -> Interactions:
    rng = np.random.default_rng(seed)
    return Interactions(
        user_ids=rng.integers(0, n_users, n_events),
        item_ids=rng.integers(0, n_items, n_events),
        timestamps=np.sort(rng.uniform(0, 30 * 86_400, n_events)),
        values=rng.integers(1, 6, n_events).astype(np.float32),
        event_types=np.zeros(n_events, dtype=np.int16),
        n_users=n_users,
        n_items=n_items,
    )


@pytest.fixture(scope="module")
def data() -> Interactions:
    return random_interactions(0)


#: fusion fits three models per fit: the contract runs on it in the slow suite only
MODEL_PARAMS = [pytest.param(name, marks=pytest.mark.slow) if name == "fusion" else name for name in ALL_MODELS]


@pytest.fixture(scope="module", params=MODEL_PARAMS)
def fitted(request: pytest.FixtureRequest, data: Interactions) -> Recommender:
    return create_model(request.param, seed=3).fit(data)


def test_registry_has_every_baseline() -> None:
    expected = {"pop", "pop-decay", "pop-recent", "itemknn", "ease", "mf-bpr", "mf-bce", "mf-mse"}
    assert expected <= set(MODEL_REGISTRY)


def test_save_load_round_trip(fitted: Recommender, data: Interactions, tmp_path: Path) -> None:
    histories = Histories.from_interactions(data)
    fitted.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.score(histories), fitted.score(histories))
    assert not list((tmp_path / "model").glob("*.pkl"))


def test_batch_equals_single_user(fitted: Recommender, data: Interactions) -> None:
    histories = Histories.from_interactions(data)
    batch_scores = fitted.score(histories)
    batch_ids, _ = fitted.recommend(histories, k=5)
    for row in (0, 7, len(histories) - 1):
        single = histories.select(np.array([row]))
        np.testing.assert_allclose(fitted.score(single)[0], batch_scores[row], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(fitted.recommend(single, k=5)[0][0], batch_ids[row])


def test_seeded_fit_is_reproducible(fitted: Recommender, data: Interactions) -> None:
    histories = Histories.from_interactions(data)
    again = create_model(fitted.name, seed=3).fit(data)
    np.testing.assert_array_equal(again.score(histories), fitted.score(histories))


def test_fit_restarts_rather_than_resumes(fitted: Recommender, data: Interactions) -> None:
    histories = Histories.from_interactions(data)
    model = create_model(fitted.name, seed=3).fit(random_interactions(5)).fit(data)
    np.testing.assert_array_equal(model.score(histories), fitted.score(histories))


def test_recommendations_never_include_excluded_items(fitted: Recommender, data: Interactions) -> None:
    histories = Histories.from_interactions(data)
    rng = np.random.default_rng(1)
    extra = sp.random(len(histories), data.n_items, density=0.2, format="csr", random_state=rng)
    ids, scores = fitted.recommend(histories, k=data.n_items, exclude=extra)
    seen = histories.to_csr(data.n_items) + extra
    for row in range(len(histories)):
        banned = set(seen[row].indices)
        returned = [i for i in ids[row] if i >= 0]
        assert not banned & set(returned)
        # everything eligible is returned (k = catalogue size), padding only for the banned ones
        assert len(returned) == data.n_items - len(banned)
        assert np.all(np.diff(scores[row][: len(returned)]) <= 0)
    # keeping seen items makes them eligible again
    ids_all, _ = fitted.recommend(histories, k=data.n_items, exclude_seen=False)
    assert (ids_all >= 0).all()


def test_unfitted_model_refuses_to_score(data: Interactions) -> None:
    for name in ALL_MODELS:
        with pytest.raises(RuntimeError, match="not fitted"):
            create_model(name).score(Histories.from_interactions(data))


def test_partial_fit_grows_and_changes_the_model(fitted: Recommender, data: Interactions, tmp_path: Path) -> None:
    if not fitted.supports_partial_fit:
        with pytest.raises(NotImplementedError, match="partial_fit"):
            fitted.partial_fit(data)
        return
    fitted.save(tmp_path / "copy")
    model = Recommender.load(tmp_path / "copy")
    histories = Histories.from_interactions(data)
    before = model.score(histories)
    # new users and a new item (id n_items) arrive, with events later than everything before
    new = Interactions.from_arrays(
        user_ids=[data.n_users, data.n_users, 0, 1, 2],
        item_ids=[data.n_items, 3, data.n_items, data.n_items, 4],
        timestamps=np.full(5, data.timestamps.max() + 3600.0),
        n_users=data.n_users + 1,
        n_items=data.n_items + 1,
    )
    model.partial_fit(new)
    assert (model.n_users, model.n_items) == (data.n_users + 1, data.n_items + 1)
    after = model.score(histories)
    assert after.shape == (len(histories), data.n_items + 1)
    assert np.isfinite(after).all()
    assert not np.allclose(after[:, : data.n_items], before)
    if model.handles_new_items:
        ids, _ = model.recommend(histories, k=data.n_items + 1, exclude_seen=False)
        assert (ids == data.n_items).any(axis=1).all()


def test_declared_capabilities_are_there(fitted: Recommender, data: Interactions) -> None:
    """What a model declares it can do, it does; what it does not declare, it refuses by name."""
    histories = Histories.from_interactions(data)
    if fitted.provides_vectors:
        users, items = fitted.user_vectors(histories), fitted.item_vectors()
        assert items.shape[0] == fitted.n_items
        np.testing.assert_allclose(users @ items.T, fitted.score(histories), rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(NotImplementedError, match="provides_vectors"):
            fitted.user_vectors(histories)
    if not fitted.takes_item_features:
        with pytest.raises(NotImplementedError, match="takes_item_features"):
            fitted.set_item_features(np.eye(fitted.n_items))
    assert fitted.has_item_features() is False  # none were given
    context = fitted.context_length()
    assert context is None or context >= 1


def test_update_options_apply_to_one_call_and_are_then_restored(data: Interactions) -> None:
    model = create_model("mf-bpr", seed=0).fit(data)
    original = model.config
    seen: list[object] = []
    model._partial_fit = lambda interactions: seen.append(model.config)  # type: ignore[method-assign]
    options = UpdateOptions(lr_multiplier=0.5, epochs=7, batch_size=3)
    model.partial_fit(data, options=options)
    assert seen == [
        dataclasses.replace(original, learning_rate=original.learning_rate * 0.5, partial_fit_epochs=7, batch_size=3)
    ]
    assert model.config is original

    def fail(interactions: Interactions) -> None:
        raise RuntimeError("boom")

    model._partial_fit = fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        model.partial_fit(data, options=options)
    assert model.config is original, "restored after a failed call too"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("pop", UpdateOptions(lr_multiplier=2.0), "lr_multiplier: model 'pop' has no learning_rate"),
        ("itemknn", UpdateOptions(epochs=2), "epochs: model 'itemknn' has no partial_fit_epochs"),
    ],
)
def test_an_update_option_the_model_lacks_is_refused(name: str, options: UpdateOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(name).check_update_options(options)


@pytest.mark.parametrize(
    ("components", "partial_fit", "in_context", "item_features"),
    [("pop,itemknn", True, False, False), ("sasrec,itemknn", True, True, True), ("sasrec,ease", False, True, True)],
)
def test_fusion_can_what_its_components_can(
    components: str, partial_fit: bool, in_context: bool, item_features: bool
) -> None:
    fusion = create_model("fusion", components=components)
    assert (fusion.supports_partial_fit, fusion.learns_in_context, fusion.takes_item_features) == (
        partial_fit,
        in_context,
        item_features,
    )


def test_forget_users_deletes_what_the_model_keeps_per_user(
    fitted: Recommender, data: Interactions, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "model")
    model = Recommender.load(tmp_path / "model")
    histories = Histories.from_interactions(data)
    anonymous = Histories(np.full(len(histories), -1), histories.indptr, histories.items)
    before = model.score(anonymous)
    removed = model.forget_users([3, 7, 7])
    assert model.n_users == data.n_users - 2
    if model.keeps_user_parameters:
        assert removed == 2
    else:  # nothing per user: only the id space shrinks, and scores do not move
        assert removed == 0
        np.testing.assert_array_equal(model.score(anonymous), before)
    model.save(tmp_path / "forgotten")
    again = Recommender.load(tmp_path / "forgotten")
    assert again.n_users == model.n_users
    np.testing.assert_array_equal(again.score(anonymous), model.score(anonymous))
    with pytest.raises(ValueError, match="users"):
        model.forget_users([model.n_users])


def test_forget_users_renumbers_the_remaining_user_rows() -> None:
    """MF serves a known user from their own row: after forgetting user 1, user 2 is row 1 with its values."""
    data = random_interactions(1, n_users=4, n_items=10, n_events=120)
    model = create_model("mf-bpr", seed=0, n_epochs=3).fit(data)

    def users(ids: list[int]) -> Histories:  # known users, scored from their own rows (no history needed)
        return Histories(np.array(ids), np.zeros(len(ids) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    before = model.score(users([0, 1, 2, 3]))
    assert model.forget_users([1]) == 1
    # the same rows' values: a product over three rows may take another BLAS kernel than over four (last bits)
    np.testing.assert_allclose(model.score(users([0, 1, 2])), before[[0, 2, 3]], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["pop-decay", "pop-recent"])
def test_time_based_popularity_weighs_every_event_the_same_without_time(name: str, data: Interactions) -> None:
    """Order without time (``timed`` False): positions are no clock to decay or window over, so the
    time-based popularity models count like ``pop``, in ``fit`` and in ``partial_fit`` alike."""
    untimed = dataclasses.replace(data, timestamps=data.timestamps * 1e6, timed=False)
    short = {"half_life_days": 1e-9} if name == "pop-decay" else {"window_days": 1e-9}
    model = create_model(name, **short).fit(untimed)
    counts = create_model("pop").fit(untimed)
    histories = Histories.from_interactions(untimed)
    np.testing.assert_array_equal(model.score(histories), counts.score(histories))
    model.partial_fit(untimed)
    counts.partial_fit(untimed)
    np.testing.assert_array_equal(model.score(histories), counts.score(histories))
