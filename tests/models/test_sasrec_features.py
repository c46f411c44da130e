"""SASRec side features: item vectors include them, new items start from them, save/load keeps them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from liverec.data.interactions import Histories, Interactions, ItemMetadata
from liverec.models.base import Recommender
from liverec.models.sasrec import SASRec

N_GENRES, PER_GENRE = 4, 10
N_ITEMS = N_GENRES * PER_GENRE

SMALL = {
    "dim": 16,
    "max_len": 12,
    "batch_size": 32,
    "learning_rate": 5e-3,
    "warmup_steps": 0,
    "max_epochs": 8,
    "patience": 8,
    "n_threads": 1,
    "dropout": 0.0,
}


def genre_data(n_users: int = 80, length: int = 10, seed: int = 0) -> Interactions:
    """Item ``i`` has genre ``i // PER_GENRE``; each user watches random items of one genre only."""
    rng = np.random.default_rng(seed)
    genres = rng.integers(0, N_GENRES, n_users)
    items = genres[:, None] * PER_GENRE + rng.integers(0, PER_GENRE, (n_users, length))
    users = np.repeat(np.arange(n_users), length)
    return Interactions.from_arrays(
        users, items.ravel(), np.tile(np.arange(length, dtype=float), n_users), n_users=n_users, n_items=N_ITEMS
    )


def genre_features(n_items: int = N_ITEMS) -> sp.csr_matrix:
    """``[n_items, N_GENRES]``: item ``i`` has genre ``(i // PER_GENRE) % N_GENRES``; items 0 and 1 also genre 3."""
    rows = np.arange(n_items)
    matrix = sp.csr_matrix(
        (np.ones(n_items), (rows, (rows // PER_GENRE) % N_GENRES)), shape=(n_items, N_GENRES)
    ).tolil()
    matrix[0, 3] = matrix[1, 3] = 1
    return matrix.tocsr()


@pytest.fixture(scope="module")
def fitted() -> SASRec:
    return SASRec(side_features=True, seed=1, **SMALL).set_item_features(genre_features()).fit(genre_data())


def test_item_vectors_are_id_plus_mean_of_feature_embeddings(fitted: SASRec) -> None:
    network = fitted.network
    assert network is not None and network.feature_embedding is not None
    ids = network.item_embedding.weight.detach()[1:]
    feature_rows = network.feature_embedding.weight.detach()[1:]  # feature f is row f + 1
    expected = (
        ids
        + torch.from_numpy(genre_features().toarray()).float()
        @ feature_rows
        / torch.tensor(genre_features().sum(axis=1)).float()
    )
    np.testing.assert_allclose(fitted.item_vectors(), expected.numpy(), rtol=1e-5, atol=1e-6)
    # the input side uses the same vectors: embedding one row equals that row of the output table
    np.testing.assert_allclose(
        network.embed(torch.tensor([[1, 2]]))[0].detach().numpy(), expected[:2].numpy(), atol=1e-6
    )
    # and scores are dot products with them
    histories = Histories.from_lists([[0, 5, 7], [12]])
    np.testing.assert_allclose(
        fitted.score(histories), fitted.user_vectors(histories) @ fitted.item_vectors().T, rtol=1e-5, atol=1e-5
    )


def test_features_change_the_item_vectors() -> None:
    data = genre_data()
    plain = SASRec(seed=1, **SMALL).fit(data)
    with_features = SASRec(side_features=True, seed=1, **SMALL).set_item_features(genre_features()).fit(data)
    assert not np.allclose(plain.item_vectors(), with_features.item_vectors(), atol=1e-4)


def test_without_features_the_model_is_id_only_and_unchanged() -> None:
    data = genre_data()
    histories = Histories.from_interactions(data)
    plain = SASRec(seed=1, **SMALL).fit(data)
    on_but_none = SASRec(side_features=True, seed=1, **SMALL).fit(data)
    off_but_given = SASRec(side_features=False, seed=1, **SMALL).set_item_features(genre_features()).fit(data)
    for other in (on_but_none, off_but_given):
        assert other.network is not None and other.network.feature_embedding is None
        np.testing.assert_array_equal(other.score(histories), plain.score(histories))


def test_new_item_with_known_genres_starts_at_its_genres_centroid(fitted: SASRec) -> None:
    model = copy.deepcopy(fitted)
    old = model.item_vectors()
    features = sp.vstack([genre_features(), sp.csr_matrix(([1.0], ([0], [2])), shape=(1, N_GENRES))]).tocsr()
    no_genre = sp.csr_matrix((1, N_GENRES))
    model.set_item_features(sp.vstack([features, no_genre]).tocsr())
    model._grow_items(N_ITEMS + 2)
    vectors = model.item_vectors()
    assert vectors.shape == (N_ITEMS + 2, SMALL["dim"])
    np.testing.assert_array_equal(vectors[:N_ITEMS], old)  # existing items untouched
    genre_2 = old[2 * PER_GENRE : 3 * PER_GENRE]
    np.testing.assert_allclose(vectors[N_ITEMS], genre_2.mean(axis=0), atol=1e-5)  # centroid of genre 2
    np.testing.assert_allclose(vectors[N_ITEMS + 1], old.mean(axis=0), atol=1e-5)  # no genres: the mean item
    # nearer (cosine) to the genre-2 items than to any other genre's items, on average
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit[:N_ITEMS] @ unit[N_ITEMS]
    by_genre = similarity.reshape(N_GENRES, PER_GENRE).mean(axis=1)
    assert int(np.argmax(by_genre)) == 2


def test_partial_fit_grows_with_features_and_keeps_optimizer_state(fitted: SASRec) -> None:
    model = copy.deepcopy(fitted)
    network = model.network
    assert network is not None and network.feature_embedding is not None and model.optimizer is not None
    model.partial_fit(genre_data(seed=2))  # populates AdamW state
    weight, feature_weight = network.item_embedding.weight, network.feature_embedding.weight
    moment = model.optimizer.state[weight]["exp_avg"].clone()
    feature_moment = model.optimizer.state[feature_weight]["exp_avg"].clone()
    old_features = feature_weight.detach().clone()
    # one new item of a new, fifth genre (column 4) and an existing genre
    grown = sp.hstack([genre_features(), sp.csr_matrix((N_ITEMS, 1))]).tolil()
    grown.resize(N_ITEMS + 1, N_GENRES + 1)
    grown[N_ITEMS, 1] = grown[N_ITEMS, 4] = 1
    model.set_item_features(grown.tocsr())
    new_feature_weight = network.feature_embedding.weight
    assert new_feature_weight.shape[0] == N_GENRES + 2
    torch.testing.assert_close(new_feature_weight[N_GENRES + 1], old_features[1:].mean(dim=0))
    torch.testing.assert_close(model.optimizer.state[new_feature_weight]["exp_avg"][: N_GENRES + 1], feature_moment)
    users = np.repeat(np.arange(30), 3)
    new_events = Interactions.from_arrays(
        users, np.tile([10, 11, N_ITEMS], 30), np.tile(np.arange(3.0), 30), n_users=80, n_items=N_ITEMS + 1
    )
    model.partial_fit(new_events)
    assert model.n_items == N_ITEMS + 1 and model.item_vectors().shape[0] == N_ITEMS + 1
    grown_moment = model.optimizer.state[network.item_embedding.weight]["exp_avg"]
    assert grown_moment.shape[0] == N_ITEMS + 2
    assert not torch.equal(grown_moment[: N_ITEMS + 1], moment)  # updated by the new step, not reset
    assert model.optimizer.state[network.item_embedding.weight]["step"] > 0


def test_save_load_round_trip_keeps_features(fitted: SASRec, tmp_path: Path) -> None:
    histories = Histories.from_interactions(genre_data())
    fitted.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert isinstance(loaded, SASRec) and loaded.item_features is not None and fitted.item_features is not None
    np.testing.assert_array_equal(loaded.score(histories), fitted.score(histories))
    np.testing.assert_array_equal(loaded.item_vectors(), fitted.item_vectors())
    assert (loaded.item_features != fitted.item_features).nnz == 0
    assert not list((tmp_path / "model").glob("*.pkl"))


def test_bad_features_are_rejected() -> None:
    with pytest.raises(ValueError, match="features: expected a 2-D"):
        SASRec().set_item_features(np.ones((2, 2, 2)))


def test_genre_matrix_of_item_metadata() -> None:
    metadata = ItemMetadata(np.array(["a", "b", "c"], dtype=object), [("Drama", "Action"), (), ("Drama",)])
    matrix, vocabulary = metadata.genre_matrix()
    assert vocabulary == ["Action", "Drama"]
    np.testing.assert_array_equal(matrix.toarray(), [[1, 1], [0, 0], [0, 1]])


def test_one_user_fast_path_equals_the_batch_path_with_features(fitted: SASRec) -> None:
    histories = Histories.from_lists([[], [3], [1, 2, 30, 31, 0], [5, 6, 70]])  # empty, short, long, unknown item
    batch = fitted.user_vectors(histories)
    single = np.vstack([fitted.user_vectors(histories.select([r])) for r in range(len(histories))])
    np.testing.assert_allclose(single, batch, atol=1e-5)


def test_feature_names_align_later_columns_and_survive_save_load(tmp_path: Path) -> None:
    data = genre_data()
    names = ["g0", "g1", "g2", "g3"]
    model = SASRec(side_features=True, seed=1, **{**SMALL, "max_epochs": 2}).set_item_features(genre_features(), names)
    model.fit(data)
    before = model.item_vectors()
    # the catalogue now lists its categories in another order, with a new one: columns are matched by name
    shuffled = ["g2", "new", "g0", "g3", "g1"]
    order = [names.index(name) if name in names else None for name in shuffled]
    dense = genre_features().toarray()
    again = np.column_stack([dense[:, j] if j is not None else np.zeros(N_ITEMS) for j in order])
    model.set_item_features(again, shuffled)
    assert model.feature_names == ["g0", "g1", "g2", "g3", "new"]
    assert model.item_features is not None
    np.testing.assert_array_equal(model.item_features.toarray()[:, :4], dense)
    np.testing.assert_allclose(model.item_vectors(), before, atol=1e-6)  # same features, same vectors
    model.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert isinstance(loaded, SASRec) and loaded.feature_names == model.feature_names
    with pytest.raises(ValueError, match="names: expected 2 distinct names"):
        SASRec().set_item_features(np.eye(2), ["a", "a"])
