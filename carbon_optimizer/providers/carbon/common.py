"""What the live carbon adapters share: the signal kind, and timed points → a `CarbonSeries`.

Kept tiny and pure on purpose: each adapter parses its own wire shape into `(start, value, label)`
points, and this module puts them on a regular lattice. Per-point labels become `SourceRun`s, so a
series that mixes measured and forecast half-hours (GB) says exactly which point is which.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import NoDataForZone
from carbon_optimizer.providers.carbon.base import Signal

__all__ = ["Point", "Signal", "points_to_series"]


@dataclass(frozen=True, slots=True)
class Point:
    """One upstream value: valid on [start, start + step); NaN when upstream sent null."""

    start: datetime
    value: float
    label: str


def points_to_series(
    zone: str,
    points: Sequence[Point],
    *,
    step: timedelta | None,
    emission_factor_type: str,
    source: str,
) -> CarbonSeries:
    """Points → a series on a regular lattice; holes and nulls are NaN (the chain fills them).

    Duplicate start times keep the last point (upstreams repeat a boundary point when ranges are
    paged). A series whose every value is null is no data at all: raised as `NoDataForZone`, so a
    chain moves on to its next source instead of scoring on nothing. `step` None → the smallest gap.
    """
    by_time: dict[datetime, Point] = {p.start: p for p in points}
    if not by_time or all(math.isnan(p.value) for p in by_time.values()):
        raise NoDataForZone(f"{source}: no values for zone {zone}", source=source)
    times = sorted(by_time)
    if step is None:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        step = min(gaps) if gaps else timedelta(hours=1)
    start = times[0]
    count = int((times[-1] - start) // step) + 1
    values = np.full(count, np.nan, dtype=np.float64)
    labels: list[str | None] = [None] * count
    for when in times:
        index = int((when - start) // step)
        values[index] = by_time[when].value
        labels[index] = by_time[when].label
    return CarbonSeries(
        zone=zone,
        start=start,
        step=step,
        values=values,
        runs=_runs(labels),
        emission_factor_type=emission_factor_type,
    )


def _runs(labels: list[str | None]) -> tuple[SourceRun, ...]:
    """Consecutive equal labels → runs; a hole takes the label of the point before it."""
    runs: list[SourceRun] = []
    current = next(label for label in labels if label is not None)
    begin = 0
    for index, label in enumerate(labels):
        if label is not None and label != current:
            runs.append(SourceRun(begin, index, current))
            current, begin = label, index
    runs.append(SourceRun(begin, len(labels), current))
    return tuple(runs)
