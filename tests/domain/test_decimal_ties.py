"""Windows whose means are equal in decimal tie exactly, and the contract's tie rule decides.

Before the decimal quantum, intensities were truncated to multiples of 2**-20 g/kWh, so a window of
100.2, 100.2 and one of 100.1, 100.3 differed by ~5e-7 g/kWh and the "better" one was noise.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import Objective, ObjectiveMode
from carbon_optimizer.domain.scoring import (
    ScoringInput,
    ScoringResult,
    candidate_grid,
    rank_candidates,
    window_means,
)
from carbon_optimizer.domain.series import INTENSITY_DECIMALS, IntensityGrid

T0 = datetime(2026, 6, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)


def rank(
    values: list[list[float]], duration_h: int, step_h: int, mode: ObjectiveMode = ObjectiveMode.CARBON
) -> ScoringResult:
    grid = IntensityGrid(T0, HOUR, np.array(values, dtype=np.float64))
    end = T0 + HOUR * len(values[0])
    rows = len(values)
    return rank_candidates(
        ScoringInput(
            grid=grid,
            candidates=candidate_grid(T0, end, HOUR * duration_h, HOUR * step_h),
            energy_kwh=np.full(rows, 0.5),
            cost_usd=np.full(rows, 1.25),
            objective=Objective(mode=mode),
            max_results=rows * (len(values[0]) // step_h),
        )
    )


def test_the_scale_is_decimal_micrograms() -> None:
    assert INTENSITY_DECIMALS == 6
    prefix = IntensityGrid(T0, HOUR, np.array([[100.1, 100.3, 100.2, 100.2]])).prefix_sums()
    assert prefix.scale == 1e6
    assert np.diff(prefix.cumulative[0]).tolist() == [100_100_000, 100_300_000, 100_200_000, 100_200_000]


def test_equal_decimal_means_tie_to_the_earlier_start() -> None:
    # The later window (100.1, 100.3) used to come out ~5e-7 lower and win.
    result = rank([[100.2, 100.2, 100.1, 100.3]], duration_h=2, step_h=2)
    first, second = result.ranked
    assert first.avg_intensity_g_per_kwh == second.avg_intensity_g_per_kwh
    assert first.score == second.score
    assert (first.start_index, second.start_index) == (0, 1)


def test_equal_decimal_means_tie_to_the_earlier_location() -> None:
    for mode in (ObjectiveMode.CARBON, ObjectiveMode.BALANCED):
        result = rank([[100.2, 100.2], [100.1, 100.3]], duration_h=2, step_h=2, mode=mode)
        assert [c.location_index for c in result.ranked] == [0, 1]
        assert result.ranked[0].score == result.ranked[1].score
        swapped = rank([[100.1, 100.3], [100.2, 100.2]], duration_h=2, step_h=2, mode=mode)
        assert [c.location_index for c in swapped.ranked] == [0, 1]


def test_real_differences_at_the_scale_still_rank() -> None:
    result = rank([[100.2, 100.2, 100.2, 100.200002]], duration_h=2, step_h=2)
    assert [c.start_index for c in result.ranked] == [0, 1]
    assert result.ranked[0].avg_intensity_g_per_kwh < result.ranked[1].avg_intensity_g_per_kwh


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2_000_000), min_size=2, max_size=12),
    st.integers(min_value=1, max_value=3),
    st.randoms(use_true_random=False),
)
def test_permuted_windows_have_identical_means(ticks: list[int], decimals: int, rng: random.Random) -> None:
    # Values with up to 3 decimals; a window and any permutation of it have the same decimal mean.
    values = [t / 10**decimals for t in ticks]
    shuffled = list(values)
    rng.shuffle(shuffled)
    grid = IntensityGrid(T0, HOUR, np.array([values + shuffled], dtype=np.float64))
    n = len(values)
    means = window_means(grid, np.array([0.0, n * 60.0]), n * 60.0)
    assert means[0, 0] == means[0, 1]


def test_subnormal_intensities_keep_the_full_decimal_scale() -> None:
    # Found by hypothesis: a bound this small made log10(inf) → floor(inf) raise OverflowError.
    prefix = IntensityGrid(T0, HOUR, np.array([[5e-324, 0.0, 5e-324]])).prefix_sums()
    assert prefix.scale == 10.0**INTENSITY_DECIMALS
    assert int(prefix.cumulative[0, -1]) == 0  # far below one quantum
