"""The chain's aligned sampling (one slice) against the general lookup it short-cuts.

A zone's first answer of an hour samples every source onto its canvas; almost always the source
is on the canvas's own hourly lattice, and `_sample` then takes `_sample_aligned`. It must give the
very values and labels the general path gives, wherever the series lies against the canvas.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.providers.carbon.chain import _sample, _sample_aligned, _sample_general

HOUR = timedelta(hours=1)
T0 = datetime(2026, 12, 2, tzinfo=UTC)


def _named(values: np.ndarray, ids: np.ndarray, labels: list[str]) -> list[tuple[float | None, str | None]]:
    """Each slot as (value or None for NaN, label text or None): ids differ with registration order."""
    return [
        (None if np.isnan(v) else float(v), None if i < 0 else labels[i])
        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
    ]


@st.composite
def series_and_canvas(draw: st.DrawFn) -> tuple[CarbonSeries, datetime, int]:
    n = draw(st.integers(0, 60))
    values = np.array(draw(st.lists(st.floats(0, 900) | st.just(float("nan")), min_size=n, max_size=n)))
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=6))) | {0, n})
    names = ["electricitymaps:forecast", "forecast:profile-ar", "watttime:history", "fallback:replay-2023"]
    runs = tuple(
        SourceRun(a, b, draw(st.sampled_from(names)))
        for a, b in itertools.pairwise(cuts)
        if b > a and draw(st.integers(0, 3)) > 0  # a quarter of the runs dropped: unlabelled points
    )
    series = CarbonSeries(zone="DE", start=T0, step=HOUR, values=values, runs=runs)
    start = T0 + HOUR * draw(st.integers(-70, 70))
    return series, start, draw(st.integers(0, 90))


@settings(max_examples=300, deadline=None)
@given(
    series_and_canvas(),
    st.lists(st.sampled_from(["forecast:profile-ar", "fallback:annual-2025"]), max_size=2),
)
def test_aligned_sampling_equals_the_general_lookup(
    drawn: tuple[CarbonSeries, datetime, int], known: list[str]
) -> None:
    """Same values and labels slot by slot, inside, across and outside the series, gaps in runs too."""
    series, start, count = drawn
    fast_labels, slow_labels = list(dict.fromkeys(known)), list(dict.fromkeys(known))
    fast = _sample(series, start, HOUR, count, fast_labels)
    offset = (start - series.start) // HOUR
    slow = _sample_general(series, offset * 3600.0, 3600.0, 3600.0, count, slow_labels)
    assert _named(*fast, fast_labels) == _named(*slow, slow_labels)
    assert fast[0].shape == fast[1].shape == (count,)


def test_sampling_takes_the_aligned_path_only_on_the_canvas_lattice() -> None:
    """A half-hour offset or another step is looked up by the general path (and still right)."""
    values = np.arange(6, dtype=np.float64)
    series = CarbonSeries(
        zone="DE", start=T0, step=HOUR, values=values, runs=(SourceRun(0, 6, "a:forecast"),)
    )
    labels: list[str] = []
    shifted, ids = _sample(series, T0 + timedelta(minutes=30), HOUR, 4, labels)
    assert shifted.tolist() == [0.0, 1.0, 2.0, 3.0]  # floor lookup: slot 0 starts inside point 0
    assert [labels[i] for i in ids.tolist()] == ["a:forecast"] * 4
    quarter = CarbonSeries(
        zone="DE", start=T0, step=timedelta(minutes=15), values=np.arange(8.0), runs=(SourceRun(0, 8, "q"),)
    )
    means, _ = _sample(quarter, T0, HOUR, 2, [])
    assert means.tolist() == [1.5, 5.5]  # averaged over each hour's four quarters
    aligned, aligned_ids = _sample_aligned(series, -2, 4, labels)
    assert np.isnan(aligned[:2]).all()
    assert aligned[2:].tolist() == [0.0, 1.0]
    assert aligned_ids.tolist()[:2] == [-1, -1]
