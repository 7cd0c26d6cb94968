"""The CarbonSeries adapter of the forecaster: labels, alignment, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.domain.forecast import FULL_HISTORY_HOURS, MODEL_NAME, min_history_hours
from carbon_optimizer.domain.forecast_series import forecast_from_history, forecast_label
from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.providers.catalog import load_hourly_carbon

START = datetime(2023, 1, 1, tzinfo=UTC)


def history(hours: int, step: timedelta = timedelta(hours=1)) -> CarbonSeries:
    hourly = load_hourly_carbon()
    values = hourly.lifecycle[hourly.zones.index("GB")][:hours].copy()
    return CarbonSeries(
        zone="GB", start=START, step=step, values=values, runs=(SourceRun(0, hours, "fallback:replay-2023"),)
    )


def test_forecast_starts_where_the_history_ends_and_is_labelled_with_the_model() -> None:
    hist = history(FULL_HISTORY_HOURS)
    out = forecast_from_history(hist, 72)
    assert out.series.start == hist.end == out.history_end
    assert out.series.zone == "GB"
    assert len(out.series.values) == out.hours == 72
    assert out.series.sources_between(out.series.start, out.series.end) == (forecast_label(MODEL_NAME),)
    assert forecast_label(MODEL_NAME) == "forecast:profile-ar"
    np.testing.assert_array_equal(out.series.values, out.band[1])
    assert np.all(np.diff(out.band, axis=0) >= 0)
    assert not out.series.values.flags.writeable


def test_a_short_history_is_labelled_short_and_too_short_refused() -> None:
    out = forecast_from_history(history(min_history_hours(24)), 24)
    assert out.series.runs[0].label == forecast_label(f"{MODEL_NAME}-short")
    with pytest.raises(ValueError, match="at least"):
        forecast_from_history(history(min_history_hours(24) - 1), 24)


def test_non_hourly_history_is_refused() -> None:
    with pytest.raises(ValueError, match="hourly"):
        forecast_from_history(history(FULL_HISTORY_HOURS, step=timedelta(minutes=30)))
