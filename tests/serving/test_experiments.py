"""Experiments and apprentice mode through a real `liverec serve` on both backends, and a real Engine in process:
sticky assignment per arm (model version and policy), rewards per arm, stop and promote (persisted), the
routes' errors and scopes, shadow lists logged beside live ones, erasure, and the updater learning from every
arm."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from liverec.events.log import SQLiteEventLog
from liverec.events.schema import Event
from liverec.experiments import Arm, Experiment
from liverec.online.updater import Updater, UpdaterConfig
from liverec.pipeline import read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.serving.engine import Engine
from liverec.serving.schemas import ExperimentIn
from liverec.settings import Settings
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

from .conftest import Prepared, Server, move_to_redis
from .test_auth import create_key
from .test_erasure import leftovers

EXPERIMENT = {
    "experiment_id": "exp-1",
    "name": "popularity with exploration against SASRec",
    "arms": [
        {"name": "control", "share": 0.5},
        {
            "name": "pop",
            "share": 0.5,
            "model_version": "v0002",
            "policy": "epsilon",
            "policy_settings": {"epsilon": 0.3},
        },
    ],
    "shadow_arms": [{"name": "candidate", "policy": "softmax", "policy_settings": {"temperature": 0.5}}],
}


def add_second_version(data_dir: Path) -> None:
    """Register ``pop`` as v0002 beside the prepared SASRec (v0001 stays served)."""
    with SQLiteEventLog(data_dir / "events.db") as event_log:
        data = read_log(event_log, DEFAULT_EVENT_WEIGHTS)
    train_and_register(data, ModelRegistry(data_dir / "models"), "pop", {}, promote=False)


@pytest.fixture(params=["embedded", "redis"])
def two_version_server(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Server]:
    add_second_version(data_dir)
    env: dict[str, str] = {}
    if request.param == "redis":
        env = move_to_redis(data_dir, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    running = Server(data_dir, env)
    running.backend = request.param
    yield running
    running.stop()


def click(user: str, item: str, recommendation_id: str) -> Event:
    return Event(uuid.uuid4().hex, user, item, "click", time.time(), recommendation_id=recommendation_id)


def served(client: httpx.Client, user: str) -> dict[str, object]:
    """A user's list, as logged."""
    answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
    assert answer.status_code == 200, answer.text
    logged = client.get(f"/v1/recommendations/{answer.json()['recommendation_id']}")
    assert logged.status_code == 200, logged.text
    body: dict[str, object] = logged.json()
    return body


def test_an_experiment_assigns_serves_counts_stops_and_promotes(two_version_server: Server, prepared: Prepared) -> None:
    server = two_version_server
    client = server.client
    created = client.post("/v1/experiments", json=EXPERIMENT)
    assert created.status_code == 201, created.text
    experiment = Experiment.from_json(created.json())
    assert created.json()["status"] == "running" and [a.name for a in experiment.arms] == [
        "control",
        "pop",
        "candidate",
    ]

    # the first user is new and distinctive (the erasure below looks for their id in every byte stored)
    users = ["exp-erase-8d2c71"] + [str(u) for u in prepared.dataset.user_map.external_ids[:40]]
    seed_items = [str(i) for i in prepared.dataset.item_map.external_ids[:3]]
    views = [{"user_id": users[0], "item_id": item, "type": "view"} for item in seed_items]
    assert client.post("/v1/events", json=views).status_code == 200
    clicks = {"control": 0, "pop": 0}
    lists = {"control": 0, "pop": 0}
    arm_users: dict[str, set[str]] = {"control": set(), "pop": set()}
    for n, user in enumerate(users):
        first, second = served(client, user), served(client, user)
        arm = experiment.assign(user)
        for logged in (first, second):
            assert (logged["experiment_id"], logged["arm"], logged["shadow"]) == ("exp-1", arm.name, False)
            assert logged["model_version"] == ("v0001" if arm.name == "control" else "v0002")
            assert logged["policy"] == ("greedy" if arm.name == "control" else "epsilon")
        lists[arm.name] += 2
        arm_users[arm.name].add(user)
        if n % 3 == 0:  # every third user clicks their first list's second item
            items = first["items"]
            assert isinstance(items, list)
            event = {
                "user_id": user,
                "item_id": items[1],
                "type": "click",
                "recommendation_id": first["recommendation_id"],
            }
            assert client.post("/v1/events", json=[event]).status_code == 200
            clicks[arm.name] += 1
    assert min(lists.values()) > 0, "41 users land in both arms"

    outside = [
        client.post("/v1/recommendations", json={"items": [str(prepared.dataset.item_map.external_ids[0])]}).json(),
        client.get(f"/v1/users/{users[0]}/recommendations", params={"explore": "greedy"}).json(),
    ]
    for answer in outside:  # a session has no user to assign; a request naming its policy is outside the experiment
        logged = client.get(f"/v1/recommendations/{answer['recommendation_id']}").json()
        assert logged["experiment_id"] is None and logged["arm"] is None

    report = client.get("/v1/experiments/exp-1")
    assert report.status_code == 200, report.text
    arms = {arm["name"]: arm for arm in report.json()["arms"]}
    for name in ("control", "pop"):
        assert arms[name]["impressions"] == lists[name] and arms[name]["users"] == len(arm_users[name])
        assert arms[name]["reward"] == clicks[name]
        assert arms[name]["reward_rate"] == pytest.approx(clicks[name] / lists[name])
    assert arms["pop"]["p_value"] is not None and arms["control"]["p_value"] is None
    assert arms["candidate"]["shadow"] and arms["candidate"]["impressions"] == sum(lists.values())
    assert report.json()["sample_ratio"]["mismatch"] is False
    assert [e["experiment_id"] for e in client.get("/v1/experiments").json()["experiments"]] == ["exp-1"]

    # refusals name what is wrong
    again = client.post("/v1/experiments", json={**EXPERIMENT, "experiment_id": "exp-2"})
    assert again.status_code == 409 and "'exp-1' is running" in again.json()["detail"]
    unknown = {**EXPERIMENT, "experiment_id": "exp-3", "arms": [{"name": "a", "share": 1.0, "model_version": "v0099"}]}
    missing = client.post("/v1/experiments", json=unknown)
    assert missing.status_code == 404 and "'v0099'" in missing.json()["detail"]
    shares = {"arms": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]}
    refused = client.post("/v1/experiments", json=shares)
    assert refused.status_code == 422 and "shares must sum to 1, got 0.9 (a=0.5, b=0.4)" in refused.text
    twice = {"arms": [{"name": "a", "share": 1.0}], "shadow_arms": [{"name": "a"}]}
    assert "names must be unique" in client.post("/v1/experiments", json=twice).text
    assert client.get("/v1/experiments/nope").status_code == 404
    assert client.post("/v1/experiments/nope/stop").status_code == 404

    # the assignment survives a restart (the experiment is persisted, the hash is the same)
    server.stop()
    restarted = Server(server.data_dir, server.env)
    try:
        client = restarted.client
        for user in users[:6]:
            assert served(client, user)["arm"] == experiment.assign(user).name

        stopped = client.post("/v1/experiments/exp-1/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        assert client.post("/v1/experiments/exp-1/stop").json()["status"] == "stopped"  # idempotent
        after = served(client, users[0])
        assert after["experiment_id"] is None and after["model_version"] == "v0001"

        wrong = client.post("/v1/experiments/exp-1/promote", json={"arm": "nobody"})
        assert wrong.status_code == 404 and "'nobody'" in wrong.json()["detail"]
        promoted = client.post("/v1/experiments/exp-1/promote", json={"arm": "pop"})
        assert promoted.status_code == 200, promoted.text
        assert (promoted.json()["status"], promoted.json()["winner"]) == ("promoted", "pop")
        assert (promoted.json()["serving"], promoted.json()["serving_policy"]) == ("v0002", "epsilon")
        assert client.post("/v1/experiments/exp-1/promote", json={"arm": "pop"}).status_code == 409
        assert client.get("/v1/models").json()["serving"] == "v0002"
        now = served(client, users[1])
        assert (now["model_version"], now["policy"], now["experiment_id"]) == ("v0002", "epsilon", None)
        assert now["policy_settings"] == {"epsilon": 0.3}

        # erasure: the user's lists (live and shadow) go; nothing about them stays anywhere
        erased_user = users[0]
        before = client.get("/v1/experiments/exp-1").json()["arms"]
        deleted = client.delete(f"/v1/users/{erased_user}")
        assert deleted.status_code == 200 and deleted.json()["impressions_deleted"] >= 5
        after_arms = {a["name"]: a for a in client.get("/v1/experiments/exp-1").json()["arms"]}
        arm_name = experiment.assign(erased_user).name
        assert after_arms[arm_name]["users"] == {a["name"]: a for a in before}[arm_name]["users"] - 1
        assert leftovers(restarted, [erased_user]) == {}
    finally:
        restarted.stop()

    # the promoted policy is the default after a restart too (persisted with the experiments)
    last = Server(server.data_dir, server.env)
    try:
        assert served(last.client, users[2])["policy"] == "epsilon"
    finally:
        last.stop()


def test_experiment_routes_need_their_scopes_and_are_documented(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        admin = create_key(server, "admin", "admin")
        reader = create_key(server, "reader", "read")
        body = {"arms": [{"name": "a", "share": 1.0}]}
        assert server.client.post("/v1/experiments", json=body).status_code == 401
        refused = server.client.post("/v1/experiments", json=body, headers={"X-API-Key": reader})
        assert refused.status_code == 403
        made = server.client.post("/v1/experiments", json=body, headers={"X-API-Key": admin})
        assert made.status_code == 201 and made.json()["experiment_id"].startswith("exp-")
        listed = server.client.get("/v1/experiments", headers={"X-API-Key": reader})
        assert listed.status_code == 200 and len(listed.json()["experiments"]) == 1
        path = f"/v1/experiments/{made.json()['experiment_id']}"
        for route in ("/stop", "/promote"):
            assert server.client.post(path + route, headers={"X-API-Key": reader}).status_code == 403
        document = server.client.get("/openapi.json").json()
        expected = {
            ("/v1/experiments", "post"): {"201", "401", "403", "404", "409", "422"},
            ("/v1/experiments", "get"): {"200", "401", "403"},
            ("/v1/experiments/{experiment_id}", "get"): {"200", "401", "403", "404", "422"},
            ("/v1/experiments/{experiment_id}/stop", "post"): {"200", "401", "403", "404", "409", "422"},
            ("/v1/experiments/{experiment_id}/promote", "post"): {"200", "401", "403", "404", "409", "422"},
        }
        for (route, method), codes in expected.items():
            assert codes <= set(document["paths"][route][method]["responses"]), (route, method)
    finally:
        server.stop()


def test_apprentice_lists_are_logged_beside_the_live_ones_and_never_rewarded(
    data_dir: Path, prepared: Prepared
) -> None:
    """The live answers equal an engine's without apprentice mode (same seed); every user and session request logs a
    shadow list linked to it, with the candidate's policy and propensities; a click joins the live list only."""
    base = {"data_dir": data_dir, "updater": False, "explore": "epsilon", "explore_seed": 5}
    plain = Engine(Settings.load(**base), background=False)
    users = [str(u) for u in prepared.dataset.user_map.external_ids[:12]]
    try:
        expected = [plain.recommend(user, k=6).items for user in users]  # logged too: the same folder
    finally:
        plain.close()
    engine = Engine(
        Settings.load(**base, apprentice_policy="softmax", apprentice_policy_settings={"temperature": 0.2}),
        background=False,
    )
    try:
        answers = [engine.recommend(user, k=6) for user in users]
        assert [answer.items for answer in answers] == expected
        session = engine.recommend(items=[str(prepared.dataset.item_map.external_ids[0])], k=4)
        engine.log.flush()
        logged = [i for batch in engine.log.iter_impressions() for i in batch]  # how off-policy evaluation reads
        shadows = {i.live_recommendation_id: i for i in logged if i.shadow}
        for answer in [*answers, session]:
            shadow = shadows[answer.recommendation_id]
            assert shadow.policy == "softmax" and shadow.policy_settings == {"temperature": 0.2, "candidates": 50}
            assert shadow.user_id == (answer.impression.user_id if answer.impression else None)
            assert 0 < shadow.slate_propensity <= 1 and len(shadow.items) == len(answer.items)
            assert shadow.recommendation_id != answer.recommendation_id and shadow.experiment_id is None
        assert set(shadows) == {answer.recommendation_id for answer in [*answers, session]}
        user_lists = sum(i.user_id == users[0] for i in logged)  # plain's, the live one and its shadow

        first = answers[0]
        shadow = shadows[first.recommendation_id]
        clicks = [
            click(users[0], first.items[0][0], first.recommendation_id),
            click(users[0], shadow.items[0], shadow.recommendation_id),
        ]
        stored = engine.ingest_async(clicks).result().events
        report = engine.join_rewards(stored)
        assert [r.recommendation_id for r in report.rewards] == [first.recommendation_id]
        assert report.unjoined == {"unknown": 1}
        erased = engine.forget_user(users[0])
        assert user_lists == 3 and erased.impressions_deleted == user_lists
        engine.log.flush()
        remaining = [i for batch in engine.log.iter_impressions() for i in batch]
        assert first.recommendation_id not in {i.live_recommendation_id for i in remaining}
    finally:
        engine.close()


def test_every_arm_s_events_reach_the_updater(data_dir: Path, prepared: Prepared) -> None:
    """Events answering lists of either arm are events like any other: the updater reads and learns them all."""
    add_second_version(data_dir)
    engine = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    try:
        engine.create_experiment(Experiment.from_json({"experiment_id": "exp-1", "arms": EXPERIMENT["arms"]}))
        events = []
        for user in [str(u) for u in prepared.dataset.user_map.external_ids[:30]]:
            answer = engine.recommend(user, k=5)
            assert answer.impression is not None and answer.impression.arm in ("control", "pop")
            events.append(click(user, answer.items[0][0], answer.recommendation_id))
        last = engine.ingest_async(events).result().last_offset
        assert len(engine.join_rewards(engine.log.read(after_offset=last - len(events))).rewards) == len(events)
    finally:
        engine.close()
    updater = Updater(data_dir, DEFAULT_EVENT_WEIGHTS, UpdaterConfig(every_events=10_000, every_seconds=None))
    try:
        assert updater.start()
        while updater.step():
            pass
        assert updater.offset == last
    finally:
        updater.close()


def test_an_arm_s_lists_use_its_re_ranker(data_dir: Path, prepared: Prepared) -> None:
    """Arms accept re-ranking settings, validated like a request's; an assigned user's list is re-ranked the way
    their arm says (the list a request naming the same re-ranking gets), and its impression records it."""
    arm = {"name": "calibrated", "share": 0.5, "rerank": "calibration", "rerank_lambda": 1.0}
    body = {"experiment_id": "exp-rr", "arms": [{"name": "control", "share": 0.5}, arm]}
    with pytest.raises(ValidationError, match="rerank_lambda") as refused:
        ExperimentIn.model_validate({**body, "arms": [{"name": "control", "share": 0.5}, {**arm, "rerank_lambda": 2}]})
    assert "calibration" in str(refused.value) and "[0, 1]" in str(refused.value)
    with pytest.raises(ValueError, match="rerank_lambda: given without a re-ranker"):
        Arm("a", share=1.0, rerank_lambda=0.5)
    experiment = Experiment.from_json(
        ExperimentIn.model_validate(body).model_dump(exclude_none=True) | {"created_at": time.time()}
    )
    assert experiment.arms[1].rerank == "calibration" and experiment.arms[0].to_json().get("rerank") is None
    engine = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    try:
        for index, item in enumerate(engine.state.item_ids):  # categories to calibrate to
            engine.put_item(item, categories=[f"c{index % 4}"])
        engine.create_experiment(experiment)
        seen = {"control": 0, "calibrated": 0}
        changed = 0
        for user in [str(u) for u in prepared.dataset.user_map.external_ids[:30]]:
            answer = engine.recommend(user, k=8)
            logged = answer.impression
            assert logged is not None and logged.arm in seen
            seen[logged.arm] += 1
            calibrated = logged.arm == "calibrated"
            rerank: dict[str, Any] = (
                {"rerank": "calibration", "rerank_lambda": 1.0} if calibrated else {"rerank": "none"}
            )
            outside = engine.recommend(user, k=8, **rerank)  # a request naming a re-ranking is outside the experiment
            assert outside.impression is not None and outside.impression.experiment_id is None
            assert answer.items == outside.items
            assert (logged.rerank, logged.rerank_lambda) == (("calibration", 1.0) if calibrated else (None, None))
            if calibrated:
                changed += answer.items != engine.recommend(user, k=8, rerank="none").items
        assert min(seen.values()) > 0, "30 users land in both arms"
        assert changed > 0, "the arm's re-ranker changes some of its lists"
    finally:
        engine.close()
