"""``histogram_quantile``: the p99 of ``GET /v1/stats``, from cumulative buckets as Prometheus computes it."""

from __future__ import annotations

import math

import pytest

from liverec.serving.stats import histogram_quantile

INF = math.inf


def test_interpolates_inside_the_bucket_that_holds_the_rank() -> None:
    # 100 observations: 50 in (0, 0.001], 40 in (0.001, 0.002], 10 in (0.002, 0.004]
    buckets = ((0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (INF, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.0015)  # rank 70: half-way through the second
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.0038)  # rank 99: 9 of 10 into (0.002, 0.004]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.0005)  # the first bucket starts at 0


def test_a_rank_in_the_open_bucket_is_the_highest_finite_bound() -> None:
    buckets = ((0.001, 1.0), (0.002, 2.0), (INF, 10.0))
    assert histogram_quantile(0.99, buckets) == 0.002


def test_nothing_counted_is_none_and_a_quantile_outside_0_1_is_refused() -> None:
    assert histogram_quantile(0.99, ()) is None
    assert histogram_quantile(0.99, ((0.001, 0.0), (INF, 0.0))) is None
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, ((INF, 1.0),))
