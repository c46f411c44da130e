"""SASRec's online updates at large catalogues: the update loss (``update_loss``), the row-wise AdamW step
of a sampled-softmax update, the growing item table, and the negative draw updates share with training."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from liverec.data.interactions import Histories, Interactions
from liverec.models.base import Recommender
from liverec.models.sasrec import SASRec, SASRecConfig
from liverec.models.sasrec.loss import NegativeSampling

N_ITEMS = 30

SMALL = {
    "dim": 16,
    "max_len": 16,
    "batch_size": 16,
    "learning_rate": 5e-3,
    "warmup_steps": 0,
    "max_epochs": 3,
    "n_threads": 1,
    "dropout": 0.0,
}


def cycle_data(n_users: int = 60, length: int = 10, n_items: int = N_ITEMS, seed: int = 0) -> Interactions:
    """Each user walks the cycle 0 → 1 → ... → N_ITEMS-1 → 0 from a random start, in a catalogue of ``n_items``."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % N_ITEMS
    users = np.repeat(np.arange(n_users), length)
    times = np.tile(np.arange(length, dtype=float), n_users)
    return Interactions.from_arrays(users, items.ravel(), times, n_users=n_users, n_items=n_items)


def test_the_update_loss_is_the_training_loss_unless_set() -> None:
    config = SASRecConfig(future_window=3, clip_norm=None)
    assert config.for_updates() is config
    assert SASRecConfig().for_updates() == SASRecConfig(clip_norm=None)  # updates do not clip: the fit's setting
    assert SASRecConfig(loss="sampled-softmax").for_updates().loss == "sampled-softmax"
    sampled = SASRecConfig(update_loss="sampled-softmax", future_window=3).for_updates()
    assert sampled.loss == "sampled-softmax"
    assert (sampled.window, sampled.excludes_seen) == (1, False)  # the sampled loss's own defaults
    assert SASRecConfig(update_loss="softmax").for_updates().window == 2
    with pytest.raises(ValueError, match="update_loss: expected None or one of"):
        SASRecConfig(update_loss="sampled")


def test_auto_is_the_full_softmax_up_to_softmax_max_items_and_the_sampled_one_above() -> None:
    config = SASRecConfig()
    assert (config.loss, config.softmax_max_items, config.n_negatives) == ("auto", 4096, 2048)
    assert config.training_loss(4096) == "softmax" and config.training_loss(4097) == "sampled-softmax"
    assert SASRecConfig(loss="softmax").training_loss(10**6) == "softmax"  # a loss set is the loss used
    windowed = SASRecConfig(future_window=3)
    assert windowed.with_loss("softmax").window == 3  # the full softmax keeps its settings
    assert windowed.with_loss("sampled-softmax").window == 1  # the sampled one its own defaults
    with pytest.raises(ValueError, match="loss_exclude_seen and future_window > 1 need loss='softmax'"):
        SASRecConfig(loss="sampled-softmax", future_window=2)
    with pytest.raises(ValueError, match="update_loss: expected None or one of softmax"):
        SASRecConfig(update_loss="auto")


def test_an_auto_fit_trains_and_updates_with_the_loss_its_catalogue_chose(tmp_path: Path) -> None:
    """Above ``softmax_max_items`` the fit is the sampled softmax's, bit for bit; the choice is saved with the model
    and updates keep it when the catalogue grows past the threshold later."""
    data = cycle_data()
    settings = {**SMALL, "n_negatives": 8, "softmax_max_items": N_ITEMS - 1}
    auto = SASRec(**settings).fit(data)
    sampled = SASRec(**{**settings, "loss": "sampled-softmax"}).fit(data)
    assert auto.training_loss == "sampled-softmax" and auto.config.loss == "auto"
    for name, tensor in auto.network.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, sampled.network.state_dict()[name]), name  # type: ignore[union-attr]
    small = SASRec(**{**SMALL, "softmax_max_items": N_ITEMS}).fit(data)  # at the threshold: the full softmax
    assert small.training_loss == "softmax"
    small.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert isinstance(loaded, SASRec) and loaded.training_loss == "softmax"
    grown = cycle_data(n_items=N_ITEMS * 2)  # the catalogue grows past the threshold
    reference = Recommender.load(tmp_path / "model")
    assert isinstance(reference, SASRec)
    reference.config = dataclasses.replace(reference.config, loss="softmax")  # the full softmax, set
    forgetful = Recommender.load(tmp_path / "model")
    assert isinstance(forgetful, SASRec)
    forgetful.training_loss = None  # as if the choice were not kept: the grown catalogue would choose again
    for model in (loaded, reference, forgetful):
        model.partial_fit(grown)  # grows the table
        model.partial_fit(grown)  # the first update past the threshold
    states = [model.network.state_dict() for model in (loaded, reference, forgetful)]  # type: ignore[union-attr]
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
    assert not torch.equal(states[0]["item_embedding.weight"], states[2]["item_embedding.weight"])


@pytest.mark.parametrize(("n_items", "size"), [(500, 64), (100_000, 2048)])  # the second draws in sorted key order
def test_negative_sampling_draws_what_rng_choice_draws(n_items: int, size: int) -> None:
    log_q = np.log(np.random.default_rng(1).dirichlet(np.ones(n_items)))
    sampling = NegativeSampling(log_q)
    drawn, chosen = np.random.default_rng(7), np.random.default_rng(7)
    probabilities = np.exp(log_q)
    expected = chosen.choice(n_items, size=size, p=probabilities / probabilities.sum())
    np.testing.assert_array_equal(sampling.draw(drawn, size), expected)
    assert drawn.random() == chosen.random()  # the generator is left where choice leaves it


def test_by_default_an_update_is_the_training_losss_bit_for_bit() -> None:
    data = cycle_data()
    auto, softmax = (SASRec(**SMALL, update_loss=name).fit(data) for name in (None, "softmax"))
    auto.partial_fit(data)
    softmax.partial_fit(data)
    for name, tensor in auto.network.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, softmax.network.state_dict()[name]), name  # type: ignore[union-attr]


def test_a_row_wise_step_is_adamw_on_the_rows_it_steps() -> None:
    model = SASRec(**SMALL, weight_decay=0.01).fit(cycle_data())
    weight = model.network.item_embedding.weight  # type: ignore[union-attr]
    state = model.optimizer.state[weight]  # type: ignore[union-attr]
    dense = torch.nn.Parameter(weight.detach().clone())
    reference = torch.optim.AdamW([dense], lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    reference.state[dense] = {key: value.clone() for key, value in state.items()}
    for group in model.optimizer.param_groups:  # type: ignore[union-attr]
        group["lr"] = 3e-3
    grad = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    dense.grad = grad.clone()
    reference.step()
    model._step_item_rows(torch.arange(len(weight)), grad)
    torch.testing.assert_close(weight.detach(), dense.detach(), rtol=0, atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(state[key], reference.state[dense][key], rtol=0, atol=1e-9)


def test_a_sampled_update_steps_only_the_rows_it_used() -> None:
    data = cycle_data(n_items=3_000)  # the events use 30 of 3,000 items
    model = SASRec(**SMALL, loss="sampled-softmax", n_negatives=3).fit(data)
    weight = model.network.item_embedding.weight  # type: ignore[union-attr]
    before = weight.detach().clone()
    moments = model.optimizer.state[weight]["exp_avg"].clone()  # type: ignore[union-attr]
    used_rows: list[torch.Tensor] = []
    row_wise_loss = model._row_wise_loss

    def recording(*args: object) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        result = row_wise_loss(*args)  # type: ignore[arg-type]
        used_rows.append(result[2])  # the step's rows: the batch's items, its negatives, padding
        return result

    model._row_wise_loss = recording  # type: ignore[method-assign]
    model.partial_fit(data)
    weight = model.network.item_embedding.weight  # type: ignore[union-attr]
    assert used_rows, "the update took no row-wise step"
    used = np.unique(torch.cat(used_rows).numpy())
    assert len(used) < 31 + 3 * len(used_rows)  # at most the 30 items, padding and each step's 3 negatives
    changed = np.flatnonzero((weight.detach() != before).any(dim=1).numpy())
    assert set(changed) <= set(used)
    assert len(changed) > N_ITEMS // 2  # the batch's items did move
    unused = np.setdiff1d(np.arange(len(before)), used)
    assert torch.equal(weight.detach()[unused], before[unused])  # bit-identical, with their moments
    assert torch.equal(model.optimizer.state[weight]["exp_avg"][unused], moments[unused])  # type: ignore[union-attr]


@pytest.mark.parametrize("row_wise_from", [None, 1])  # an update after a dense fit, and after a row-wise one
def test_a_row_wise_step_takes_its_rows_values_from_the_losss_leaf_as_a_gather_would(row_wise_from: int | None) -> None:
    """The loss gathers the rows it uses into its leaf; the step reuses those values instead of gathering again
    (nothing writes the table between the two): the weights and moments are those of a second gather, bit for bit,
    with a moving average and skipped steps in play (a row-wise fit) or not (an update)."""
    data = cycle_data(n_items=200)
    settings = {**SMALL, "dropout": 0.2, "loss": "sampled-softmax", "n_negatives": 8, "row_wise_from": row_wise_from}
    reusing = SASRec(**settings).fit(data)
    gathering = copy.deepcopy(reusing)
    step_item_rows = gathering._step_item_rows

    def gather_again(rows: torch.Tensor, grad: torch.Tensor, average: object = None, values: object = None) -> None:
        assert values is not None, "the loss's leaf was not passed on"
        step_item_rows(rows, grad, average)  # type: ignore[arg-type]

    gathering._step_item_rows = gather_again  # type: ignore[method-assign]
    for model in (reusing, gathering):
        torch.manual_seed(0)  # the dropout masks
        model.partial_fit(cycle_data(n_users=30, seed=7, n_items=210))
        if row_wise_from is not None:  # and a row-wise fit (its average, its skipped steps)
            model.fit(data)
    for name, tensor in reusing.network.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, gathering.network.state_dict()[name]), name  # type: ignore[union-attr]
    states = [model.optimizer.state[model.network.item_embedding.weight] for model in (reusing, gathering)]  # type: ignore[union-attr]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(states[0][key], states[1][key]), key


def test_sampled_row_wise_updates_learn_a_planted_successor() -> None:
    data = cycle_data(n_users=120, length=12)
    model = SASRec(**{**SMALL, "max_epochs": 20}, update_loss="sampled-softmax", n_negatives=10).fit(data)
    # new item N_ITEMS always follows item 0 in the new events: the sampled, row-wise updates learn it
    users = np.repeat(np.arange(40), 4)
    items = np.tile([5, 0, N_ITEMS, 7], 40)
    new = Interactions.from_arrays(users, items, np.tile(np.arange(4.0), 40), n_users=data.n_users, n_items=N_ITEMS + 2)
    history = Histories.from_lists([[5, 0]])
    model.config = dataclasses.replace(model.config, partial_fit_epochs=30)
    model.partial_fit(new)
    assert model.n_items == N_ITEMS + 2
    ids, _ = model.recommend(history, k=3)
    assert N_ITEMS in ids[0]


def test_update_negatives_sets_the_negatives_of_the_update_steps_alone() -> None:
    assert SASRecConfig().for_updates().n_negatives == 2048  # unset: the training's
    assert SASRecConfig(update_negatives=64).for_updates().n_negatives == 64
    assert SASRecConfig(update_loss="sampled-softmax", update_negatives=8).for_updates().loss == "sampled-softmax"
    with pytest.raises(ValueError, match="update_negatives: expected a positive integer or None, got 0"):
        SASRecConfig(update_negatives=0)
    data = cycle_data(n_items=300)
    fitted = SASRec(**SMALL, loss="sampled-softmax", n_negatives=20).fit(data)

    def updated(**settings: int) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(fitted)
        model.config = dataclasses.replace(model.config, **settings)
        model.partial_fit(data)
        assert model.config.n_negatives == settings.get("n_negatives", 20)  # the fit's setting is back
        return model.network.state_dict()  # type: ignore[union-attr]

    fewer, same_as_fewer, unchanged = updated(update_negatives=5), updated(n_negatives=5), updated()
    assert all(torch.equal(tensor, same_as_fewer[name]) for name, tensor in fewer.items())
    assert not torch.equal(fewer["item_embedding.weight"], unchanged["item_embedding.weight"])


def test_a_growing_table_keeps_spare_rows_and_is_not_copied_at_each_growth() -> None:
    model = SASRec(**SMALL).fit(cycle_data())
    model._grow_items(N_ITEMS + 2)
    weight = model.network.item_embedding.weight  # type: ignore[union-attr]
    moment = model.optimizer.state[weight]["exp_avg"]  # type: ignore[union-attr]
    before, address = weight.detach().clone(), weight.data_ptr()
    model._grow_items(N_ITEMS + 4)  # within the spare rows: written behind the table, nothing copied
    grown = model.network.item_embedding.weight  # type: ignore[union-attr]
    assert grown.data_ptr() == address and grown.shape == (N_ITEMS + 5, SMALL["dim"])
    assert torch.equal(grown[: N_ITEMS + 3].detach(), before)
    torch.testing.assert_close(grown[N_ITEMS + 3 :].detach(), before[1:].mean(dim=0).expand(2, -1))
    grown_moment = model.optimizer.state[grown]["exp_avg"]  # type: ignore[union-attr]
    assert torch.equal(grown_moment[: N_ITEMS + 3], moment) and not grown_moment[N_ITEMS + 3 :].any()
    model._grow_items(N_ITEMS * 3)  # past the spare rows: a new, larger buffer
    assert model.network.item_embedding.weight[: N_ITEMS + 3].equal(before)  # type: ignore[union-attr]


def test_row_wise_updates_keep_the_tables_sum_so_the_new_items_mean_needs_no_pass() -> None:
    """New items start at the mean item row. Row-wise updates move the table's sum with the rows they write, so
    growing the table reads no other row, and the mean is the one a pass over the table gives; a write through
    torch (or any other step) leaves the sum stale, and the next mean is a pass again."""
    model = SASRec(**SMALL, loss="sampled-softmax", n_negatives=8).fit(cycle_data())
    for n_items in (N_ITEMS + 3, N_ITEMS + 6, N_ITEMS + 9):
        model.partial_fit(cycle_data(n_users=20, seed=n_items, n_items=n_items))
    weight = model.network.item_embedding.weight  # type: ignore[union-attr]
    kept = model._table_sum
    assert kept is not None and kept.holds(weight, model._steps)  # carried through the updates' steps
    torch.testing.assert_close(model._item_row_sum(weight).mean(weight)[0], weight.detach()[1:].mean(dim=0))
    assert model._table_sum is kept  # no pass was made
    with torch.no_grad():
        weight[1] += 1.0
    assert not kept.holds(weight, model._steps)
    torch.testing.assert_close(model._item_row_sum(weight).mean(weight)[0], weight.detach()[1:].mean(dim=0))
    model._grow_items(N_ITEMS + 12)
    grown = model.network.item_embedding.weight  # type: ignore[union-attr]
    torch.testing.assert_close(grown.detach()[-3:], weight.detach()[1:].mean(dim=0).expand(3, -1))
    torch.testing.assert_close(model._item_row_sum(grown).mean(grown)[0], grown.detach()[1:].mean(dim=0))


def test_a_row_wise_fit_steps_only_the_rows_it_used_and_learns() -> None:
    """``fit`` with the sampled softmax at or above ``row_wise_from`` items steps only the rows each batch used
    (items never in a batch or drawn as a negative keep their initial vectors), and still learns the cycle."""
    data = cycle_data(n_users=120, length=12, n_items=3_000)  # the events use 30 of 3,000 items
    config = {**SMALL, "max_epochs": 20, "loss": "sampled-softmax", "n_negatives": 20}
    used_rows: list[torch.Tensor] = []
    model = SASRec(**config, row_wise_from=3_000)
    row_wise_loss = model._row_wise_loss

    def recording(*args: object) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        result = row_wise_loss(*args)  # type: ignore[arg-type]
        used_rows.append(result[2])
        return result

    model._row_wise_loss = recording  # type: ignore[method-assign]
    model.fit(data)
    initial = SASRec(**config, row_wise_from=3_000)
    initial._initialise(data)  # the same seeded initial weights, before any step
    weight = model.network.item_embedding.weight.detach()  # type: ignore[union-attr]
    start = initial.network.item_embedding.weight.detach()  # type: ignore[union-attr]
    unused = np.setdiff1d(np.arange(len(weight)), np.unique(torch.cat(used_rows).numpy()))
    assert len(used_rows) > 0 and len(unused) > 300  # 320 steps × 20 negatives leave some of the 3,000 unsampled
    assert torch.equal(weight[unused], start[unused])
    ids, _ = model.recommend(Histories.from_lists([[3, 4, 5], [10, 11]]), k=1)
    assert ids[:, 0].tolist() == [6, 12]


def test_below_row_wise_from_a_sampled_fit_is_the_dense_one_bit_for_bit() -> None:
    data = cycle_data()
    config = {**SMALL, "loss": "sampled-softmax", "n_negatives": 5}
    dense = SASRec(**config, row_wise_from=None).fit(data)
    below = SASRec(**config, row_wise_from=N_ITEMS + 1).fit(data)
    for a, b in zip(dense.network.parameters(), below.network.parameters(), strict=True):  # type: ignore[union-attr]
        assert torch.equal(a, b)
    assert SASRecConfig().row_wise_from == 100_000  # measured at 100k items (docs/results.md)
    with pytest.raises(ValueError, match="row_wise_from"):
        SASRecConfig(row_wise_from=0)


@pytest.mark.parametrize("power", [0.0, 0.75, 1.0])
def test_negatives_are_drawn_in_proportion_to_count_plus_one_to_the_power(power: float) -> None:
    data = cycle_data(n_items=300)
    model = SASRec(**SMALL, loss="sampled-softmax", n_negatives=20, negative_power=power).fit(data)
    counts = np.bincount(data.item_ids, minlength=data.n_items) + 1.0
    expected = counts**power / (counts**power).sum()
    np.testing.assert_allclose(np.exp(model.item_log_q), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"negative_power: expected a number in \[0, 1\], got 1.5"):
        SASRecConfig(negative_power=1.5)


@pytest.mark.parametrize("loss", ["softmax", "sampled-softmax"])
def test_an_update_computes_the_final_block_at_its_learned_columns_alone_with_the_full_passs_result(
    loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update learns its users' new events, the last items of their windows: the final block computes those
    columns alone (``learned_tail``). With dropout off that is the same function of the weights, so the weights
    after the update are those of an update whose final block computes every column, on the dense path (the full
    softmax) and on the row-wise one (the sampled softmax)."""
    import liverec.models.sasrec.model as model_module

    data = cycle_data(n_users=40, length=12)
    model = SASRec(**SMALL, loss=loss, n_negatives=8).fit(data)
    position = np.tile(np.arange(12), 40)
    user = np.repeat(np.arange(40), 12)
    data = data.subset(np.flatnonzero(position >= user % 4))  # windows of 9 to 12 items
    position, user = position[position >= user % 4], user[position >= user % 4]
    learn = (position >= 12 - 1 - user % 3) | (user < 8)  # one to three new events; eight users learned whole
    tails: list[int | None] = []
    learned_tail = model_module.learned_tail

    def recording(learned: torch.Tensor | None, inputs: torch.Tensor) -> int | None:
        tails.append(learned_tail(learned, inputs))
        return tails[-1]

    with_tail, without = copy.deepcopy(model), copy.deepcopy(model)
    monkeypatch.setattr(model_module, "learned_tail", recording)
    with_tail.partial_fit(data, learn)
    assert None in tails and any(tail is not None for tail in tails)  # with rehearsed users, and new events only
    monkeypatch.setattr(model_module, "learned_tail", lambda learned, inputs: None)
    without.partial_fit(data, learn)
    state, other = with_tail._get_state(), without._get_state()
    assert state.keys() == other.keys()
    weights = [name for name, value in state.items() if np.issubdtype(value.dtype, np.floating)]
    assert any("item_embedding" in name for name in weights)
    for name in weights:
        np.testing.assert_allclose(state[name], other[name], rtol=1e-4, atol=2e-5, err_msg=name)
    assert not np.array_equal(with_tail.item_vectors(), model.item_vectors())  # the update did learn


def test_update_batch_positions_packs_an_updates_short_windows_into_fewer_steps() -> None:
    """Windows of three items hold two positions each: batches of 16 hold 32; with ``update_batch_positions`` 64 an
    update takes 32 windows a step, half the steps. A fit ignores the setting (the same weights, bit for bit)."""
    with pytest.raises(ValueError, match="update_batch_positions: expected a positive integer or None, got 0"):
        SASRecConfig(update_batch_positions=0)
    data = cycle_data(n_users=64, length=3)
    model = SASRec(**SMALL).fit(data)
    steps = {}
    for positions in (None, 64):
        updated = copy.deepcopy(model)
        updated.config = dataclasses.replace(updated.config, update_batch_positions=positions)
        before = updated._steps
        updated.partial_fit(data)
        steps[positions] = updated._steps - before
    assert steps == {None: 4, 64: 2}
    packed_fit = SASRec(**SMALL, update_batch_positions=64).fit(data)
    assert np.array_equal(packed_fit.item_vectors(), model.item_vectors())


@pytest.mark.parametrize("clip_norm", [None, 1e-3])
def test_a_row_wise_step_clips_its_gradients_as_the_dense_step_does(clip_norm: float | None) -> None:
    """The norm a step clips by is the joint one of the network's gradients and the item rows' (a row-wise step
    holds the rows' in its leaf, outside the optimiser): one step from the same start, the same batch and the
    same negatives gives the same weights either way, and the gradients the step applied have at most that norm."""
    from liverec.models.sasrec.batching import trainable

    data = cycle_data(n_users=12, length=6, n_items=200)
    config = {**SMALL, "batch_size": 12, "loss": "sampled-softmax", "n_negatives": 8, "clip_norm": clip_norm}
    histories = trainable(Histories.from_interactions(data))
    after, norms = [], []
    for row_wise in (False, True):
        model = SASRec(**config)
        model._initialise(data)  # seeded: both start from the same weights, with no optimiser state
        step = model.training.step

        def recording(optimizer: torch.optim.Optimizer, *args: object, step: object = step) -> None:
            step(optimizer, *args)  # type: ignore[operator]
            rows = args[-1]  # the row-wise step's leaf, or None; the gradients stay until the next step
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            grads += [rows.grad] if isinstance(rows, torch.Tensor) else []
            norms.append(float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))))

        model.training.step = recording  # type: ignore[method-assign]
        model._train_epoch(histories, np.random.default_rng(0), row_wise=row_wise)  # one batch: one step
        assert model._steps == 1
        after.append({name: value.detach().clone() for name, value in model.network.named_parameters()})  # type: ignore[union-attr]
    for name in after[0]:
        torch.testing.assert_close(after[1][name], after[0][name], rtol=0, atol=1e-6)
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)  # the same joint norm, dense and row-wise
    if clip_norm is None:
        assert norms[0] > 1e-2  # what the clipped run clips from
    else:
        assert norms[0] <= clip_norm * (1 + 1e-5)


def test_clip_gradients_rescales_the_joint_norm_and_returns_the_one_before() -> None:
    from liverec.models.sasrec.training import clip_gradients

    weight = torch.nn.Parameter(torch.zeros(2))
    weight.grad = torch.tensor([3.0, 0.0])
    rows = torch.zeros(1, requires_grad=True)
    rows.grad = torch.tensor([4.0])
    optimizer = torch.optim.SGD([weight], lr=0.1)
    assert float(clip_gradients(optimizer, 1.0, rows)) == pytest.approx(5.0)
    torch.testing.assert_close(weight.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(rows.grad, torch.tensor([0.8]))
    assert float(clip_gradients(optimizer, 10.0)) == pytest.approx(0.6)  # under the bound: left as it is
    torch.testing.assert_close(weight.grad, torch.tensor([0.6, 0.0]))
    with pytest.raises(ValueError, match="clip_norm"):
        SASRecConfig(clip_norm=0.0)
