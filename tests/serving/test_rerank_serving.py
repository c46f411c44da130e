"""Re-ranking in serving (issue 20, item 4): per request and as a default setting, on the eligible candidates
before the exploration policy. λ = 0 (or none) is today's answer exactly; filters and exclusions hold after
re-ranking; the settings are recorded with the list's recommendation_id; bad values are 422s naming the field.
An in-process Engine for the engine's behaviour, a real `liverec serve` for the routes."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from liverec.evaluation.protocols import RERANK_CANDIDATES
from liverec.rerank import RERANKERS
from liverec.serving.engine import Engine, Recommendation
from liverec.serving.schemas import RerankName
from liverec.settings import RERANK_DEFAULT_LAMBDA, Settings

from .conftest import Prepared, Server

#: A strong setting of every re-ranker (each changes most lists at it).
STRONG = {"mmr": 0.9, "calibration": 1.0, "popularity": 5.0, "long-tail": 1.0}
CATEGORIES = ("drama", "comedy", "horror")


def label(engine: Engine, n_unavailable: int = 0) -> tuple[dict[str, set[str]], set[str]]:
    """Give every item one or two of three categories (by its index) and make the ``n_unavailable`` most popular
    ones unavailable; returns each item's categories and the unavailable items."""
    names = list(engine.state.item_ids)
    popular = np.argsort(-engine.state.counts(), kind="stable")[:n_unavailable]
    unavailable = {names[i] for i in popular.tolist()}
    categories: dict[str, set[str]] = {}
    for index, item in enumerate(names):
        mine = {CATEGORIES[index % 3]} | ({CATEGORIES[(index // 3) % 3]} if index % 2 else set())
        categories[item] = mine
        engine.put_item(item, categories=sorted(mine), available=item not in unavailable)
    return categories, unavailable


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    running = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    yield running
    running.close()


def users_of(prepared: Prepared, n: int) -> list[str]:
    return [str(u) for u in prepared.dataset.user_map.external_ids[:n]]


def test_the_request_enum_and_defaults_follow_the_rerankers() -> None:
    assert set(typing.get_args(RerankName)) == {"none", *RERANKERS}
    assert set(RERANK_DEFAULT_LAMBDA) == set(RERANKERS)
    for name, strength in RERANK_DEFAULT_LAMBDA.items():
        RERANKERS[name].check_strength(strength)  # every suggested λ is in its re-ranker's range
    assert Settings.model_fields["rerank_candidates"].default == RERANK_CANDIDATES  # as the offline evaluation


def test_lambda_zero_or_none_is_today_s_answer_exactly(engine: Engine, prepared: Prepared) -> None:
    label(engine)
    users = users_of(prepared, 15)
    session = [str(i) for i in prepared.dataset.item_map.external_ids[:4]]
    anchor = session[0]

    def lists(**rerank: typing.Any) -> list[Recommendation]:
        answers = [engine.recommend(user, k=8, **rerank) for user in users]
        answers.append(engine.recommend(items=session, k=8, exclude_categories=("horror",), **rerank))
        similar = engine.similar(anchor, 8, **rerank)
        assert similar is not None
        return [*answers, similar]

    today = lists()
    for name in RERANKERS:
        for asked in (lists(rerank=name, rerank_lambda=0.0), lists(rerank="none")):
            assert [a.items for a in asked] == [a.items for a in today], name
            assert [a.filled for a in asked] == [a.filled for a in today]
    changed = [a.items != b.items for a, b in zip(lists(rerank="long-tail", rerank_lambda=1.0), today, strict=True)]
    assert any(changed), "a strong re-ranker changes some list (the comparison above is not vacuous)"


def test_filters_and_exclusions_hold_after_reranking(engine: Engine, prepared: Prepared) -> None:
    categories, unavailable = label(engine, n_unavailable=15)
    users = users_of(prepared, 12)
    changed = 0
    for name, strength in STRONG.items():
        for user in users:
            seen = set(engine.user_history(user) or [])
            plain = engine.recommend(user, k=10, include_categories=("drama", "comedy"), exclude_categories=("horror",))
            answer = engine.recommend(
                user,
                k=10,
                include_categories=("drama", "comedy"),
                exclude_categories=("horror",),
                rerank=name,
                rerank_lambda=strength,
            )
            items = [item for item, _ in answer.items]
            assert len(items) == 10 and len(set(items)) == 10
            for item in items:
                assert categories[item] & {"drama", "comedy"} and "horror" not in categories[item], (name, item)
                assert item not in unavailable and item not in seen, (name, item)
            changed += plain.items != answer.items
        # a session's own items stay excluded, and the explored policy draws from the re-ranked candidates only
        session = [str(i) for i in prepared.dataset.item_map.external_ids[:5]]
        drawn = engine.recommend(
            items=session, k=6, exclude_categories=("comedy",), explore="softmax", rerank=name, rerank_lambda=strength
        )
        assert not {item for item, _ in drawn.items} & (set(session) | unavailable)
        assert all("comedy" not in categories[item] for item, _ in drawn.items)
        similar = engine.similar(session[0], 10, rerank=name, rerank_lambda=strength)
        assert similar is not None and session[0] not in {item for item, _ in similar.items}
        assert not {item for item, _ in similar.items} & unavailable
    assert changed > len(STRONG), "the strong settings re-rank most lists"


def test_calibration_moves_the_list_toward_the_history_s_category_mix(engine: Engine, prepared: Prepared) -> None:
    """The calibrated list's category mix is closer (KL, Steck's smoothing) to the user's history than the plain
    list's, on average over users: the re-ranker is fed the catalogue's categories and the user's history."""
    categories, _ = label(engine)

    def mix(items: list[str]) -> np.ndarray:
        counts = np.zeros(len(CATEGORIES))
        for item in items:
            for category in categories[item]:
                counts[CATEGORIES.index(category)] += 1 / len(categories[item])
        return counts / counts.sum()

    def kl(target: np.ndarray, got: np.ndarray) -> float:
        smoothed = 0.99 * got + 0.01 * target
        inside = target > 0
        return float(np.sum(target[inside] * np.log(target[inside] / smoothed[inside])))

    plain_kl, calibrated_kl = [], []
    for user in users_of(prepared, 30):
        target = mix(engine.user_history(user) or [])
        plain = [item for item, _ in engine.recommend(user, k=10).items]
        calibrated = [item for item, _ in engine.recommend(user, k=10, rerank="calibration", rerank_lambda=1.0).items]
        plain_kl.append(kl(target, mix(plain)))
        calibrated_kl.append(kl(target, mix(calibrated)))
    assert np.mean(calibrated_kl) < np.mean(plain_kl)


def test_the_default_setting_applies_and_a_request_overrides_it(data_dir: Path, prepared: Prepared) -> None:
    users = users_of(prepared, 6)
    plain = Engine(Settings.load(data_dir=data_dir, updater=False), background=False)
    try:
        expected_plain = [plain.recommend(user, k=10).items for user in users]
        expected_tail = [plain.recommend(user, k=10, rerank="long-tail", rerank_lambda=0.6).items for user in users]
    finally:
        plain.close()
    settings = Settings.load(data_dir=data_dir, updater=False, rerank="long-tail", rerank_lambda=0.6)
    engine = Engine(settings, background=False)
    try:
        default = [engine.recommend(user, k=10) for user in users]
        assert [a.items for a in default] == expected_tail
        assert all(a.impression is not None and a.impression.rerank == "long-tail" for a in default)
        assert {a.impression.rerank_lambda for a in default if a.impression} == {0.6}
        off = [engine.recommend(user, k=10, rerank="none") for user in users]
        assert [a.items for a in off] == expected_plain
        assert all(a.impression is not None and a.impression.rerank is None for a in off)
        other = engine.recommend(users[0], k=10, rerank="mmr").impression
        assert other is not None and (other.rerank, other.rerank_lambda) == ("mmr", RERANK_DEFAULT_LAMBDA["mmr"])
        weaker = engine.recommend(users[0], k=10, rerank_lambda=0.2).impression  # the default re-ranker's λ
        assert weaker is not None and (weaker.rerank, weaker.rerank_lambda) == ("long-tail", 0.2)
        assert weaker.rerank_candidates == settings.rerank_candidates
    finally:
        engine.close()


def test_bad_settings_name_the_setting(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="rerank") as error:
        Settings.load(data_dir=data_dir, rerank="diverse")
    assert "diverse" in str(error.value) and "mmr" in str(error.value)
    with pytest.raises(ValueError, match="rerank_lambda") as error:
        Settings.load(data_dir=data_dir, rerank="mmr", rerank_lambda=1.5)
    assert "1.5" in str(error.value) and "[0, 1]" in str(error.value)
    with pytest.raises(ValueError, match="rerank_candidates"):
        Settings.load(data_dir=data_dir, rerank_candidates=0)
    assert Settings.load(data_dir=data_dir, rerank="none").rerank is None


def test_the_routes_record_the_settings_and_refuse_bad_values(data_dir: Path, prepared: Prepared) -> None:
    server = Server(data_dir)
    try:
        client = server.client
        user = str(prepared.dataset.user_map.external_ids[0])
        item = str(prepared.dataset.item_map.external_ids[0])
        answers = {
            "user": client.get(
                f"/v1/users/{user}/recommendations", params={"k": 5, "rerank": "mmr", "rerank_lambda": 0.4}
            ),
            "session": client.post(
                "/v1/recommendations", json={"items": [item], "k": 5, "rerank": "popularity", "rerank_lambda": 2.5}
            ),
            "similar": client.get(f"/v1/items/{item}/similar", params={"k": 5, "rerank": "long-tail"}),
        }
        expected = {"user": ("mmr", 0.4), "session": ("popularity", 2.5), "similar": ("long-tail", 0.3)}
        for kind, answer in answers.items():
            assert answer.status_code == 200, answer.text
            logged = client.get(f"/v1/recommendations/{answer.json()['recommendation_id']}").json()
            assert logged["kind"] == kind and logged["items"] == [i["item_id"] for i in answer.json()["items"]]
            assert (logged["rerank"], logged["rerank_lambda"]) == expected[kind]
            assert logged["rerank_candidates"] == RERANK_CANDIDATES
        plain = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert client.get(f"/v1/recommendations/{plain['recommendation_id']}").json()["rerank"] is None

        refused = [
            (client.get(f"/v1/users/{user}/recommendations", params={"rerank": "diverse"}), "query", "rerank"),
            (
                client.get(f"/v1/users/{user}/recommendations", params={"rerank": "mmr", "rerank_lambda": 1.5}),
                "query",
                "rerank_lambda",
            ),
            (client.get(f"/v1/items/{item}/similar", params={"rerank_lambda": -1}), "query", "rerank_lambda"),
            (
                client.get(f"/v1/items/{item}/similar", params={"rerank": "calibration", "rerank_lambda": 3}),
                "query",
                "rerank_lambda",
            ),
            (
                client.post("/v1/recommendations", json={"items": [item], "rerank": "long-tail", "rerank_lambda": 2}),
                "body",
                "rerank_lambda",
            ),
            (client.post("/v1/recommendations", json={"items": [item], "rerank": "best"}), "body", "rerank"),
        ]
        for response, where, field in refused:
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert [error["loc"] for error in detail] == [[where, field]], detail
            assert detail[0]["msg"], detail
        message = refused[1][0].json()["detail"][0]["msg"]
        assert "mmr" in message and "1.5" in message and "[0, 1]" in message, message
        alone = client.get(f"/v1/users/{user}/recommendations", params={"rerank_lambda": 0.5})  # no re-ranker: ignored
        assert alone.status_code == 200, alone.text
        assert client.get(f"/v1/recommendations/{alone.json()['recommendation_id']}").json()["rerank"] is None
    finally:
        server.stop()
