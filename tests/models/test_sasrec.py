"""SASRec: learns planted sequences with every loss, has no per-user state, grows its item table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import leave_one_out
from liverec.models.sasrec import SASRec

N_ITEMS = 30


def cycle_data(n_users: int = 120, length: int = 12, seed: int = 0) -> Interactions:
    """Each user walks the cycle 0 → 1 → ... → N_ITEMS-1 → 0 from a random start: next = previous + 1."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % N_ITEMS
    users = np.repeat(np.arange(n_users), length)
    return Interactions.from_arrays(
        users, items.ravel(), np.tile(np.arange(length, dtype=float), n_users), n_users=n_users, n_items=N_ITEMS
    )


SMALL = {
    "dim": 32,
    "max_len": 16,
    "batch_size": 32,
    "learning_rate": 5e-3,
    "warmup_steps": 0,
    "max_epochs": 60,
    "patience": 60,
    "n_threads": 1,
    "dropout": 0.0,
}


@pytest.mark.parametrize("loss", ["softmax", "sampled-softmax", "bce"])
def test_learns_planted_successor_with_every_loss(loss: str) -> None:
    data = cycle_data()
    validation, test = leave_one_out(data)
    model = SASRec(loss=loss, n_negatives=10, **SMALL).fit(test.train, validation=validation)
    ids, _ = model.recommend(test.history, k=1)
    expected = (test.history.items[test.history.indptr[1:] - 1] + 1) % N_ITEMS
    assert (ids[:, 0] == expected).mean() > 0.9
    assert model.best_validation_ndcg > 0.9


def test_early_stopping_keeps_the_best_epoch() -> None:
    data = cycle_data()
    validation, _ = leave_one_out(data)
    model = SASRec(**{**SMALL, "max_epochs": 30, "patience": 3}).fit(validation.train, validation=validation)
    scores = [entry["val_ndcg@10"] for entry in model.history]
    assert model.best_validation_ndcg == max(scores)
    assert model.best_epoch == model.history[int(np.argmax(scores))]["epoch"]
    assert model._validation_ndcg(validation.history, validation.targets) == pytest.approx(max(scores))


def test_fit_without_validation_holds_out_last_events() -> None:
    model = SASRec(**{**SMALL, "max_epochs": 5}).fit(cycle_data())
    assert len(model.history) == 5 and all(0 <= e["val_ndcg@10"] <= 1 for e in model.history)


def test_no_per_user_state() -> None:
    model = SASRec(**{**SMALL, "max_epochs": 3}).fit(cycle_data())
    same = Histories.from_lists([[3, 4, 5], [3, 4, 5], [3, 4, 6]], users=[0, 57, -1])
    scores = model.score(same)
    np.testing.assert_array_equal(scores[0], scores[1])  # different users, same history, same scores
    assert not np.allclose(scores[0], scores[2])  # one new event changes the representation
    np.testing.assert_allclose(scores, model.user_vectors(same) @ model.item_vectors().T, rtol=1e-5, atol=1e-5)


def test_history_longer_than_max_len_uses_the_most_recent_items() -> None:
    model = SASRec(**{**SMALL, "max_epochs": 2}).fit(cycle_data())
    long = list(range(N_ITEMS)) * 2
    a = model.score(Histories.from_lists([long]))
    b = model.score(Histories.from_lists([long[-SMALL["max_len"] :]]))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_partial_fit_grows_items_and_keeps_optimizer_state() -> None:
    data = cycle_data()
    model = SASRec(**{**SMALL, "max_epochs": 5}).fit(data)
    network = model.network
    assert network is not None
    old_weight = network.item_embedding.weight.detach().clone()
    old_moment = model.optimizer.state[network.item_embedding.weight]["exp_avg"].clone()  # type: ignore[union-attr]
    model._grow_items(N_ITEMS + 2)
    weight = network.item_embedding.weight
    torch.testing.assert_close(weight[: N_ITEMS + 1], old_weight)
    torch.testing.assert_close(weight[N_ITEMS + 1], old_weight[1:].mean(dim=0))
    moment = model.optimizer.state[weight]["exp_avg"]  # type: ignore[union-attr]
    torch.testing.assert_close(moment[: N_ITEMS + 1], old_moment)
    assert float(moment[N_ITEMS + 1 :].abs().sum()) == 0.0
    # new item N_ITEMS always follows item 0 in the new events: partial_fit learns it
    users = np.repeat(np.arange(40), 4)
    items = np.tile([5, 0, N_ITEMS, 7], 40)
    new = Interactions.from_arrays(users, items, np.tile(np.arange(4.0), 40), n_users=data.n_users, n_items=N_ITEMS + 2)
    model.config = type(model.config)(**{**model.config.__dict__, "partial_fit_epochs": 30})
    model.partial_fit(new)
    assert model.n_items == N_ITEMS + 2
    ids, _ = model.recommend(Histories.from_lists([[5, 0]]), k=3)
    assert N_ITEMS in ids[0]


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss: expected one of"):
        SASRec(loss="hinge")
    with pytest.raises(ValueError, match="n_heads"):
        SASRec(dim=30, n_heads=4)


def test_one_user_fast_path_equals_the_batch_path() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, size=800)
    items = rng.integers(0, 60, size=800)
    interactions = Interactions.from_arrays(users, items, n_users=40, n_items=60)
    model = SASRec(max_epochs=2, max_len=20, dim=16, seed=0).fit(interactions)
    histories = Histories.from_lists([[], [3], list(range(30)), [5, 6, 70]])  # empty, long, unknown item
    batch = model.user_vectors(histories)
    single = np.vstack([model.user_vectors(histories.select([r])) for r in range(len(histories))])
    np.testing.assert_allclose(single, batch, atol=1e-5)
