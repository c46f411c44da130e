"""The model registry: versions, manifests, promotion pointer, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liverec.data.interactions import Histories, Interactions
from liverec.models import create_model
from liverec.registry import ModelRegistry


def tiny() -> Interactions:
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 1, 2, 2])
    return Interactions.from_arrays(users, items, timestamps=np.arange(5.0), n_users=3, n_items=3)


def test_register_promote_load(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    model = create_model("pop").fit(tiny())
    v1 = registry.register(model, ["a", "b", "c"], metrics={"ndcg@10": 0.1}, training={"n_events": 5})
    v2 = registry.register(model, ["a", "b", "c"], parent=v1)
    assert (v1, v2) == ("v0001", "v0002") and registry.versions() == [v1, v2]
    assert registry.promoted() is None and registry.manifest(v1)["status"] == "candidate"
    registry.promote(v1)
    registry.promote(v2, reason="better")
    assert registry.promoted() == v2
    assert registry.manifest(v1)["status"] == "retired" and registry.manifest(v2)["status"] == "promoted"
    loaded = registry.load(v2)
    assert loaded.item_ids == ["a", "b", "c"] and loaded.manifest["parent"] == v1
    histories = Histories.from_lists([[0]])
    np.testing.assert_allclose(loaded.model.score(histories), model.score(histories))
    assert not list(tmp_path.glob(".*tmp*")), "temporary folders are renamed into place"


def test_gate_decision_is_kept_in_the_manifest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.register(create_model("pop").fit(tiny()), ["a", "b", "c"])
    registry.set_status(version, "rejected", "worse")
    manifest = registry.record_gate(version, {"promoted": False, "candidate_ndcg": 0.1, "serving_ndcg": 0.2})
    gate = registry.manifest(version)["gate"]
    assert manifest["gate"] == gate and gate["promoted"] is False and gate["serving_ndcg"] == 0.2
    assert gate["decided_at"] > 0 and registry.manifest(version)["status"] == "rejected"


def test_errors(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    model = create_model("pop").fit(tiny())
    with pytest.raises(ValueError, match="item_ids: expected 3"):
        registry.register(model, ["a"])
    with pytest.raises(KeyError, match="v0009"):
        registry.promote("v0009")


def test_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    model = create_model("pop").fit(tiny())
    versions = [registry.register(model, ["a", "b", "c"]) for _ in range(3)]
    with pytest.raises(LookupError):
        registry.rollback()  # nothing promoted yet
    for version in versions:
        registry.promote(version)
    assert registry.rollback() == "v0002" and registry.promoted() == "v0002"
    assert registry.manifest("v0003")["status"] == "rejected"
    assert registry.rollback() == "v0001"
    with pytest.raises(LookupError):
        registry.rollback()


def every_byte(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def test_forget_users_rewrites_the_versions_that_list_them(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    users = ["alice", "erase-me-7f3a9c", "carol"]
    mf = create_model("mf-bpr", seed=0, n_epochs=2).fit(tiny())
    pop = create_model("pop").fit(tiny())
    v1 = registry.register(mf, ["a", "b", "c"], user_ids=users, training={"first_offset": 1, "last_offset": 5})
    v2 = registry.register(pop, ["a", "b", "c"], user_ids=users, training={"first_offset": 1, "last_offset": 5})
    v3 = registry.register(pop, ["a", "b", "c"], training={"kind": "online update", "last_offset": 9})
    v4 = registry.register(pop, ["a", "b", "c"], training={"first_offset": 6, "last_offset": 9})
    registry.promote(v1)
    (tmp_path / ".v0009.tmp").mkdir()  # a registration that crashed half-way
    (tmp_path / ".v0009.tmp" / "user_ids.json").write_text('["erase-me-7f3a9c"]')
    assert b"erase-me-7f3a9c" in every_byte(tmp_path)

    result = registry.forget_users(["erase-me-7f3a9c"], offsets=[3, 4])
    assert result.rewritten == [v1, v2] and result.rows_deleted == 1
    assert result.trained_on == [v1, v2, v3]  # v3 by its offsets (an online update learns everything up to it)
    assert b"erase-me-7f3a9c" not in every_byte(tmp_path)
    assert registry.versions() == [v1, v2, v3, v4] and not list(tmp_path.glob(".v*"))
    loaded = registry.load(v1)
    assert loaded.user_ids == ["alice", "carol"] and loaded.model.n_users == 2
    assert loaded.manifest["erasures"] == 1 and loaded.manifest["status"] == "promoted" and registry.promoted() == v1
    rows = Histories(np.array([0, 1]), np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int64))
    before = mf.score(Histories(np.array([0, 2]), np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int64)))
    np.testing.assert_allclose(loaded.model.score(rows), before, rtol=1e-6)  # carol keeps her row
    assert registry.forget_users(["erase-me-7f3a9c"]).rewritten == []  # idempotent


def test_a_failing_guard_refuses_the_registration(tmp_path: Path) -> None:
    from liverec.registry import RegistrationRefused

    registry = ModelRegistry(tmp_path)
    model = create_model("pop").fit(tiny())
    with pytest.raises(RegistrationRefused):
        registry.register(model, ["a", "b", "c"], guard=lambda: False)
    assert registry.versions() == []
    assert registry.register(model, ["a", "b", "c"], guard=lambda: True) == "v0001"
