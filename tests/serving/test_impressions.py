"""Impressions, rewards and exploration through a real `liverec serve` on both backends: every served list is
logged and survives a restart, events join their list (per position, with the delay), unjoined and late events
are counted and still stored, and an exploring request marks what it explored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from liverec.data.interactions import Histories
from liverec.serving.engine import Engine
from liverec.settings import Settings

from .conftest import Prepared, Server, move_to_redis

WINDOW_S = 60.0


def start(data_dir: Path, backend: str, request: pytest.FixtureRequest, env: dict[str, str] | None = None) -> Server:
    settings = {"LIVEREC_REWARD_WINDOW_S": str(WINDOW_S), **(env or {})}
    if backend == "redis":
        settings |= move_to_redis(
            data_dir, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        )
    running = Server(data_dir, settings)
    running.backend = backend
    return running


@pytest.fixture(params=["embedded", "redis"])
def logging_server(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Server]:
    running = start(data_dir, request.param, request)
    yield running
    running.stop()


def counter(server: Server, name: str) -> float:
    text = server.client.get("/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_every_list_is_logged_and_rewards_join_it(logging_server: Server, prepared: Prepared) -> None:
    server = logging_server
    client = server.client
    user = "impression-user"
    items = [str(i) for i in prepared.dataset.item_map.external_ids[:3]]
    client.post("/v1/events", json=[{"user_id": user, "item_id": i, "type": "view"} for i in items])
    answers = [
        client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json(),
        client.post("/v1/recommendations", json={"items": items, "k": 4}).json(),
        client.get(f"/v1/items/{items[0]}/similar", params={"k": 3}).json(),
    ]
    for answer, kind in zip(answers, ("user", "session", "similar"), strict=True):
        logged = client.get(f"/v1/recommendations/{answer['recommendation_id']}")
        assert logged.status_code == 200, logged.text
        body = logged.json()
        assert body["kind"] == kind and body["items"] == [i["item_id"] for i in answer["items"]]
        assert body["positions"] == list(range(1, len(body["items"]) + 1))
        assert body["policy"] == "greedy" and body["propensities"] == [1.0] * len(body["items"])
        assert body["slate_propensity"] == 1.0 and body["model_version"] == answer["model_version"]
        assert body["reward"] == 0.0 and body["rewards"] == []
    assert answers[0]["items"] and client.get("/v1/recommendations/never-served").status_code == 404

    listed = answers[0]
    rid = listed["recommendation_id"]
    served_at = client.get(f"/v1/recommendations/{rid}").json()["served_at"]
    second = listed["items"][1]["item_id"]
    events = [
        {"user_id": user, "item_id": second, "type": "click", "recommendation_id": rid, "timestamp": served_at + 3},
        {"user_id": user, "item_id": second, "type": "purchase", "recommendation_id": rid},
        {"user_id": user, "item_id": "not-in-the-list", "type": "click", "recommendation_id": rid},
        {"user_id": user, "item_id": second, "type": "click", "recommendation_id": "no-such-list"},
        {"user_id": user, "item_id": second, "type": "click", "recommendation_id": rid, "timestamp": served_at + 600},
    ]
    ack = client.post("/v1/events", json=events)
    assert ack.status_code == 200 and ack.json()["stored"] == 5, "every event is stored, joined or not"
    body = client.get(f"/v1/recommendations/{rid}").json()
    rewards = body["rewards"]
    assert [(r["type"], r["position"], r["late"]) for r in rewards] == [
        ("click", 2, False),
        ("purchase", 2, False),
        ("click", 2, True),
    ]
    assert abs(rewards[0]["delay_s"] - 3) < 1e-6 and rewards[2]["delay_s"] > WINDOW_S
    assert body["reward"] == 1.0 + 5.0 and body["position_rewards"][1] == 6.0
    assert counter(server, "liverec_rewards_joined_total") == 3
    assert counter(server, "liverec_rewards_late_total") == 1
    assert counter(server, 'liverec_rewards_unjoined_total{reason="unknown"}') == 1
    assert counter(server, 'liverec_rewards_unjoined_total{reason="item"}') == 1

    # the lists and rewards survive a restart
    server.stop()
    again = Server(server.data_dir, server.env)
    try:
        after = again.client.get(f"/v1/recommendations/{rid}").json()
        assert after["items"] == body["items"] and len(after["rewards"]) == 3
        for answer in answers:
            assert again.client.get(f"/v1/recommendations/{answer['recommendation_id']}").status_code == 200
    finally:
        again.stop()


def test_an_exploring_request_marks_and_logs_what_it_explored(data_dir: Path, request: pytest.FixtureRequest) -> None:
    server = start(data_dir, "embedded", request, {"LIVEREC_EXPLORE_EPSILON": "1.0", "LIVEREC_EXPLORE_SEED": "3"})
    try:
        user = "explorer"
        server.client.post("/v1/events", json=[{"user_id": user, "item_id": "1", "type": "view"}])
        greedy = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert all(set(item) == {"item_id", "score"} for item in greedy["items"])
        explored = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explore": "epsilon"}).json()
        assert [item["explanation"] for item in explored["items"]] == [{"kind": "explore"}] * 5
        assert not {i["item_id"] for i in explored["items"]} & {i["item_id"] for i in greedy["items"]}
        logged = server.client.get(f"/v1/recommendations/{explored['recommendation_id']}")
        assert logged.status_code == 200, (logged.text, server.output()[-3000:])
        body = logged.json()
        assert body["policy"] == "epsilon" and body["policy_settings"] == {"epsilon": 1.0}
        assert body["explored"] == [True] * 5 and 0 < body["slate_propensity"] < 1
        # what ε chose from is logged for off-policy evaluation; a greedy list logs nothing beyond itself
        assert body["n_eligible"] > 5 and body["candidates"][:5] == [i["item_id"] for i in greedy["items"]]
        assert server.client.get(f"/v1/recommendations/{greedy['recommendation_id']}").json()["candidates"] is None
        session = server.client.post("/v1/recommendations", json={"items": ["1"], "k": 3, "explore": "softmax"})
        assert session.status_code == 200
        assert server.client.get(f"/v1/users/{user}/recommendations", params={"explore": "bandit"}).status_code == 422
    finally:
        server.stop()


def test_greedy_answers_are_todays(data_dir: Path, prepared: Prepared) -> None:
    """The default policy is greedy: the same lists as naming it, as ε = 0, and the answer's fields are today's."""
    users = [str(u) for u in prepared.dataset.user_map.external_ids[:15]] + ["nobody"]
    plain = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    zero = Engine(
        Settings.load(data_dir=data_dir, updater=False, explore="epsilon", explore_epsilon=0.0), background=False
    )
    try:
        for user in users:
            answer = plain.recommend(user, k=10)
            named = plain.recommend(user, k=10, explore="greedy")
            for other in (named, zero.recommend(user, k=10)):
                assert other.items == answer.items and other.filled == answer.filled
            document = answer.to_json()
            assert set(document) == {
                "items", "model_version", "recommendation_id", "fallback", "reason", "filled_by_popularity",
                "history_length",
            }  # fmt: skip
            assert all(
                set(item) == {"item_id", "score"} and isinstance(item["score"], float) for item in document["items"]
            )
        plain.log.flush()
        assert plain.log.count_impressions() >= 2 * len(users)
    finally:
        plain.close()
        zero.close()


def test_cold_estimates_are_personal(data_dir: Path, prepared: Prepared) -> None:
    """The cold policy's estimate of an item the model does not know yet is this user's mean score of the known
    items sharing its category (each synthetic item carries its cluster, ``cluster<c>``): a user of cluster A
    rates the new A item above the new B item, a user of B the other way round — where one tied floor for every
    young item would show both users the same."""
    truth, dataset = prepared.truth, prepared.dataset
    a, b = 0, 1
    engine = Engine(Settings.load(data_dir=data_dir, updater=False, explore="cold"), background=False)
    try:
        for cluster in (a, b):
            engine.put_item(f"new-{cluster}", categories=[f"cluster{cluster}"])
        serving = engine.serving
        assert serving is not None and serving.model.provides_vectors
        state = engine.state
        new = {cluster: state.item_index[f"new-{cluster}"] for cluster in (a, b)}
        vectors = np.asarray(serving.model.item_vectors(), dtype=np.float64)

        def in_category(name: str) -> set[int]:
            return {i for i, record in state.catalogue.metadata.items() if name in (record.get("categories") or ())}

        def fan_of(cluster: int, not_of: int) -> np.ndarray:
            """The model's query vector for a user who likes ``cluster`` and not ``not_of`` (their last 20 items)."""
            likes = truth.user_clusters_start
            user = int(np.flatnonzero((likes == cluster).any(axis=1) & ~(likes == not_of).any(axis=1))[0])
            events = dataset.interactions
            items = dataset.item_map.to_external(events.item_ids[events.user_ids == user][-20:])
            model_history = serving.to_model(state.item_indices([str(i) for i in items]))
            batch = Histories(np.array([-1]), np.array([0, len(model_history)]), model_history)
            return np.asarray(serving.model.user_vectors(batch)[0], dtype=np.float64)

        for fan, other in ((a, b), (b, a)):
            user_vector = fan_of(fan, other)
            cold = engine._cold_items(serving).copy()
            estimates = engine._cold_scores(serving, user_vector, cold)
            for cluster in (fan, other):
                members = serving.to_model(np.array(sorted(in_category(f"cluster{cluster}")), dtype=np.int64))
                assert len(members) >= 8
                assert estimates[new[cluster]] == pytest.approx(float((vectors[members] @ user_vector).mean()))
            assert estimates[new[fan]] > estimates[new[other]]
            known = serving.model_to_state[0]
            assert np.isnan(estimates[known]) or cold[known]  # only cold items are estimated
            assert not np.isnan(estimates[new[fan]])
    finally:
        engine.close()
