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
