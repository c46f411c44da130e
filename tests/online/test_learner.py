"""The online learner: new items become scorable, a changed behaviour is learned, cadence, replay, determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from liverec.data.interactions import Histories, Interactions
from liverec.models import create_model
from liverec.models.sasrec import SASRec
from liverec.online import LearnerConfig, OnlineLearner

N_ITEMS = 50
TINY = {"dim": 32, "max_len": 16, "batch_size": 32, "learning_rate": 5e-3, "n_threads": 1, "dropout": 0.0, "seed": 0}


def walks(users: np.ndarray, stride: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user walks i -> i + stride (mod N_ITEMS) from a random start; events interleaved round-robin."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, len(users))
    items = (starts[None, :] + stride * np.arange(length)[:, None]) % N_ITEMS  # [step, user]
    return np.tile(users, length), items.ravel()


def fitted(users: np.ndarray, items: np.ndarray, **params: object) -> SASRec:
    events = Interactions.from_arrays(users, items, n_users=int(users.max()) + 1, n_items=N_ITEMS)
    return SASRec(**{**TINY, "max_epochs": 30, "patience": 30, **params}).fit(events)


def learner_for(model: SASRec, users: np.ndarray, items: np.ndarray, **config: object) -> OnlineLearner:
    history = Interactions.from_arrays(users, items, n_users=model.n_users, n_items=model.n_items)
    return OnlineLearner(
        model,
        [f"i{i}" for i in range(model.n_items)],
        [f"u{u}" for u in range(model.n_users)],
        history=history,
        config=LearnerConfig(**config),  # type: ignore[arg-type]
    )


def hit_rate(model: SASRec, histories: Histories, targets: np.ndarray) -> float:
    ids, _ = model.recommend(histories, k=10)
    return float((ids == targets[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def phase_one() -> tuple[np.ndarray, np.ndarray]:
    return walks(np.arange(200), stride=1, length=15, seed=0)


def test_online_model_follows_a_changed_behaviour(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    """Users switch from walking i -> i+1 to i -> i+13; only the updated model should predict the new step."""
    users, items = phase_one
    static = fitted(users, items)
    learner = learner_for(fitted(users, items), users, items, lr_multiplier=1.0, epochs=2)
    new_users, new_items = walks(np.arange(200, 400), stride=13, length=15, seed=1)
    for start in range(0, len(new_users), 300):
        rows = slice(start, start + 300)
        learner.observe([f"u{u}" for u in new_users[rows]], [f"i{i}" for i in new_items[rows]], new_users[rows] * 0.0)
        learner.update()
    # held-out users of the new behaviour: 8 items of history, predict the 9th
    sequences = walks(np.arange(100), stride=13, length=9, seed=2)[1].reshape(9, 100).T
    histories = Histories.from_lists(sequences[:, :8].tolist())
    static_hr, online_hr = (
        hit_rate(static, histories, sequences[:, 8]),
        hit_rate(learner.model, histories, sequences[:, 8]),
    )
    # measured: static 0.12, online 1.00 (seed 0); the replay sample keeps the old walk learned too
    assert online_hr - static_hr >= 0.5
    old = walks(np.arange(100), stride=1, length=9, seed=3)[1].reshape(9, 100).T
    assert hit_rate(learner.model, Histories.from_lists(old[:, :8].tolist()), old[:, 8]) >= 0.5  # measured 1.00


def test_new_items_get_ids_and_become_scorable(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    learner = learner_for(fitted(users, items, max_epochs=5), users, items)
    n_items = learner.model.n_items
    # 60 users: i5 -> i6 -> "fresh", a new item right after i6
    stream_users = np.repeat([f"u{u}" for u in range(60)], 3)
    stream_items = np.tile(["i5", "i6", "fresh"], 60)
    learner.observe(stream_users, stream_items, np.zeros(len(stream_users)))
    assert learner.model.n_items == n_items and len(learner.item_ids) == n_items  # the table grows at update
    assert learner.update().new_items == 1
    for _ in range(2):
        learner.observe(stream_users, stream_items, np.zeros(len(stream_users)))
        stats = learner.update()
    assert stats.new_items == 0 and stats.events == 180 and stats.users == 60
    assert learner.model.n_items == n_items + 1 and learner.item_ids[-1] == "fresh"
    scores = learner.model.score(Histories.from_lists([[4, 5, 6]]))
    assert scores.shape == (1, n_items + 1) and np.isfinite(scores).all()
    ids, _ = learner.model.recommend(Histories.from_lists([[4, 5, 6]]), k=3)
    assert n_items in ids[0]  # measured: third, after i7 and i8 (the old walk from i6)


def test_update_reports_new_items_in_the_update_that_adds_them(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    learner = learner_for(fitted(users, items, max_epochs=1), users, items)
    learner.observe(["u1", "u2", "newcomer"], ["i3", "brand-new", "brand-new"], [10.0, 11.0, 12.0])
    stats = learner.update()
    assert (stats.new_items, stats.users, stats.events) == (1, 3, 3)
    assert (stats.first_timestamp, stats.last_timestamp) == (10.0, 12.0)
    assert list(learner.item_ids[-1:]) == ["brand-new"] and learner.user_ids[-1] == "newcomer"


def test_cadence_by_events_and_by_seconds(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    model = fitted(users, items, max_epochs=1)
    learner = learner_for(model, users, items, every_events=3, every_seconds=None)
    assert not learner.should_update()
    learner.observe(["u1", "u2"], ["i1", "i2"], [0.0, 1.0])
    assert not learner.should_update() and learner.pending_events == 2
    learner.observe(["u3"], ["i3"], [2.0])
    assert learner.should_update()
    learner.update()
    assert not learner.should_update() and learner.pending_events == 0

    timed = learner_for(model, users, items, every_events=None, every_seconds=0.2)
    time.sleep(0.25)
    assert not timed.should_update()  # nothing pending: nothing to learn, however long ago the last update was
    timed.observe(["u1"], ["i1"], [0.0])
    assert not timed.should_update()
    time.sleep(0.25)
    assert timed.should_update()
    timed.update()
    assert not timed.should_update()


def test_rehearsal_sample_draws_only_users_seen_before() -> None:
    # u0..u9 have sequences of 4 items, u10 has one item (nothing to train on)
    users = np.concatenate([np.repeat(np.arange(10), 4), [10]])
    items = np.concatenate([np.tile([1, 2, 3, 4], 10), [5]])
    model = SASRec(**{**TINY, "max_epochs": 1}).fit(Interactions.from_arrays(users, items, n_users=11, n_items=N_ITEMS))
    learner = learner_for(model, users, items, rehearsal_ratio=1.0, seed=1)
    eligible = {f"u{u}" for u in range(1, 10)}
    for round_ in range(5):
        # u0 (an old user) and u10 have new events; n* are new users
        new_users = ["u0", "u10", *(f"n{round_}_{j}" for j in range(4))]
        learner.observe(new_users, ["i7"] * len(new_users), np.zeros(len(new_users)))
        stats = learner.update()
        replayed = set(stats.rehearsed_user_ids)
        assert len(replayed) == len(stats.rehearsed_user_ids) == 6  # round(1.0 * 6) distinct users
        assert replayed <= eligible, replayed - eligible
        eligible |= {f"n{round_}_{j}" for j in range(4)}  # one item each: still not trainable
        eligible -= {f"n{round_}_{j}" for j in range(4)}
    no_replay = learner_for(model, users, items, rehearsal_ratio=0.0)
    no_replay.observe(["u0"], ["i9"], [0.0])
    assert len(no_replay.update().rehearsed_user_ids) == 0


def test_same_seed_same_weights(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    stream_users, stream_items = walks(np.arange(150, 250), stride=7, length=4, seed=4)
    runs = []
    for seed in (3, 3, 4):
        learner = learner_for(fitted(users, items, max_epochs=2, dropout=0.2), users, items, seed=seed)
        learned = []
        for start in range(0, len(stream_users), 100):
            rows = slice(start, start + 100)
            learner.observe([f"u{u}" for u in stream_users[rows]], [f"i{i}" for i in stream_items[rows]], [0.0] * 100)
            learned.append(tuple(learner.update().rehearsed_user_ids))
        runs.append((learner.model.item_vectors(), learned))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert runs[0][1] != runs[2][1] and not np.array_equal(runs[0][0], runs[2][0])


def test_learning_rate_multiplier_and_epochs_are_restored(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    model = fitted(users, items, max_epochs=1)
    config = model.config
    learner = learner_for(model, users, items, lr_multiplier=3.0, epochs=2, batch_size=8)
    learner.observe(["u1"], ["i9"], [0.0])
    learner.update()
    assert model.config is config  # the model's own settings are back after the update


def test_matrix_factorisation_learns_new_users_and_items() -> None:
    users, items = walks(np.arange(40), stride=1, length=6, seed=0)
    model = create_model("mf-bpr", n_epochs=2, n_threads=1).fit(
        Interactions.from_arrays(users, items, n_users=40, n_items=N_ITEMS)
    )
    learner = OnlineLearner(model, [f"i{i}" for i in range(N_ITEMS)], [f"u{u}" for u in range(40)])
    learner.observe(["u1", "someone", "someone"], ["i1", "i2", "extra"], [0.0, 1.0, 2.0])
    learner.update()
    assert (model.n_users, model.n_items) == (41, N_ITEMS + 1)
    assert learner.user_ids[-1] == "someone" and learner.item_ids[-1] == "extra"


def test_rejects_models_and_ids_it_cannot_work_with(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    users, items = phase_one
    events = Interactions.from_arrays(users, items, n_items=N_ITEMS)
    with pytest.raises(ValueError, match="does not support partial_fit"):
        OnlineLearner(
            create_model("ease").fit(events), [f"i{i}" for i in range(N_ITEMS)], [f"u{u}" for u in range(200)]
        )
    model = fitted(users, items, max_epochs=1)
    with pytest.raises(ValueError, match="expected 50 items and 200 users"):
        OnlineLearner(model, ["i0"], [f"u{u}" for u in range(200)])
    with pytest.raises(ValueError, match="every id must appear once"):
        OnlineLearner(model, ["i0"] * N_ITEMS, [f"u{u}" for u in range(200)])
    with pytest.raises(ValueError, match="equal lengths"):
        learner_for(model, users, items).observe(["u1"], ["i1", "i2"], [0.0])


def test_matrix_factorisation_given_a_learn_mask_learns_the_marked_events_alone() -> None:
    users, items = walks(np.arange(40), stride=1, length=6, seed=0)
    events = Interactions.from_arrays(users, items, n_users=40, n_items=N_ITEMS)
    masked, subset = (create_model("mf-bpr", n_epochs=2, n_threads=1).fit(events) for _ in range(2))
    learn = np.arange(len(events)) % 3 == 0
    masked.partial_fit(events, learn)
    subset.partial_fit(events.subset(learn))
    for name, array in masked._get_state().items():
        np.testing.assert_array_equal(array, subset._get_state()[name], err_msg=name)


def _spy_on_loss(model: SASRec) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Record, at each training step, the items the loss predicts and its window of next items (model ids)."""
    recorded: list[tuple[np.ndarray, np.ndarray | None]] = []
    loss = model._loss

    def recording(hidden, targets, rng, items, seen=None, future=None):  # type: ignore[no-untyped-def]
        recorded.append((targets.numpy() - 1, None if future is None else future.numpy() - 1))
        return loss(hidden, targets, rng, items, seen, future)

    model._loss = recording  # type: ignore[method-assign]
    return recorded


@pytest.mark.parametrize("relearn_history", [False, True])
def test_an_update_learns_the_new_events_with_the_history_as_context(
    phase_one: tuple[np.ndarray, np.ndarray], relearn_history: bool
) -> None:
    users, items = phase_one
    model = fitted(users, items, max_epochs=2)
    learner = learner_for(model, users, items, rehearsal_ratio=0.0, relearn_history=relearn_history)
    recorded = _spy_on_loss(model)
    new_items = np.array([7, 8, 9])
    learner.observe(["u3"] * 3, [f"i{i}" for i in new_items], [1e9, 1e9 + 1, 1e9 + 2])
    learner.update()
    learned = np.sort(np.concatenate([targets for targets, _ in recorded]))
    if relearn_history:  # the whole recent sequence again: u3's 15 known items (all but the first) and the new ones
        history = items[users == 3][-(model.config.max_len + 1 - 3) :]
        np.testing.assert_array_equal(learned, np.sort(np.concatenate([history[1:], new_items])))
    else:
        np.testing.assert_array_equal(learned, new_items)


def test_an_update_sees_the_events_real_times(phase_one: tuple[np.ndarray, np.ndarray]) -> None:
    """SASRec's two-item window spans events under window_gap_s apart: the learner passes real times."""
    users, items = phase_one
    model = fitted(users, items, max_epochs=2)
    learner = learner_for(model, users, items, rehearsal_ratio=0.0)
    recorded = _spy_on_loss(model)
    learner.observe(["u300"] * 4, ["i1", "i2", "i3", "i4"], [0.0, 1000.0, 1010.0, 5000.0])  # a new user
    learner.update()
    ((targets, future),) = recorded
    assert future is not None
    np.testing.assert_array_equal(targets, [2, 3, 4])
    # after i1 the window holds i2 and i3 (10 s apart); after i2 not i4 (3,990 s after i3); with positions
    # for times, as before, every item would count as 1 s after the one before: [3, 4, -1]
    np.testing.assert_array_equal(future[:, 1], [3, -1, -1])
