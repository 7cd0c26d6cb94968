"""The probabilistic forecaster: exact on noiseless cycles, calibrated on noisy ones, strict on input."""

from __future__ import annotations

import numpy as np
import pytest

from carbon_optimizer.domain import backtest as bt
from carbon_optimizer.domain import forecast as fc


def cycle(hours: int, level: float = 300.0, weekend: float = -40.0) -> np.ndarray:
    """Daily and weekly cycle (solar dip, weekend low) with no noise."""
    t = np.arange(hours)
    daily = 60.0 * np.cos(2 * np.pi * (t % 24) / 24)
    return level + daily + np.where((t // 24) % 7 >= 5, weekend, 0.0)


def test_weekly_cycle_is_followed_within_the_blend_s_dilution() -> None:
    # The daily half averages the weekend into every day, the weekly half is exact: the p50 errs
    # less than repeating the last day (off by the full 40 on the days after a weekday change).
    y = cycle(fc.FULL_HISTORY_HOURS + 168)
    out = fc.forecast(y[: fc.FULL_HISTORY_HOURS])
    truth = y[fc.FULL_HISTORY_HOURS :]
    naive = bt.seasonal_daily(y[: fc.FULL_HISTORY_HOURS], 168)[1]
    assert np.abs(out.p50 - truth).max() < np.abs(naive - truth).max() == 40.0
    assert np.abs(out.p50 - truth).mean() < np.abs(naive - truth).mean()
    # Noiseless, so the band is the spread of the same deterministic dilution errors seen in
    # calibration, centred on the p50 (the calibration median is not added: on real grids it
    # does not carry over): it still holds more than half of the hours, most of them exactly.
    assert np.mean((truth >= out.p10) & (truth <= out.p90)) >= 0.5


def noisy(hours: int, seed: int, sigma: float = 30.0, rho: float = 0.95) -> np.ndarray:
    """The cycle plus AR(1) weather noise (what real grids look like, roughly)."""
    rng = np.random.default_rng(seed)
    e = np.empty(hours)
    e[0] = rng.normal(0, sigma)
    for i in range(1, hours):
        e[i] = rho * e[i - 1] + np.sqrt(1 - rho**2) * rng.normal(0, sigma)
    return cycle(hours) + e


def test_noiseless_daily_cycle_is_forecast_exactly_with_a_zero_width_band() -> None:
    y = cycle(fc.FULL_HISTORY_HOURS + 168, weekend=0.0)
    out = fc.forecast(y[: fc.FULL_HISTORY_HOURS])
    assert out.model == fc.MODEL_NAME
    np.testing.assert_allclose(out.p50, y[fc.FULL_HISTORY_HOURS :], atol=1e-9)
    np.testing.assert_allclose(out.p90 - out.p10, 0.0, atol=1e-9)


def test_quantiles_are_ordered_non_negative_and_of_the_requested_horizon() -> None:
    y = np.maximum(noisy(fc.FULL_HISTORY_HOURS, seed=3, sigma=200.0), 0.0)
    out = fc.forecast(y, horizon=48)
    assert out.values.shape == (3, 48)
    assert out.quantiles == (0.1, 0.5, 0.9)
    assert np.all(np.diff(out.values, axis=0) >= 0)
    assert np.all(out.values >= 0)
    assert not out.values.flags.writeable


def test_p10_p90_band_covers_about_80_percent_of_noisy_outcomes() -> None:
    inside, total = 0, 0
    for seed in range(6):
        y = noisy(fc.FULL_HISTORY_HOURS + 168, seed=seed)
        out = fc.forecast(y[: fc.FULL_HISTORY_HOURS])
        truth = y[fc.FULL_HISTORY_HOURS :]
        inside += int(np.sum((truth >= out.p10) & (truth <= out.p90)))
        total += truth.size
    assert 0.65 <= inside / total <= 0.95


def test_level_adjustment_follows_a_fresh_anomaly_at_short_leads_and_forgets_it_later() -> None:
    y = noisy(fc.FULL_HISTORY_HOURS, seed=11)
    fitted = fc.fit(y)
    assert fitted.beta[0, 0] > 0.5 > fitted.beta[0, -1]
    shifted = y.copy()
    shifted[-3:] += 100.0  # the last hours jump: the first forecast hours should follow
    base, moved = fc.predict(y, fitted).p50, fc.predict(shifted, fitted).p50
    assert moved[0] - base[0] > 50.0
    assert abs(moved[-1] - base[-1]) < moved[0] - base[0]


def momentum(hours: int, seed: int, sigma: float = 4.0) -> np.ndarray:
    """The cycle plus a smooth AR(2) anomaly with momentum: a rising anomaly keeps rising for hours."""
    rng = np.random.default_rng(seed)
    e = np.zeros(hours)
    for i in range(2, hours):
        e[i] = 1.8 * e[i - 1] - 0.82 * e[i - 2] + rng.normal(0, sigma)
    return cycle(hours) + e


@pytest.mark.parametrize("seed", [0, 1])
def test_level_adjustment_carries_a_ramp_s_trend_forward(seed: int) -> None:
    # Where anomalies have momentum, the fit gives the 1 h anomaly a weight above 1 and the 6 h one
    # a negative weight at short leads, so a ramp over the last 6 hours is extrapolated beyond its
    # last step. With weights clipped to [0, 1] (the earlier model) the first hour moved by 60 at most.
    y = momentum(fc.FULL_HISTORY_HOURS, seed)
    fitted = fc.fit(y)
    assert fitted.beta[0, 0] > 1.0
    assert fitted.beta[1, 0] < 0.0
    assert np.all((fitted.beta >= fc.BETA_BOUNDS[0]) & (fitted.beta <= fc.BETA_BOUNDS[1]))
    ramp = y.copy()
    ramp[-6:] += 10.0 * np.arange(1, 7)  # the anomaly rose by 10 per hour, to +60 in the last hour
    moved = fc.predict(ramp, fitted).p50 - fc.predict(y, fitted).p50
    assert moved[0] > 62.0
    assert abs(moved[-1]) < 30.0  # and still forgotten a week later


def test_p50_is_the_band_s_median_offset_free_point_and_the_fit_is_deterministic() -> None:
    y = noisy(fc.FULL_HISTORY_HOURS, seed=5)
    a, b = fc.fit(y), fc.fit(y.copy())
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.beta, b.beta)
    np.testing.assert_array_equal(fc.predict(y, a).values, fc.predict(y, b).values)
    assert np.all(a.offsets[fc.QUANTILES.index(0.5)] == 0.0)
    assert np.all(a.offsets[0] <= 0.0)
    assert np.all(a.offsets[-1] >= 0.0)


def test_the_last_hour_moves_the_first_forecast_hour_by_most_of_its_change() -> None:
    y = noisy(fc.FULL_HISTORY_HOURS, seed=8)
    bumped = y.copy()
    bumped[-1] += 50.0
    moved = fc.forecast(bumped).p50 - fc.forecast(y).p50
    assert moved[0] > 25.0
    assert abs(moved[-1]) < 0.2 * moved[0]


def test_short_history_is_accepted_down_to_the_minimum_and_says_so() -> None:
    y = noisy(fc.min_history_hours(168), seed=2)
    out = fc.forecast(y)
    assert out.model == f"{fc.MODEL_NAME}-short"
    with pytest.raises(ValueError, match="at least"):
        fc.forecast(y[:-1])


@pytest.mark.parametrize("horizon", [0, 169])
def test_horizon_outside_one_week_is_refused(horizon: int) -> None:
    with pytest.raises(ValueError, match="horizon"):
        fc.fit(cycle(fc.FULL_HISTORY_HOURS), horizon)


def test_non_finite_history_is_refused() -> None:
    y = cycle(fc.FULL_HISTORY_HOURS)
    y[100] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fc.fit(y)


def test_predict_cannot_exceed_the_fitted_horizon() -> None:
    y = cycle(fc.FULL_HISTORY_HOURS)
    fitted = fc.fit(y, horizon=24)
    assert fc.predict(y, fitted, 12).horizon == 12
    with pytest.raises(ValueError, match="horizon"):
        fc.predict(y, fitted, 25)
