"""Explanations through a real `liverec serve`: explain=true explains every item (from the history, with titles),
explain=false answers as before, and the served list's impression keeps the explanations."""

from __future__ import annotations

from pathlib import Path

from .conftest import Server


def test_an_explained_answer_names_history_items_and_is_logged(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        client = server.client
        history = ["i3", "i17", "i42", "i8"]  # synthetic item ids
        titles = {"i17": "Seventeen", "i42": "The Answer"}
        for item_id, title in titles.items():
            assert client.put(f"/v1/items/{item_id}", json={"title": title}).status_code == 200
        user = "explained"
        events = [{"user_id": user, "item_id": item, "type": "view"} for item in history]
        assert client.post("/v1/events", json=events).status_code == 200

        plain = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        off = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": "false"}).json()
        on = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": "true"}).json()
        # explain=false is the default and answers as before: no explanation, the same keys
        assert all(set(item) == {"item_id", "score"} for item in plain["items"])
        assert off["items"] == plain["items"] and set(off) == set(plain)
        # explain=true ranks the same items, each explained
        assert [(i["item_id"], i["score"]) for i in on["items"]] == [(i["item_id"], i["score"]) for i in plain["items"]]
        for item in on["items"]:
            explanation = item["explanation"]
            assert explanation["kind"] == "history"
            because = explanation["because"]
            assert 1 <= len(because) <= 3
            assert {entry["item_id"] for entry in because} <= set(history)
            weights = [entry["weight"] for entry in because]
            assert weights == sorted(weights, reverse=True) and weights[-1] > 0
            for entry in because:  # the catalogue's titles (the synthetic items have "Item N"; two were renamed)
                assert entry["title"] == titles.get(entry["item_id"], f"Item {entry['item_id'][1:]}")
            named = [entry["title"] for entry in because]
            assert explanation["text"].startswith("Because you interacted with " + named[0])
            assert all(name in explanation["text"] for name in named)

        logged = client.get(f"/v1/recommendations/{on['recommendation_id']}")
        assert logged.status_code == 200, logged.text
        kept = logged.json()["explanations"]
        assert [e["kind"] for e in kept] == [i["explanation"]["kind"] for i in on["items"]]
        assert [[b["item_id"] for b in e["because"]] for e in kept] == [
            [b["item_id"] for b in i["explanation"]["because"]] for i in on["items"]
        ]
        assert client.get(f"/v1/recommendations/{plain['recommendation_id']}").json()["explanations"] is None

        session = client.post("/v1/recommendations", json={"items": ["i42"], "k": 3, "explain": True}).json()
        for item in session["items"]:
            assert item["explanation"]["because"][0] == {
                "item_id": "i42",
                "title": "The Answer",
                "weight": item["explanation"]["because"][0]["weight"],
            }
            assert item["explanation"]["text"] == "Because you interacted with The Answer"

        similar = client.get("/v1/items/i17/similar", params={"k": 3, "explain": "true"}).json()
        assert [i["explanation"]["text"] for i in similar["items"]] == ["Similar to Seventeen"] * 3
        assert [i["explanation"]["because"][0]["weight"] for i in similar["items"]] == [
            i["score"] for i in similar["items"]
        ]

        cold = client.get("/v1/users/nobody-yet/recommendations", params={"k": 2, "explain": "true"}).json()
        assert cold["fallback"] == "popularity"
        assert [i["explanation"]["kind"] for i in cold["items"]] == ["fallback", "fallback"]
        assert client.get(f"/v1/users/{user}/recommendations", params={"explain": "maybe"}).status_code == 422
    finally:
        server.stop()
