"""SASRec: learns planted sequences with every loss, has no per-user state, grows its item table."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from liverec.data.interactions import Histories, Interactions
from liverec.data.splits import leave_one_out
from liverec.models.sasrec import SASRec, SASRecConfig

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
    config = {**SMALL, "max_epochs": 30, "patience": 3, "refit": False}
    model = SASRec(**config).fit(validation.train, validation=validation)
    scores = [entry["val_ndcg@10"] for entry in model.history]
    assert model.best_validation_ndcg == max(scores)
    assert model.best_epoch == model.history[int(np.argmax(scores))]["epoch"]
    assert model.validation_ndcg(validation.history, validation.targets) == pytest.approx(max(scores))


def test_validation_ndcg_is_the_full_ranking_ndcg_of_the_validation_item_in_any_chunking() -> None:
    """Early stopping's score is the evaluation protocol's NDCG@10 (seen items excluded), however the users are
    blocked and chunked against the reused score buffer (uneven last chunks and blocks included)."""
    from liverec.evaluation.protocols import evaluate_ranking

    validation, _ = leave_one_out(cycle_data(seed=3))
    config = {**SMALL, "max_epochs": 2, "refit": False, "dropout": 0.3}  # half-learned: ranks spread out
    model = SASRec(**config).fit(validation.train, validation=validation)
    expected = evaluate_ranking(model, validation).metrics["ndcg@10"]
    assert 0.05 < expected < 0.95
    whole = model.validation_ndcg(validation.history, validation.targets)
    assert whole == pytest.approx(expected, rel=1e-9)
    for block, chunk in [(7, 3), (5, 5 * N_ITEMS), (50, N_ITEMS * 7), (11, N_ITEMS * 4), (1, 1)]:
        chunked = model.validation_ndcg(validation.history, validation.targets, block_users=block, chunk_scores=chunk)
        assert chunked == pytest.approx(expected, rel=1e-9), (block, chunk)


def test_weight_average_is_the_exponential_moving_average_and_applied_restores_the_live_weights() -> None:
    from liverec.models.sasrec.model import WeightAverage

    network = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in network.parameters()]
    average = WeightAverage(network, decay=0.75)
    expected = [p.clone() for p in start]
    for step in range(1, 30):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(float(step))
        average.update()
        decay = min(0.75, step / (step + 4))  # warming up: about the last quarter of the steps taken
        assert decay == (0.75 if step >= 12 else step / (step + 4))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, network.parameters(), strict=True)]
    live = [p.detach().clone() for p in network.parameters()]
    with average.applied():
        for parameter, value in zip(network.parameters(), expected, strict=True):
            torch.testing.assert_close(parameter.detach(), value)
    for parameter, value in zip(network.parameters(), live, strict=True):
        assert torch.equal(parameter.detach(), value)  # the live weights again, bit for bit
    average.apply()
    for parameter, value in zip(network.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.detach(), value)


def test_an_averaged_fit_judges_and_keeps_the_averaged_weights() -> None:
    data = cycle_data()
    validation, test = leave_one_out(data)
    config = {**SMALL, "max_epochs": 12, "patience": 12, "refit": False, "dropout": 0.2}
    averaged = SASRec(**config, average_decay=0.9).fit(validation.train, validation=validation)
    plain = SASRec(**config, average_decay=None).fit(validation.train, validation=validation)
    # the weights kept are the ones early stopping judged best: the average at that epoch
    assert averaged.validation_ndcg(validation.history, validation.targets) == pytest.approx(
        averaged.best_validation_ndcg
    )
    assert averaged.best_validation_ndcg > 0.9
    assert not torch.equal(averaged._net().item_embedding.weight, plain._net().item_embedding.weight)
    # decay 0 (not raised to span epochs) is no averaging at all, bit for bit
    zero = SASRec(**config, average_decay=0.0, average_epochs=None).fit(validation.train, validation=validation)
    for name, value in plain._net().state_dict().items():
        assert torch.equal(zero._net().state_dict()[name], value), name
    # a refit keeps the average of its last steps: it differs from the plain refit, and still learns the cycle
    refitted = SASRec(**{**config, "refit": True}, average_decay=0.9).fit(test.train, validation=validation)
    ids, _ = refitted.recommend(test.history, k=1)
    expected = (test.history.items[test.history.indptr[1:] - 1] + 1) % N_ITEMS
    assert refitted.refit_epochs > 0 and (ids[:, 0] == expected).mean() > 0.9
    with pytest.raises(ValueError, match="average_decay"):
        SASRecConfig(average_decay=1.0)


def test_the_average_spans_at_least_average_epochs_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The moving average's decay is ``average_decay``, raised where an epoch has so many steps that the average
    would span less than ``average_epochs`` epochs; a fit averages with that decay."""
    config = SASRecConfig(average_decay=0.99, average_epochs=2.0)
    assert config.average_decay_for(15) == 0.99  # ml-100k's 15 steps an epoch: 0.99's 100 steps span 6.7 epochs
    assert config.average_decay_for(350) == pytest.approx(1 - 1 / 700)  # Amazon Beauty's 350: two epochs
    assert dataclasses.replace(config, average_epochs=None).average_decay_for(350) == 0.99
    assert dataclasses.replace(config, average_decay=None).average_decay_for(350) is None
    with pytest.raises(ValueError, match="average_epochs"):
        SASRecConfig(average_epochs=0.0)
    from liverec.models.sasrec import model as sasrec_model

    decays: list[float] = []
    original = sasrec_model.WeightAverage.__init__

    def recording(self: object, network: torch.nn.Module, decay: float, lazy: torch.Tensor | None = None) -> None:
        decays.append(decay)
        original(self, network, decay, lazy)  # type: ignore[arg-type]

    monkeypatch.setattr(sasrec_model.WeightAverage, "__init__", recording)
    data = cycle_data()  # 60 users in batches of 16: 4 steps an epoch
    SASRec(**{**SMALL, "max_epochs": 1, "refit": False}, average_decay=0.9, average_epochs=10.0).fit(data)
    SASRec(**{**SMALL, "max_epochs": 1, "refit": False}, average_decay=0.99, average_epochs=10.0).fit(data)
    assert decays == [pytest.approx(1 - 1 / 40), 0.99]


def test_patience_steps_shortens_patience_where_an_epoch_is_many_steps() -> None:
    """``patience_steps`` counts optimiser steps: a large dataset (many batches per epoch) waits fewer epochs,
    a small one keeps ``patience``; and a fit stops after that many epochs without improvement."""
    config = SASRecConfig(patience=10, patience_steps=1000)
    assert config.epoch_patience(350) == 3  # 22,363 users at batch 64 (Amazon Beauty)
    assert config.epoch_patience(15) == 10  # 943 users at batch 64 (ml-100k): never more than patience
    assert config.epoch_patience(5000) == 1
    assert SASRecConfig(patience=10, patience_steps=None).epoch_patience(350) == 10  # off: epochs only
    assert SASRecConfig().patience_steps == 700  # the default (docs/results.md, "Session 26")
    assert SASRecConfig().epoch_patience(350) == 2
    with pytest.raises(ValueError, match="patience_steps"):
        SASRecConfig(patience_steps=0)
    data = cycle_data()
    validation, _ = leave_one_out(data)
    # 120 users at batch 24: 5 steps an epoch, so 10 steps of patience are 2 epochs
    model = SASRec(**{**SMALL, "batch_size": 24, "max_epochs": 40, "patience": 20, "patience_steps": 10})
    model.fit(validation.train, validation=validation)
    assert model._epoch_steps == 5 and model.config.epoch_patience(5) == 2
    assert len(model.history) - model.best_epoch == 2 or len(model.history) == 40


def test_fit_without_validation_holds_out_last_events() -> None:
    model = SASRec(**{**SMALL, "max_epochs": 5}).fit(cycle_data())
    assert len(model.history) == 5 and all(0 <= e["val_ndcg@10"] <= 1 for e in model.history)


@pytest.mark.parametrize("refit_scale", [1.0, 1.5])
def test_refit_trains_afresh_on_the_validation_events_for_the_chosen_epoch_count(refit_scale: float) -> None:
    data = cycle_data(n_users=60)
    validation, test = leave_one_out(data)
    config = {**SMALL, "max_epochs": 12, "patience": 4, "dropout": 0.2, "refit_scale": refit_scale}
    refit = SASRec(**config).fit(test.train, validation=validation)
    selected = SASRec(**config, refit=False).fit(test.train, validation=validation)
    assert refit.best_epoch == selected.best_epoch > 0
    epochs = math.ceil(selected.best_epoch * refit_scale)
    assert refit.refit_epochs == epochs
    # the selection's record, not the refit's
    assert [e["val_ndcg@10"] for e in refit.history] == [e["val_ndcg@10"] for e in selected.history]
    # the same as training from scratch on training + validation events for that many epochs
    everything = Interactions.concat([test.train, validation.test_events])
    fresh = SASRec(**{**config, "max_epochs": epochs, "eval_every": epochs}, refit=False)
    fresh.fit(everything, validation=validation)
    for name, value in fresh._net().state_dict().items():
        torch.testing.assert_close(refit._net().state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(refit._net().item_embedding.weight, selected._net().item_embedding.weight)


def test_a_training_strategy_sees_every_epoch_and_step_and_changes_nothing_by_itself() -> None:
    from liverec.models.sasrec import LocalTraining, SASRecNetwork

    class Counting(LocalTraining):
        def __init__(self) -> None:
            self.epochs, self.steps, self.validations = 0, 0, 0

        def step(
            self,
            optimizer: torch.optim.Optimizer,
            loss: torch.Tensor,
            weight: float,
            clip_norm: float | None = None,
            rows: torch.Tensor | None = None,
        ) -> None:
            self.steps += 1
            super().step(optimizer, loss, weight, clip_norm, rows)

        def finish_epoch(self, network: SASRecNetwork, total: float, count: int, rng: np.random.Generator) -> float:
            self.epochs += 1
            return super().finish_epoch(network, total, count, rng)

        def validation_ndcg(self, model: SASRec, history: Histories, targets: Histories) -> float:
            self.validations += 1
            return super().validation_ndcg(model, history, targets)

    validation, test = leave_one_out(cycle_data(n_users=60))
    config = {**SMALL, "max_epochs": 3, "patience": 3, "refit": False}
    counting = Counting()
    model = SASRec(training=counting, **config).fit(test.train, validation=validation)
    plain = SASRec(**config).fit(test.train, validation=validation)
    assert counting.epochs == counting.validations == 3
    assert counting.steps == model._steps == 3 * 2  # 60 users, batches of 32
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in model.history] == [
        {k: v for k, v in e.items() if k != "seconds"} for e in plain.history
    ]
    np.testing.assert_array_equal(model.item_vectors(), plain.item_vectors())


def _follow_five_data() -> Interactions:
    """80 users' random walks over items 6-28 ending 5, 29, then one more: 29 is every validation target."""
    rng = np.random.default_rng(1)
    users, items, times = [], [], []
    for user in range(80):
        walk = [int(rng.integers(6, 29)) for _ in range(8)] + [5, 29, int(rng.integers(6, 29))]
        users += [user] * len(walk)
        items += walk
        times += list(range(len(walk)))
    return Interactions.from_arrays(users, items, np.array(times, dtype=float), n_users=80, n_items=N_ITEMS)


def test_refit_learns_what_only_the_validation_events_show() -> None:
    """Item 29 occurs only as validation targets, always after item 5: the refit model learns to follow 5
    with it; the early-stopped model never saw it."""
    data = _follow_five_data()
    validation, test = leave_one_out(data)
    assert set(validation.targets.items.tolist()) == {29} and 29 not in test.train.item_ids
    after_five = Histories.from_lists([[7, 12, 5]])
    config = {**SMALL, "max_epochs": 20, "patience": 20}
    refit = SASRec(**config).fit(test.train, validation=validation)
    selected = SASRec(**config, refit=False).fit(test.train, validation=validation)
    assert refit.recommend(after_five, k=1)[0][0, 0] == 29
    assert selected.recommend(after_five, k=5)[0][0].tolist().count(29) == 0


def test_a_validation_sample_early_stops_and_the_other_users_learn_their_validation_events() -> None:
    """With more held-out users than ``validation_users``, a sample of them early-stops and every other user
    trains on its held-out event from the start: no refit, and item 29 (a validation target only) is learned."""
    from liverec.models.sasrec import LocalTraining

    class Counting(LocalTraining):
        def __init__(self) -> None:
            self.rows: list[int] = []

        def validation_ndcg(self, model: SASRec, history: Histories, targets: Histories) -> float:
            self.rows.append(len(history))
            return super().validation_ndcg(model, history, targets)

    data = _follow_five_data()
    validation, test = leave_one_out(data)
    config = {**SMALL, "max_epochs": 20, "patience": 20, "validation_users": 20}
    counting = Counting()
    model = SASRec(training=counting, **config).fit(test.train, validation=validation)
    assert model.refit_epochs == 0 and model.best_epoch > 0
    assert counting.rows == [20] * 20  # every epoch judged on the sample alone
    assert model.recommend(Histories.from_lists([[7, 12, 5]]), k=1)[0][0, 0] == 29
    # the same without a validation split: a sample of the users' last events
    unsplit = SASRec(**config).fit(test.train)
    assert unsplit.refit_epochs == 0 and unsplit.best_epoch > 0


def test_refit_without_validation_uses_every_event_and_needs_a_chosen_epoch() -> None:
    data = cycle_data(n_users=40)
    model = SASRec(**{**SMALL, "max_epochs": 4, "patience": 4}).fit(data)
    assert model.refit_epochs == model.best_epoch > 0  # held out each user's last event, then refit on all
    with pytest.raises(RuntimeError, match="no epoch count"):
        SASRec(**SMALL).refit_on(data)


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


def _loss_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of network rows (left-padded; row 0 repeats item row 3), hidden states at its inputs, an item table."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.tensor([[0, 3, 5, 3, 2], [4, 1, 2, 5, 6]])
    hidden = torch.randn(int((batch[:, :-1] > 0).sum()), 8, generator=generator)
    items = torch.randn(6, 8, generator=generator)
    return batch, hidden, items


def _hand_loss(batch: torch.Tensor, hidden: torch.Tensor, items: torch.Tensor, k: int, exclude_seen: bool) -> float:
    """Mean over positions of the mean cross-entropy of the next ``k`` items, seen items out of the softmax."""
    inputs = batch[:, :-1]
    logits = (hidden @ items.T).detach().double().numpy()
    per_position, n = [], 0
    for b, p in zip(*np.nonzero(inputs.numpy()), strict=True):
        prefix = {int(x) - 1 for x in inputs[b, : p + 1] if x > 0}
        terms = []
        for j in range(1, k + 1):
            if p + j < batch.shape[1]:
                target = int(batch[b, p + j]) - 1
                keep = [i for i in range(items.shape[0]) if i == target or not (exclude_seen and i in prefix)]
                terms.append(np.log(np.exp(logits[n, keep]).sum()) - logits[n, target])
        per_position.append(np.mean(terms))
        n += 1
    return float(np.mean(per_position))


def _model_loss(model: SASRec, batch: torch.Tensor, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    inputs, targets = batch[:, :-1], batch[:, 1:]
    return model._loss(hidden, targets[inputs > 0], np.random.default_rng(0), items, *model._loss_context(batch))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("exclude_seen", [False, True])
def test_seen_exclusion_and_future_window_equal_a_hand_computed_loss(k: int, exclude_seen: bool) -> None:
    batch, hidden, items = _loss_inputs()
    loss = _model_loss(SASRec(loss_exclude_seen=exclude_seen, future_window=k), batch, hidden, items)
    assert float(loss) == pytest.approx(_hand_loss(batch, hidden, items, k, exclude_seen), rel=1e-5)


def test_future_window_one_is_the_plain_loss_exactly() -> None:
    batch, hidden, items = _loss_inputs()
    plain_config = {"loss_exclude_seen": False, "future_window": 1}
    plain = _model_loss(SASRec(**plain_config), batch, hidden, items)
    assert SASRec(**plain_config)._loss_context(batch) == (None, None)
    assert float(_model_loss(SASRec(loss_exclude_seen=False), batch, hidden, items)) != float(plain)
    targets = batch[:, 1:][batch[:, :-1] > 0] - 1
    assert float(plain) == pytest.approx(float(F.cross_entropy(hidden @ items.T, targets)), rel=1e-6)


def test_seen_items_get_no_gradient_and_a_repeated_target_keeps_its_own() -> None:
    model = SASRec(loss_exclude_seen=True, future_window=1)
    items = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    hidden = torch.randn(1, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    _model_loss(model, torch.tensor([[1, 2]]), hidden, items).backward()  # has seen item 0, target item 1
    assert items.grad is not None and hidden.grad is not None
    assert float(items.grad[0].abs().sum()) == 0.0 and bool((items.grad[1:].abs().sum(1) > 0).all())
    logits = hidden.detach() @ items.detach().T
    expected = torch.softmax(logits[0, 1:], dim=0) @ items.detach()[1:] - items.detach()[1]
    torch.testing.assert_close(hidden.grad[0], expected)
    # zero hidden: every logit 0, so each loss is log(items left); the last target (item 1) repeats
    batch = torch.tensor([[1, 2, 3, 2]])  # seen {0}, target 1: 4 left; {0, 1} -> 2: 3 left; {0, 1, 2} -> 1: 3 left
    loss = _model_loss(model, batch, torch.zeros(3, 4), items.detach())
    assert float(loss) == pytest.approx(float(np.log([4.0, 3.0, 3.0]).mean()), rel=1e-6)


def test_masked_losses_learn_a_planted_successor() -> None:
    data = cycle_data()
    validation, test = leave_one_out(data)
    model = SASRec(loss_exclude_seen=True, future_window=2, **SMALL).fit(test.train, validation=validation)
    ids, _ = model.recommend(test.history, k=1)
    expected = (test.history.items[test.history.indptr[1:] - 1] + 1) % N_ITEMS
    assert (ids[:, 0] == expected).mean() > 0.9


def test_bad_refit_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"refit_scale: expected a number >= 1, got 0\.5"):
        SASRec(refit_scale=0.5)
    assert SASRecConfig(refit_scale=1.25).refit_epochs(8) == 10 and SASRecConfig(refit_scale=1.0).refit_epochs(8) == 8


def test_bad_loss_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="future_window: expected a positive integer, got 0"):
        SASRec(future_window=0)
    with pytest.raises(ValueError, match="need loss='softmax'"):
        SASRec(loss="bce", loss_exclude_seen=True)
    with pytest.raises(ValueError, match="need loss='softmax'"):
        SASRec(loss="sampled-softmax", future_window=2)


def test_the_full_softmax_defaults_to_seen_exclusion_and_a_window_of_two() -> None:
    assert SASRec().config.excludes_seen and SASRec().config.window == 2
    for loss in ("sampled-softmax", "bce"):  # the other losses keep the plain next-item loss unless asked
        config = SASRec(loss=loss).config
        assert not config.excludes_seen and config.window == 1
        with pytest.raises(ValueError, match="need loss='softmax'"):
            SASRec(loss=loss, future_window=2)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_one_minus_p_scaled_and_passes_its_mask_to_the_gradient(p: float) -> None:
    from liverec.models.sasrec import Dropout

    torch.manual_seed(0)
    x = torch.randn(200_000, requires_grad=True)
    layer = Dropout(p)
    out = layer(x)
    kept = out.detach() != 0
    # 200k draws: the kept share's standard deviation is about 0.001
    assert float(kept.float().mean()) == pytest.approx(1 - p, abs=0.005)
    torch.testing.assert_close(out.detach()[kept], x.detach()[kept] / (1 - p))
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    assert layer.eval()(x) is x and Dropout(0.0)(x) is x  # evaluation, and p = 0: the input itself


def test_window_takes_later_items_only_while_tied_in_time() -> None:
    """Given ``tied``, the j-th item after a position is a target only if items 1..j are tied in time."""
    batch = torch.tensor([[1, 2, 3, 4, 5, 6]])  # one row, no padding: 5 input positions
    tied = torch.tensor([[False, False, True, True, False, False]])  # columns 2 and 3 share column 1's time
    _, two = SASRec(future_window=2)._loss_context(batch, tied)
    assert two is not None
    assert two.tolist() == [[2, 3], [3, 4], [4, 0], [5, 0], [6, 0]]
    _, three = SASRec(future_window=3)._loss_context(batch, tied)
    assert three is not None
    assert three.tolist() == [[2, 3, 4], [3, 4, 0], [4, 0, 0], [5, 0, 0], [6, 0, 0]]
    _, every = SASRec(future_window=2)._loss_context(batch)  # window_gap_s=None: whatever the times
    assert every is not None and every.tolist() == [[2, 3], [3, 4], [4, 5], [5, 6], [6, 0]]


def test_tie_flags_come_from_timestamps() -> None:
    from liverec.models.sasrec.batching import _tie_flags

    histories = Histories(np.array([0, 1]), np.array([0, 3, 5]), np.array([4, 5, 6, 7, 8]), np.array([1, 1, 2, 2, 2.0]))
    assert _tie_flags(histories).items.tolist() == [0, 1, 0, 1, 1]  # a row's first flag is never read
    assert _tie_flags(histories, gap_s=1.0).items.tolist() == [0, 1, 1, 1, 1]
    assert _tie_flags(Histories.from_lists([[1, 2, 3]])).items.tolist() == [0, 0, 0]  # no timestamps: no ties


def test_without_ties_the_default_window_trains_as_the_next_item_loss() -> None:
    data = cycle_data()  # every user's events are a second apart: make it two minutes
    data = Interactions.from_arrays(data.user_ids, data.item_ids, data.timestamps * 120, n_users=120, n_items=N_ITEMS)
    validation, test = leave_one_out(data)
    settings = {**SMALL, "max_epochs": 3, "patience": 3, "dropout": 0.2, "seed": 1}
    default = SASRec(**settings).fit(test.train, validation=validation)
    next_item = SASRec(**settings, future_window=1).fit(test.train, validation=validation)
    every = SASRec(**settings, window_gap_s=None).fit(test.train, validation=validation)
    np.testing.assert_array_equal(default.user_vectors(test.history), next_item.user_vectors(test.history))
    assert not np.array_equal(default.user_vectors(test.history), every.user_vectors(test.history))
    with pytest.raises(ValueError, match="window_gap_s: expected a number >= 0 or None, got -1"):
        SASRec(window_gap_s=-1)


def test_order_without_time_trains_as_the_next_item_loss_and_shuffles_nothing() -> None:
    """A sequences file (``timed`` False, positions 1 apart): the 60-second window must not read the
    positions as seconds, and no run is shuffled; the same positions read as seconds tie every item."""
    data = cycle_data()
    untimed = dataclasses.replace(data, timed=False)
    validation, test = leave_one_out(untimed)
    settings = {**SMALL, "max_epochs": 3, "patience": 3, "dropout": 0.2, "seed": 1}
    default = SASRec(**settings).fit(test.train, validation=validation)
    next_item = SASRec(**settings, future_window=1, shuffle_gap_s=None).fit(test.train, validation=validation)
    np.testing.assert_array_equal(default.user_vectors(test.history), next_item.user_vectors(test.history))
    timed_validation, timed_test = leave_one_out(data)  # the same positions taken as seconds: all within 60 s
    as_seconds = SASRec(**settings).fit(timed_test.train, validation=timed_validation)
    assert not np.array_equal(default.user_vectors(test.history), as_seconds.user_vectors(test.history))
    # the window over order without time is a setting: every next future_window items, whatever the gap
    window = SASRec(**settings, untimed_window=True).fit(test.train, validation=validation)
    any_gap = SASRec(**settings, window_gap_s=None).fit(test.train, validation=validation)
    np.testing.assert_array_equal(window.user_vectors(test.history), any_gap.user_vectors(test.history))
    np.testing.assert_array_equal(window.user_vectors(test.history), as_seconds.user_vectors(test.history))


def _record_loss_targets(model: SASRec) -> list[np.ndarray]:
    """Wrap the model's loss to record the items (model ids) it is asked to predict at each step."""
    recorded: list[np.ndarray] = []
    loss = model._loss

    def recording(hidden: torch.Tensor, targets: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        assert len(hidden) == len(targets)
        recorded.append(targets.numpy() - 1)
        return loss(hidden, targets, *args, **kwargs)  # type: ignore[arg-type]

    model._loss = recording  # type: ignore[method-assign]
    return recorded


def test_partial_fit_learns_only_the_marked_events_and_reads_the_others_as_context() -> None:
    data = cycle_data(n_users=40, length=8)
    model = SASRec(**{**SMALL, "max_epochs": 2}).fit(data)
    # each user's 8 known events again, then 3 new ones; only the new ones are to be learned
    users = np.repeat(np.arange(40), 11)
    last = data.item_ids.reshape(40, 8)[:, -1]
    new_items = (last[:, None] + np.arange(1, 4)[None, :]) % N_ITEMS
    items = np.concatenate([data.item_ids.reshape(40, 8), new_items], axis=1).ravel()
    times = np.tile(np.arange(11.0), 40)
    learn = np.tile(np.arange(11) >= 8, 40)
    batch = Interactions.from_arrays(users, items, times, n_users=40, n_items=N_ITEMS)
    recorded = _record_loss_targets(model)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}  # type: ignore[union-attr]
    model.partial_fit(batch, learn)
    np.testing.assert_array_equal(np.sort(np.concatenate(recorded)), np.sort(new_items.ravel()))
    # the context changed what was learned: the same new events without their context train other weights
    context_free = SASRec(**{**SMALL, "max_epochs": 2}).fit(data)
    context_free.partial_fit(batch.subset(learn))
    after = model.network.state_dict()  # type: ignore[union-attr]
    assert not torch.equal(after["item_embedding.weight"], context_free.network.state_dict()["item_embedding.weight"])  # type: ignore[union-attr]
    assert not torch.equal(after["item_embedding.weight"], before["item_embedding.weight"])
    # every event marked: the plain partial_fit, bit for bit
    plain, marked = (SASRec(**{**SMALL, "max_epochs": 2}).fit(data) for _ in range(2))
    plain.partial_fit(batch)
    marked.partial_fit(batch, np.ones(len(batch), dtype=bool))
    for name, tensor in plain.network.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, marked.network.state_dict()[name]), name  # type: ignore[union-attr]


def test_partial_fit_rejects_a_learn_mask_of_the_wrong_shape() -> None:
    data = cycle_data(n_users=10, length=4)
    model = SASRec(**{**SMALL, "max_epochs": 1}).fit(data)
    with pytest.raises(ValueError, match=r"learn: expected 40 bools"):
        model.partial_fit(data, np.ones(39, dtype=bool))
    with pytest.raises(ValueError, match=r"learn: expected 40 bools"):
        model.partial_fit(data, np.ones(40, dtype=np.int64))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=12), min_size=1, max_size=6),
    gap=st.sampled_from([0.0, 1.0, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_shuffled_runs_reorder_items_only_within_runs_of_close_times(
    rows: list[list[int]], gap: float, seed: int
) -> None:
    """Each row's time steps (0-3 s apart) cut it into runs; every item stays in its run."""
    from liverec.models.sasrec.batching import _shuffled_runs

    timestamps = np.concatenate([np.cumsum(row, dtype=float) for row in rows])
    indptr = np.concatenate([[0], np.cumsum([len(row) for row in rows])])
    histories = Histories(np.arange(len(rows)), indptr, np.arange(len(timestamps)), timestamps)
    order = _shuffled_runs(histories, gap, np.random.default_rng(seed))
    assert sorted(order.tolist()) == list(range(len(timestamps)))  # a permutation
    run = np.zeros(len(timestamps), dtype=np.int64)  # the run of each position, worked out item by item
    for r in range(len(rows)):
        for i in range(indptr[r], indptr[r + 1]):
            new_run = i == indptr[r] or timestamps[i] - timestamps[i - 1] > gap
            run[i] = (run[i - 1] if i else 0) + (1 if new_run and i else 0)
    np.testing.assert_array_equal(run[order], run)  # position i takes an item from its own run


def test_shuffled_runs_draw_every_order_and_nothing_without_ties() -> None:
    from liverec.models.sasrec.batching import _shuffled_runs

    tied = Histories(np.array([0]), np.array([0, 4]), np.array([7, 8, 9, 5]), np.array([0.0, 5, 5, 5]))
    rng = np.random.default_rng(0)
    orders = {tuple(tied.items[_shuffled_runs(tied, 0.0, rng)]) for _ in range(200)}
    assert len(orders) == 6 and all(order[0] == 7 for order in orders)  # 3! orders of the tied three
    apart = Histories(np.array([0]), np.array([0, 3]), np.array([7, 8, 9]), np.array([0.0, 5, 10]))
    state = rng.bit_generator.state
    assert _shuffled_runs(apart, 4.0, rng).tolist() == [0, 1, 2]
    assert rng.bit_generator.state == state  # nothing drawn: training is exactly as without shuffling
    no_times = Histories.from_lists([[1, 2, 3]])
    assert _shuffled_runs(no_times, 60.0, rng).tolist() == [0, 1, 2]


def test_shuffling_tied_items_unlearns_their_logged_order() -> None:
    """Ten (x, a, b) triples; each user walks four of them: x, then two minutes later a and b at one
    timestamp, always logged a then b, then the next triple. After a history ending in x, a model
    trained on the log's order puts a well above b; shuffling the tie each epoch teaches that either
    may come first, so their scores draw level. Without ties shuffling changes nothing at all.
    """
    rng = np.random.default_rng(0)
    n_users, triples = 300, rng.permutation(N_ITEMS)[:30].reshape(10, 3)
    walked = np.argsort(rng.random((n_users, 10)), axis=1)[:, :4]  # the four triples of each user
    sequences = triples[walked].reshape(n_users, 12)
    users = np.repeat(np.arange(n_users), 12)
    steps = np.repeat(np.arange(4) * 240.0, 3)
    times = np.tile(steps + np.tile([0.0, 120.0, 120.0], 4), n_users)
    data = Interactions.from_arrays(users, sequences.ravel(), times, n_users=n_users, n_items=N_ITEMS)
    history = Histories.from_lists(sequences[:, :4].tolist())  # x, a, b, then the second triple's x
    a, b = triples[walked[:, 1], 1], triples[walked[:, 1], 2]
    # judged once, after the last epoch, so the refit trains on every event for all 40 epochs
    settings = {**SMALL, "max_epochs": 40, "eval_every": 40, "future_window": 1, "loss_exclude_seen": False}
    gaps = {}
    for shuffle in (None, 0.0):
        scores = SASRec(**settings, shuffle_gap_s=shuffle).fit(data).score(history)
        gaps[shuffle] = scores[np.arange(n_users), a] - scores[np.arange(n_users), b]
    assert (gaps[None] > 3.0).all()  # the logged order, learned: a far ahead of b for every user
    assert np.median(np.abs(gaps[0.0])) < 1.0 and np.abs(gaps[0.0]).max() < gaps[None].min()  # level
    apart = Interactions.from_arrays(users, sequences.ravel(), np.arange(len(users), dtype=float), n_users=n_users)
    short = {**settings, "max_epochs": 3, "eval_every": 3}
    plain = SASRec(**short).fit(apart)
    shuffled = SASRec(**short, shuffle_gap_s=0.0).fit(apart)
    np.testing.assert_array_equal(plain.user_vectors(history), shuffled.user_vectors(history))
    with pytest.raises(ValueError, match="shuffle_gap_s: expected a number >= 0 or None, got -1"):
        SASRec(shuffle_gap_s=-1)
