"""The forecaster in the service's vocabulary: a history `CarbonSeries` in, a forecast series out.

Why a separate module: `domain/forecast.py` works on bare arrays (so the backtest can run it on
slices); the carbon chain speaks `CarbonSeries` with source labels. This adapter is the seam the
chain will call at cache fill (never per request): it checks the history is hourly, fits, and
returns the p50 as a series labelled `forecast:<model>` (the `carbon_source` an option reports)
plus the p10/p50/p90 band aligned with it, for `domain/uncertainty.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from carbon_optimizer.domain import forecast as fc
from carbon_optimizer.domain.models import CarbonSeries, FloatArray, SourceRun

HOUR = timedelta(hours=1)
LABEL_PREFIX = "forecast:"


def forecast_label(model: str) -> str:
    """`carbon_source` label of a forecast by `model` (e.g. `forecast:profile-ar`)."""
    return f"{LABEL_PREFIX}{model}"


@dataclass(frozen=True, eq=False, slots=True)
class ForecastSeries:
    """A fitted forecast: the p50 series, its quantile band and what it was fitted on."""

    series: CarbonSeries  # p50, starting at the end of the history, labelled forecast:<model>
    band: FloatArray  # (3, hours): p10, p50, p90, aligned with `series.values`
    model: str
    history_start: datetime
    history_end: datetime  # == series.start: the forecast uses nothing after it

    @property
    def hours(self) -> int:
        """Number of hours forecast."""
        return int(self.band.shape[1])


def forecast_from_history(history: CarbonSeries, horizon_hours: int = fc.MAX_HORIZON_HOURS) -> ForecastSeries:
    """Fit on an hourly history and forecast the `horizon_hours` after its end.

    Raises ValueError for a non-hourly step, a history shorter than `fc.min_history_hours`,
    non-finite values or a horizon outside 1–168 h.
    """
    if history.step != HOUR:
        raise ValueError(f"forecast history must be hourly, got step {history.step}")
    out = fc.forecast(np.asarray(history.values, dtype=np.float64), horizon_hours)
    p50 = np.array(out.p50, dtype=np.float64)
    p50.setflags(write=False)
    series = CarbonSeries(
        zone=history.zone,
        start=history.end,
        step=HOUR,
        values=p50,
        runs=(SourceRun(0, out.horizon, forecast_label(out.model)),),
        emission_factor_type=history.emission_factor_type,
    )
    return ForecastSeries(
        series=series,
        band=out.values,
        model=out.model,
        history_start=history.start,
        history_end=history.end,
    )
