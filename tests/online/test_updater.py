"""The updater on a real data folder: candidates from the stream, the gate, resume after restart, new items."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from liverec.data.synthetic import SyntheticConfig, SyntheticTruth, generate
from liverec.events.log import SQLiteEventLog, StoredEvent
from liverec.events.schema import Event
from liverec.online.updater import Updater, UpdaterConfig, prequential_metrics
from liverec.pipeline import LogData, import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry, RegistrationRefused
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

SMALL = SyntheticConfig(n_users=200, n_items=120, n_events=8_000, n_clusters=4, seed=5)
#: the tests of gate decisions send backlogs; with the sample shrinking by measured costs while events
#: wait (``gate_max_share``) when a decision falls would depend on timing, so they rank every event
EXACT_GATE = {"gate_max_share": None}


def trained_on_the_past(tmp_path: Path, params: dict[str, object]) -> tuple[LogData, list[Event], SyntheticTruth]:
    """A log in ``tmp_path`` with the first 70 % of a stream and a SASRec (``params``) trained and
    registered on it; returns what it was trained on, the rest of the stream as events, and the truth."""
    dataset, truth = generate(SMALL)
    inter = dataset.interactions
    order = np.argsort(inter.timestamps, kind="stable")
    n_past = int(0.7 * len(order))
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        import_dataset(dataset, event_log, source="s", event_types=DEFAULT_EVENT_WEIGHTS, limit=n_past)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(tmp_path / "models"), "sasrec", params)
    users, items = dataset.user_map.external_ids, dataset.item_map.external_ids
    rest = [
        Event(
            f"later:{r}",
            str(users[inter.user_ids[r]]),
            str(items[inter.item_ids[r]]),
            "view",
            float(inter.timestamps[r]),
        )
        for r in order[n_past:].tolist()
    ]
    return data, rest, truth


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[Event]]:
    """A log with the first 70 % of a stream, a trained SASRec; the rest of the stream as events to send."""
    # refit off: these tests are about the updater, and every one of them trains this model afresh
    _, rest, _ = trained_on_the_past(tmp_path, {"max_epochs": 10, "patience": 3, "refit": False})
    return tmp_path, rest


def test_prequential_metrics_by_hand() -> None:
    from liverec.data.interactions import Interactions
    from liverec.models import create_model

    model = create_model("pop").fit(Interactions.from_arrays([0, 1, 2, 2], [0, 0, 0, 1], n_users=3, n_items=3))
    index = {"a": 0, "b": 1, "c": 2}
    hit, ndcg = prequential_metrics(model, index, [[], ["a"], []], [[], ["a"], []], ["a", "b", "zzz"], k=1)
    # pop ranks a > b > c; the second user has seen a, so b is first for them; zzz is unknown: a miss
    assert hit.tolist() == [1.0, 1.0, 0.0] and ndcg.tolist() == [1.0, 1.0, 0.0]


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_updates_register_candidates_gate_promotes_and_restart_resumes(folder: tuple[Path, list[Event]]) -> None:
    data_dir, rest = folder
    config = UpdaterConfig(
        every_events=400, every_seconds=None, gate_events=300, gate_margin=1.0, read_batch=200, **EXACT_GATE
    )
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start() and updater.version == "v0001"
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:1500])
    while updater.step():
        pass
    registry = ModelRegistry(data_dir / "models")
    manifests = registry.manifests()
    assert [m["version"] for m in manifests][:3] == ["v0001", "v0002", "v0003"]
    second = manifests[1]
    assert second["parent"] == "v0001" and second["training"]["kind"] == "online update"
    assert second["training"]["events"] == 400 and second["training"]["last_offset"] == 5600 + 400
    assert updater.decisions and updater.decisions[0]["version"] == "v0002" and updater.decisions[0]["promoted"]
    assert registry.promoted() == "v0002" and "prequential NDCG@10" in registry.manifest("v0002")["reason"]
    gate = registry.manifest("v0002")["gate"]  # the decision, kept for the servers' metrics
    assert gate["promoted"] and gate["events"] == 300
    assert gate["candidate_ndcg"] == updater.decisions[0]["candidate_ndcg"]
    newest = manifests[-1]["version"]
    offset = updater.offset
    updater.close()

    again = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert again.start() and again.version == newest
    assert again.offset == registry.manifest(newest)["training"]["last_offset"] <= offset
    again.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_gate_rejects_a_worse_candidate(folder: tuple[Path, list[Event]]) -> None:
    data_dir, rest = folder
    # a learning rate 300x too high wrecks the update: the gate must keep it from serving
    config = UpdaterConfig(
        every_events=400, every_seconds=None, gate_events=300, lr_multiplier=300.0, read_batch=200, **EXACT_GATE
    )
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:1400])
    while updater.step():
        pass
    decision = updater.decisions[0]
    registry = ModelRegistry(data_dir / "models")
    assert not decision["promoted"] and decision["candidate_ndcg"] < decision["serving_ndcg"]
    assert registry.promoted() == "v0001" and registry.manifest("v0002")["status"] == "rejected"
    assert registry.manifest("v0002")["gate"]["promoted"] is False
    updater.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_every_seconds_cadence(folder: tuple[Path, list[Event]]) -> None:
    data_dir, rest = folder
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, UpdaterConfig(every_events=None, every_seconds=0.2))
    assert updater.start()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:10])
    updater.step()
    assert len(ModelRegistry(data_dir / "models").versions()) == 1
    time.sleep(0.25)
    updater.step()
    assert len(ModelRegistry(data_dir / "models").versions()) == 2
    updater.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_periodic_full_retraining_goes_through_the_gate(folder: tuple[Path, list[Event]]) -> None:
    data_dir, rest = folder
    config = UpdaterConfig(
        every_events=None,
        every_seconds=None,
        gate_events=200,
        gate_margin=1.0,
        read_batch=200,
        retrain_interval_s=0.01,
        retrain_params={"max_epochs": 3},
        **EXACT_GATE,
    )
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:300])
        time.sleep(0.02)
        updater.step()  # reads 200 events, then retrains from the whole log (5,800 events)
        registry = ModelRegistry(data_dir / "models")
        retrained = registry.manifest("v0002")
        assert retrained["training"]["last_offset"] == 5800 and retrained["status"] == "candidate"
        assert updater.gate is not None and updater.gate.version == "v0002"
        event_log.append(rest[300:800])
    while updater.step():
        pass
    assert updater.decisions[0]["version"] == "v0002" and updater.decisions[0]["promoted"]
    assert updater.version == "v0002", "after a retrained version is promoted, the learner continues from it"
    updater.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_gate_sample_rate_ranks_a_sample_and_still_decides_on_gate_events(folder: tuple[Path, list[Event]]) -> None:
    from liverec.online.updater import _sampled

    rate = 0.25
    share = np.mean([_sampled(offset, rate) for offset in range(1, 20_001)])
    assert abs(share - rate) < 0.02  # a fixed hash of the offset: reproducible, close to the rate
    data_dir, rest = folder
    config = UpdaterConfig(
        every_events=400,
        every_seconds=None,
        gate_events=150,
        gate_margin=1.0,
        read_batch=200,
        gate_sample_rate=rate,
        **EXACT_GATE,
    )
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:2000])
    while not updater.decisions and updater.step():
        pass
    decision = updater.decisions[0]
    opened_at = ModelRegistry(data_dir / "models").manifest(decision["version"])["training"]["last_offset"]
    assert decision["events"] == 150
    # with every event ranked the decision would come ~150-200 events after the gate opened; a quarter
    # of them ranked needs about four times as many
    assert updater.offset - opened_at >= 3 * 150
    updater.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_gate_rate_holds_ranking_to_its_share_only_while_events_wait(folder: tuple[Path, list[Event]]) -> None:
    data_dir, _ = folder
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, UpdaterConfig(gate_sample_rate=0.8, gate_max_share=0.25))
    assert updater._gate_rate(behind=True) == 0.8  # no costs measured yet
    updater._gate_cost, updater._other_cost = 1e-3, 1e-4  # ranking an event costs 10x the rest
    assert updater._gate_rate(behind=False) == 0.8
    rate = updater._gate_rate(behind=True)
    assert rate == pytest.approx(0.25 * 1e-4 / (0.75 * 1e-3))
    assert rate * 1e-3 / (rate * 1e-3 + 1e-4) == pytest.approx(0.25)  # ranking's share of the time
    updater._gate_cost = 1e-6  # cheap ranking: the configured rate is the ceiling
    assert updater._gate_rate(behind=True) == 0.8
    updater.close()


class _SlowGate(Updater):
    """An updater whose gate costs 20 ms more per ranked event (a large catalogue's ranking, say)."""

    def _judge(self, events: list[StoredEvent], rate: float) -> int:
        ranked = super()._judge(events, rate)
        time.sleep(0.02 * ranked)
        return ranked


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_a_backlog_is_worked_off_with_a_sampled_gate_and_every_event_ranked_once_caught_up(
    folder: tuple[Path, list[Event]],
) -> None:
    data_dir, rest = folder
    config = UpdaterConfig(every_events=200, every_seconds=None, gate_events=40, gate_margin=1.0, read_batch=200)
    updater = _SlowGate(data_dir, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start()
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        event_log.append(rest[:2000])  # a backlog: every read fills its batch of 200
        rates = []
        while True:
            judged = updater.gate is not None
            if not updater.step():
                break
            if judged:
                rates.append(updater.gate_rate)
        # the first judged batch ranks at the full rate and measures; then ranking is held to a quarter
        # of the time, about a tenth of the events here
        assert rates[0] == 1.0 and len(rates) > 3 and max(rates[1:]) < 0.5
        sampled = [d for d in updater.decisions if d["events_read"] > 2 * d["events"]]
        assert sampled, updater.decisions
        caught_up = []
        for start in range(2000, 2400, 50):  # caught up: reads of 50 events, fewer than the batch
            event_log.append(rest[start : start + 50])
            judged = updater.gate is not None
            updater.step()
            if judged:
                caught_up.append(updater.gate_rate)
        assert caught_up and set(caught_up) == {1.0}
    updater.close()


@pytest.mark.slow  # trains models and runs the updater over a data folder
def test_categories_from_the_catalogue_reach_the_model_and_describe_new_items(tmp_path: Path) -> None:
    """With side_features on, `liverec train`'s path gives SASRec the catalogue's categories, and the
    updater gives it those of items that join online (a new item starts among its category's items)."""
    params = {"max_epochs": 2, "patience": 2, "refit": False, "side_features": True}
    data, later, truth = trained_on_the_past(tmp_path, params)
    assert data.items is not None
    external = generate(SMALL)[0].item_map.external_ids
    cluster_of = {str(item): int(truth.item_cluster[n]) for n, item in enumerate(external)}

    def categories(model: object, item_ids: list[str]) -> list[list[str]]:
        features, names = model.item_features, model.feature_names  # type: ignore[attr-defined]
        return [[names[c] for c in features[row].indices] for row in range(len(item_ids))]

    loaded = ModelRegistry(tmp_path / "models").load("v0001")
    assert loaded.model.network.feature_embedding is not None  # type: ignore[attr-defined]
    assert categories(loaded.model, loaded.item_ids) == [[f"cluster{cluster_of[i]}"] for i in loaded.item_ids]

    updater = Updater(tmp_path, DEFAULT_EVENT_WEIGHTS, UpdaterConfig(every_events=500, every_seconds=None))
    assert updater.start()
    known = set(data.item_ids)
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        event_log.append(later)
    while updater.step():
        pass
    assert updater.learner is not None
    model, item_ids = updater.learner.model, list(updater.learner.item_ids)
    joined = [item for item in item_ids if item not in known]
    assert joined, "the stream's later part brings items the first model never saw"
    assert categories(model, item_ids) == [[f"cluster{cluster_of[i]}"] for i in item_ids]
    updater.close()


def test_an_erasure_makes_the_updater_start_again_without_the_user(tmp_path: Path) -> None:
    """Learner, gate and state may hold an erased user: the updater refuses to register what it holds once the
    erasure epoch moved, and starts again from the rewritten versions and the scrubbed log."""
    import threading

    from liverec.backends import open_backend
    from liverec.settings import Settings

    user = "erase-me-7f3a9c"
    dataset, _ = generate(SyntheticConfig(n_users=60, n_items=40, n_events=1_500, seed=2))
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        import_dataset(dataset, event_log, source="s", event_types=DEFAULT_EVENT_WEIGHTS)
        event_log.append([Event(f"evt-erase-{n}", user, "0", "view", 1e9 + n) for n in range(3)])
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(tmp_path / "models"), "mf-bpr", {"n_epochs": 1})
    config = UpdaterConfig(every_events=6, every_seconds=None, gate_events=5, read_batch=50)
    updater = Updater(tmp_path, DEFAULT_EVENT_WEIGHTS, config)
    assert updater.start() and user in list(updater._started_learner().user_ids)
    with SQLiteEventLog(tmp_path / "events.db") as event_log:  # the user is active: the learner holds them
        event_log.append([Event(f"evt-erase-late-{n}", user, "1", "view", 1e9 + 10 + n) for n in range(5)])
    assert updater.step() == 5  # observed, not learned yet (every 6 events)
    with open_backend(Settings(data_dir=tmp_path)) as backend:
        report = backend.forget_user(user)
    assert report.models_rewritten == ["v0001"] and report.events_deleted == 8
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        event_log.append([Event("someone-else", "u-other", "2", "view", 1e9 + 20)])
    with pytest.raises(RegistrationRefused):  # the update it was due holds the erased user
        updater.step()
    assert ModelRegistry(tmp_path / "models").versions() == ["v0001"]
    stop = threading.Event()
    updater.run_once(stop)  # forgets everything, then starts again from v0001 as rewritten
    assert updater.restarts == 1 and updater.erasure_epoch == report.epoch
    updater.run_once(stop)
    assert user not in list(updater._started_learner().user_ids)
    registry = ModelRegistry(tmp_path / "models")
    for version in registry.versions():
        assert user not in (registry.load(version).user_ids or [])
    updater.close()


def test_an_order_only_log_is_read_and_learned_as_order(tmp_path: Path) -> None:
    """A sequences file imported into the log marks it order-only: `read_log` gives untimed interactions, the
    updater's learner updates without time (so no 60 s window ties a history of positions into one moment),
    later events with real times stay after the positions, and retention deletes nothing it cannot date."""
    from liverec.backends.erasure import apply_retention
    from liverec.data.interactions import Dataset
    from liverec.data.interactions import Interactions as Inter
    from liverec.events.log import log_is_timed

    dataset, _ = generate(SyntheticConfig(n_users=40, n_items=30, n_events=600, seed=3))
    inter = dataset.interactions.sorted()
    position = np.zeros(len(inter))
    for user in np.unique(inter.user_ids):
        rows = np.flatnonzero(inter.user_ids == user)
        position[rows] = np.arange(len(rows))
    untimed = Inter(
        inter.user_ids, inter.item_ids, position, inter.values, inter.event_types,
        inter.n_users, inter.n_items, inter.event_type_names, timed=False,
    )  # fmt: skip
    sequences = Dataset(untimed, dataset.user_map, dataset.item_map, name="shop")
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        assert log_is_timed(event_log)
        summary = import_dataset(sequences, event_log, source="shop", event_types=DEFAULT_EVENT_WEIGHTS)
        assert summary.timed is False and not log_is_timed(event_log)
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
        assert data.interactions.timed is False
        report = apply_retention(None, 1.0, log=event_log, state=None)  # type: ignore[arg-type]
        assert report.events_deleted == 0 and event_log.count() == summary.stored
    train_and_register(data, ModelRegistry(tmp_path / "models"), "sasrec", {"max_epochs": 1, "refit": False})
    updater = Updater(tmp_path, DEFAULT_EVENT_WEIGHTS, UpdaterConfig(every_events=5, every_seconds=None))
    assert updater.start()
    learner = updater._started_learner()
    assert learner.timed is False
    user = str(dataset.user_map.external_ids[0])
    with SQLiteEventLog(tmp_path / "events.db") as event_log:
        event_log.append(
            [Event(f"live-{n}", user, str(dataset.item_map.external_ids[n]), "view", 1.7e9 + n) for n in range(5)]
        )
        again = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    assert again.interactions.timed is False  # the whole log stays order-only
    rows = np.flatnonzero(again.interactions.sorted().user_ids == again.user_ids.index(user))
    assert again.interactions.sorted().timestamps[rows][-5:].min() >= 1.7e9  # the live events come last
    while updater.step():
        pass
    assert updater.learner is not None and updater.learner.timed is False
    updater.close()
