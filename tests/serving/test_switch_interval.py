"""``liverec serve``'s interpreter switch interval: 1 ms where the HNSW graph serves the catalogue, else Python's."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from liverec.serving.server import GRAPH_SWITCH_INTERVAL_MS, set_switch_interval, switch_interval_ms
from liverec.settings import Settings


def test_the_graph_gets_the_short_interval_and_exact_scoring_keeps_pythons() -> None:
    settings = Settings(ann_threshold=1000)
    assert switch_interval_ms(settings, 1000) == GRAPH_SWITCH_INTERVAL_MS == 1.0
    assert switch_interval_ms(settings, 999) is None
    assert switch_interval_ms(settings.model_copy(update={"ann_kind": "ivf"}), 5000) is None


def test_a_set_interval_holds_for_every_catalogue() -> None:
    settings = Settings(ann_threshold=1000, switch_interval_ms=2.5)
    assert switch_interval_ms(settings, 10) == 2.5
    assert switch_interval_ms(settings, 10_000) == 2.5


@pytest.mark.parametrize("value", [0, -1, 1001])
def test_an_interval_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="switch_interval_ms"):
        Settings(switch_interval_ms=value)


def test_set_switch_interval_sets_and_none_leaves_it() -> None:
    before = sys.getswitchinterval()
    try:
        set_switch_interval(1.0)
        assert sys.getswitchinterval() == pytest.approx(0.001)
        set_switch_interval(None)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
