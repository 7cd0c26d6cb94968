"""Timed points → CarbonSeries: the lattice, per-point provenance runs, duplicates, all-null."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from carbon_optimizer.errors import NoDataForZone
from carbon_optimizer.providers.carbon.common import Point, points_to_series

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
HALF = timedelta(minutes=30)


def at(i: int, value: float, label: str = "a") -> Point:
    return Point(T0 + i * HALF, value, label)


def test_holes_are_nan_and_keep_the_label_before_them() -> None:
    series = points_to_series(
        "GB",
        [at(0, 1.0), at(1, 2.0, "b"), at(4, 5.0, "b"), at(5, 6.0)],
        step=HALF,
        emission_factor_type="direct",
        source="t",
    )
    assert len(series.values) == 6
    assert [math.isnan(v) for v in series.values] == [False, False, True, True, False, False]
    assert [(r.start_index, r.end_index, r.label) for r in series.runs] == [
        (0, 1, "a"),
        (1, 5, "b"),
        (5, 6, "a"),
    ]
    assert series.emission_factor_type == "direct"


def test_unsorted_duplicates_keep_the_last_point_and_step_is_the_smallest_gap() -> None:
    series = points_to_series(
        "GB",
        [at(2, 3.0), at(0, 1.0), at(2, 9.0), at(1, 2.0)],
        step=None,
        emission_factor_type="direct",
        source="t",
    )
    assert series.step == HALF
    assert series.start == T0
    assert series.values.tolist() == [1.0, 2.0, 9.0]


@pytest.mark.parametrize("points", [[], [at(0, math.nan), at(1, math.nan)]])
def test_nothing_or_all_null_is_no_data(points: list[Point]) -> None:
    with pytest.raises(NoDataForZone, match="no values"):
        points_to_series("GB", points, step=HALF, emission_factor_type="direct", source="t")
