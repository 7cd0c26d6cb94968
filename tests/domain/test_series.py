"""IntensityGrid and align_series: resampling onto one grid, coverage and lattice rules, prefix sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.domain.series import IntensityGrid, align_series

T0 = datetime(2026, 11, 24, tzinfo=UTC)
HOUR = timedelta(hours=1)
QUARTER = timedelta(minutes=15)


def make_series(zone: str, start: datetime, step: timedelta, values: list[float]) -> CarbonSeries:
    return CarbonSeries(
        zone=zone,
        start=start,
        step=step,
        values=np.array(values, dtype=np.float64),
        runs=(SourceRun(0, len(values), "test"),),
    )


class TestIntensityGrid:
    def test_minutes_from_start_and_end(self) -> None:
        grid = IntensityGrid(T0, QUARTER, np.zeros((2, 8)))
        assert grid.minutes_from_start(T0 + timedelta(minutes=67, seconds=30)) == 67.5
        assert grid.minutes_from_start(T0 - HOUR) == -60.0
        assert grid.end == T0 + 2 * HOUR

    def test_minutes_from_start_accepts_other_offsets(self) -> None:
        grid = IntensityGrid(T0, HOUR, np.zeros((1, 4)))
        plus_two = timezone(timedelta(hours=2))
        assert grid.minutes_from_start(datetime(2026, 11, 24, 3, 0, tzinfo=plus_two)) == 60.0

    def test_rejects_naive_start(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            IntensityGrid(datetime(2026, 11, 24), HOUR, np.zeros((1, 4)))

    def test_rejects_non_positive_step(self) -> None:
        with pytest.raises(ValueError, match="step"):
            IntensityGrid(T0, timedelta(0), np.zeros((1, 4)))

    @pytest.mark.parametrize("shape", [(4,), (2, 0), (0, 3), (1, 2, 3)])
    def test_rejects_bad_shapes(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match="shape"):
            IntensityGrid(T0, HOUR, np.zeros(shape))

    def test_values_are_read_only_and_float64(self) -> None:
        grid = IntensityGrid(T0, HOUR, np.array([[1, 2, 3]], dtype=np.int32))
        assert grid.values.dtype == np.float64
        with pytest.raises(ValueError, match="read-only"):
            grid.values[0, 0] = 5.0

    def test_prefix_sums_are_cached_and_exact(self) -> None:
        grid = IntensityGrid(T0, QUARTER, np.array([[123.4, 123.4, 123.4, 0.1]]))
        prefix = grid.prefix_sums()
        assert grid.prefix_sums() is prefix
        assert prefix.cumulative.dtype == np.int64
        assert prefix.cumulative.shape == (1, 5)
        steps = np.diff(prefix.cumulative[0])
        # Equal values quantise to equal integers, so equal windows have equal integrals.
        assert steps[0] == steps[1] == steps[2]
        assert steps[0] / prefix.scale == pytest.approx(123.4, abs=1e-6)

    def test_prefix_sums_reject_non_finite(self) -> None:
        grid = IntensityGrid(T0, HOUR, np.array([[1.0, 2.0], [np.nan, 1.0]]))
        with pytest.raises(ValueError, match=r"non-finite values in rows \[1\]"):
            grid.prefix_sums()


class TestAlignSeries:
    def test_hourly_series_is_sliced_to_the_range(self) -> None:
        series = make_series("DE", T0, HOUR, [10, 20, 30, 40, 50, 60])
        grid = align_series([series], T0 + HOUR, T0 + 4 * HOUR)
        assert grid.start == T0 + HOUR
        assert grid.step == HOUR
        np.testing.assert_array_equal(grid.values, [[20, 30, 40]])

    def test_grid_start_is_floored_and_end_is_covered(self) -> None:
        series = make_series("DE", T0, HOUR, [10, 20, 30, 40, 50, 60])
        grid = align_series([series], T0 + timedelta(hours=1, minutes=7), T0 + timedelta(hours=3, minutes=1))
        assert grid.start == T0 + HOUR
        assert grid.end == T0 + 4 * HOUR
        np.testing.assert_array_equal(grid.values, [[20, 30, 40]])

    def test_sixty_and_fifteen_minute_series_share_a_fifteen_minute_grid(self) -> None:
        hourly = make_series("DE", T0, HOUR, [100, 200, 300])
        quarter = make_series("FR", T0 + HOUR, QUARTER, [1, 2, 3, 4, 5, 6, 7, 8])
        start = T0 + timedelta(hours=1, minutes=20)  # floors to 01:15 on the 15-minute lattice
        grid = align_series([hourly, quarter], start, T0 + 3 * HOUR)
        assert grid.step == QUARTER
        assert grid.start == T0 + timedelta(hours=1, minutes=15)
        # 01:15 .. 03:00 is 7 quarter hours; the hourly value repeats from mid-hour on.
        np.testing.assert_array_equal(
            grid.values,
            [[200, 200, 200, 300, 300, 300, 300], [2, 3, 4, 5, 6, 7, 8]],
        )

    def test_gcd_of_forty_five_and_sixty_minutes(self) -> None:
        # Every UTC midnight is on the 45-minute epoch lattice (1440 = 32 × 45).
        forty_five = make_series("X", T0, timedelta(minutes=45), [1, 2, 3, 4])
        hourly = make_series("Y", T0, HOUR, [10, 20, 30])
        grid = align_series([forty_five, hourly], T0, T0 + 3 * HOUR)
        assert grid.step == QUARTER
        np.testing.assert_array_equal(grid.values[0], [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])
        np.testing.assert_array_equal(grid.values[1], [10] * 4 + [20] * 4 + [30] * 4)

    def test_rows_keep_input_order_and_series_may_start_earlier(self) -> None:
        early = make_series("A", T0 - 2 * HOUR, HOUR, [1, 2, 3, 4, 5])
        exact = make_series("B", T0, HOUR, [7, 8, 9])
        grid = align_series([exact, early], T0, T0 + 3 * HOUR)
        np.testing.assert_array_equal(grid.values, [[7, 8, 9], [3, 4, 5]])

    def test_resampling_preserves_window_means(self) -> None:
        hourly = make_series("DE", T0, HOUR, [100, 200, 300, 400])
        fine = make_series("FR", T0, timedelta(minutes=5), [0.0] * 48)
        grid = align_series([hourly, fine], T0, T0 + 4 * HOUR)
        assert grid.step == timedelta(minutes=5)
        assert grid.values.shape == (2, 48)
        assert grid.values[0].mean() == pytest.approx(250.0)

    def test_series_not_covering_the_start_names_the_zone(self) -> None:
        late = make_series("PL", T0 + HOUR, HOUR, [1, 2, 3])
        with pytest.raises(ValueError, match="'PL'"):
            align_series([late], T0, T0 + 2 * HOUR)

    def test_series_not_covering_the_floored_start_names_the_zone(self) -> None:
        # start 00:20 floors to 00:15 on the common 15-minute grid; FR only starts at 00:30.
        hourly = make_series("DE", T0, HOUR, [1, 2, 3])
        quarter = make_series("FR", T0 + timedelta(minutes=30), QUARTER, [1.0] * 8)
        with pytest.raises(ValueError, match="'FR'"):
            align_series([hourly, quarter], T0 + timedelta(minutes=20), T0 + 2 * HOUR)

    def test_series_not_covering_the_end_names_the_zone(self) -> None:
        ok = make_series("DE", T0, HOUR, [1, 2, 3])
        short = make_series("ES", T0, HOUR, [1, 2])
        with pytest.raises(ValueError, match="'ES'"):
            align_series([ok, short], T0, T0 + 3 * HOUR)

    def test_end_inside_the_last_interval_is_covered(self) -> None:
        series = make_series("DE", T0, HOUR, [1, 2, 3])
        grid = align_series([series], T0, T0 + timedelta(hours=2, minutes=30))
        np.testing.assert_array_equal(grid.values, [[1, 2, 3]])

    def test_start_off_its_own_lattice_is_rejected(self) -> None:
        shifted = make_series("IT", T0 + timedelta(minutes=30), HOUR, [1, 2, 3])
        with pytest.raises(ValueError, match=r"'IT'.*lattice"):
            align_series([shifted], T0 + HOUR, T0 + 2 * HOUR)

    def test_step_must_be_whole_minutes(self) -> None:
        odd = make_series("NL", T0, timedelta(seconds=90), [1.0] * 10)
        with pytest.raises(ValueError, match=r"'NL'.*whole number of minutes"):
            align_series([odd], T0, T0 + timedelta(minutes=9))

    def test_non_finite_values_in_range_name_the_zone(self) -> None:
        good = make_series("DE", T0, HOUR, [1, 2, 3])
        bad = make_series("BE", T0, HOUR, [1, float("nan"), 3])
        with pytest.raises(ValueError, match=r"\['BE'\]"):
            align_series([good, bad], T0, T0 + 3 * HOUR)

    def test_non_finite_values_outside_the_range_are_ignored(self) -> None:
        series = make_series("BE", T0, HOUR, [float("nan"), 2, 3])
        grid = align_series([series], T0 + HOUR, T0 + 3 * HOUR)
        np.testing.assert_array_equal(grid.values, [[2, 3]])

    def test_empty_input_and_empty_range_are_rejected(self) -> None:
        series = make_series("DE", T0, HOUR, [1, 2, 3])
        with pytest.raises(ValueError, match="at least one"):
            align_series([], T0, T0 + HOUR)
        with pytest.raises(ValueError, match="empty range"):
            align_series([series], T0 + HOUR, T0 + HOUR)
        with pytest.raises(ValueError, match="timezone-aware"):
            align_series([series], datetime(2026, 11, 24), T0 + HOUR)
