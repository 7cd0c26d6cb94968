"""Backtest predictors and the decision metric on small, hand-checkable slices."""

from __future__ import annotations

import numpy as np
import pytest

from carbon_optimizer.domain import backtest as bt
from carbon_optimizer.domain.forecast import FULL_HISTORY_HOURS
from carbon_optimizer.providers.catalog import load_hourly_carbon


def test_naive_predictors_read_the_right_lags() -> None:
    y = np.arange(1000, dtype=np.float64)
    assert np.all(bt.persistence(y, 5) == 999.0)
    np.testing.assert_array_equal(bt.seasonal_daily(y, 30)[1], [976 + (h % 24) for h in range(30)])
    np.testing.assert_array_equal(bt.seasonal_weekly(y, 3)[1], [832, 833, 834])
    np.testing.assert_array_equal(bt.replay_proxy(y, 3)[1], [1000 - 672, 1001 - 672, 1002 - 672])


def test_predictors_see_no_future() -> None:
    y = load_hourly_carbon().lifecycle[0][: FULL_HISTORY_HOURS + 400].astype(np.float64)
    origins = np.array([FULL_HISTORY_HOURS, FULL_HISTORY_HOURS + 101])
    preds = {**bt.NAIVE_PREDICTORS, "forecast": bt.forecaster}
    base = bt.run_backtest(y, origins, preds, horizon=48)
    scrambled = y.copy()
    scrambled[origins[0] :] = 0.0  # everything from the first origin on changes
    again = bt.run_backtest(scrambled, origins[:1], preds, horizon=48)
    for name in preds:
        np.testing.assert_array_equal(again.paths[name][0], base.paths[name][0])


def run_with(truth: np.ndarray, guess: np.ndarray) -> bt.BacktestRun:
    paths = np.repeat(guess[:, None, :], 3, axis=1)
    return bt.BacktestRun(
        origins=np.arange(truth.shape[0]), truth=truth, paths={"g": paths}, probabilistic=frozenset()
    )


def test_decision_share_is_one_for_the_truth_zero_for_a_flat_guess_negative_when_inverted() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(100, 500, (40, 48))
    jobs = bt.random_jobs(40, 5, seed=2)
    assert bt.decision_share(run_with(truth, truth), "g", jobs) == pytest.approx(1.0)
    assert bt.decision_share(run_with(truth, np.ones_like(truth)), "g", jobs) == pytest.approx(0.0)
    assert bt.decision_share(run_with(truth, -truth), "g", jobs) < 0.0


def test_decision_picks_the_cheapest_window_inside_the_job_window_only() -> None:
    truth = np.full((1, 48), 100.0)
    truth[0, 30:33] = 10.0  # a dip beyond the 12 h window must not be chosen
    truth[0, 5:7] = 50.0
    jobs = bt.Jobs(origin_row=np.array([0]), duration=np.array([2]), window=np.array([12]))
    assert bt.decision_share(run_with(truth, truth), "g", jobs) == pytest.approx(1.0)
    means = bt._window_means(truth, jobs.duration, jobs.window)
    assert means.shape[1] == 11
    assert np.isinf(means).sum() == 0
    assert means[0].min() == 50.0


def test_bucket_metrics_and_coverage() -> None:
    truth = np.tile(np.arange(1.0, 169.0), (4, 1))
    paths = np.stack([truth - 1.0, truth + 2.0, truth + 1.0], axis=1)  # p90 below truth+2: p50 off by 2
    paths[:, 2, :] = truth + 3.0
    run = bt.BacktestRun(np.arange(4), truth, {"f": paths}, frozenset({"f"}))
    ms = bt.bucket_metrics(run, "f")
    assert len(ms) == len(bt.BUCKETS)
    assert all(m.mae == pytest.approx(2.0) for m in ms)
    assert all(m.coverage_pct == pytest.approx(100.0) for m in ms)
    assert bt.mae_over(run, "f", 24, 168) == pytest.approx(2.0)
    # pinball of a p10 1 below, p50 2 above, p90 3 above: (0.1·1 + 0.5·2 + 0.1·3) / 3
    assert ms[0].pinball == pytest.approx((0.1 + 1.0 + 0.3) / 3)


@pytest.mark.parametrize("zone", ["JP-TK", "AU-VIC"])
def test_forecaster_beats_seasonal_naive_on_a_real_zone_slice(zone: str) -> None:
    # A regression guard on a slice of the published backtest (deterministic data, ~18 origins).
    hourly = load_hourly_carbon()
    y = hourly.lifecycle[hourly.zones.index(zone)].astype(np.float64)
    origins = bt.origins_for(y.shape[0], FULL_HISTORY_HOURS, step=24 * 15 + 7)
    run = bt.run_backtest(y, origins, {"seasonal_daily": bt.seasonal_daily, "forecast": bt.forecaster})
    assert bt.mae_over(run, "forecast", 24, 168) < 0.95 * bt.mae_over(run, "seasonal_daily", 24, 168)
    jobs = bt.random_jobs(origins.shape[0], 8, seed=1)
    assert bt.decision_share(run, "forecast", jobs) > bt.decision_share(run, "seasonal_daily", jobs)
