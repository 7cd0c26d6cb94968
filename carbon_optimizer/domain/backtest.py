"""Rolling-origin backtest of carbon-intensity predictors, and the decision metric (pure NumPy).

Why it lives in the package: `bench/bench_forecast.py` runs it over every bundled zone for the
table in `docs/forecasting.md`, and tests run the same code on small slices, so the figures we
publish come from tested code.

No look-ahead anywhere: a predictor at origin T sees `y[:T]` only (hours before T) and forecasts
hours T … T + horizon − 1. Predictors:

- `persistence`: the last observed hour, flat.
- `seasonal_daily`: the last observed day repeated (`y[t − 24·k]`, smallest k reaching the past).
- `seasonal_weekly`: the last observed week repeated.
- `replay_proxy`: stand-in for the service's offline replay. In production the replay answers a
  2026 week with the same ISO week of 2023: a same-season curve of *another* weather realisation
  (and another year's grid mix). On 2023 data itself the replay would be the truth (pure
  look-ahead), and no other year is bundled, so we emulate "same season, different weather" with
  the same hour of week **four weeks earlier** (`y[t − 672]`, always before the origin for
  horizons ≤ 168 h). It is, if anything, kinder to the replay than production: four weeks apart
  is closer in grid mix than three years apart.
- `forecast` (the forecaster of `domain/forecast.py`, fitted at every origin on `y[:T]`).

Decision metric: a job of d hours with a window of W hours decided at T may start at T … T+W−d.
Each predictor picks the start minimising its forecast of the job's mean intensity (earliest on
ties); the truth scores it. Share = Σ(truth at run-now − truth at pick) / Σ(truth at run-now −
truth at the oracle's best start) over all jobs, i.e. the fraction of the achievable saving
realised. Run-now is start T itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from carbon_optimizer.domain.forecast import MAX_HORIZON_HOURS, QUANTILES, fit, predict
from carbon_optimizer.domain.models import FloatArray, IntArray

# Horizon buckets (1-based hours ahead, inclusive) used for every per-horizon figure.
BUCKETS: tuple[tuple[int, int], ...] = ((1, 1), (2, 6), (7, 24), (25, 48), (49, 72), (73, 120), (121, 168))
REPLAY_LAG_HOURS = 4 * 168

# A predictor maps (history y[:T], horizon) to quantile paths (len(QUANTILES), horizon); point
# predictors repeat their path on every row (no interval).
Predictor = Callable[[FloatArray, int], FloatArray]


def _lagged(y: FloatArray, horizon: int, period: int) -> FloatArray:
    t = y.shape[0] + np.arange(horizon)
    k = -(-(np.arange(horizon) + 1) // period)
    out: FloatArray = y[t - period * k]
    return out


def persistence(y: FloatArray, horizon: int) -> FloatArray:
    """Last observed value, flat."""
    return np.full((len(QUANTILES), horizon), y[-1])


def seasonal_daily(y: FloatArray, horizon: int) -> FloatArray:
    """Last observed day repeated."""
    return np.tile(_lagged(y, horizon, 24), (len(QUANTILES), 1))


def seasonal_weekly(y: FloatArray, horizon: int) -> FloatArray:
    """Last observed week repeated."""
    return np.tile(_lagged(y, horizon, 168), (len(QUANTILES), 1))


def replay_proxy(y: FloatArray, horizon: int) -> FloatArray:
    """Same hour of week four weeks before the target (see the module docstring for why)."""
    t = y.shape[0] + np.arange(horizon)
    return np.tile(y[t - REPLAY_LAG_HOURS], (len(QUANTILES), 1))


def forecaster(y: FloatArray, horizon: int) -> FloatArray:
    """The forecaster of `domain/forecast.py`, fitted on the history it is given."""
    return np.asarray(predict(y, fit(y, horizon), horizon).values)


NAIVE_PREDICTORS: dict[str, Predictor] = {
    "persistence": persistence,
    "seasonal_daily": seasonal_daily,
    "seasonal_weekly": seasonal_weekly,
    "replay_proxy": replay_proxy,
}
PROBABILISTIC = frozenset({"forecast"})


@dataclass(frozen=True, eq=False, slots=True)
class BacktestRun:
    """Forecasts of every predictor at every origin of one zone, with the truth they face."""

    origins: IntArray  # (n,)
    truth: FloatArray  # (n, horizon)
    paths: Mapping[str, FloatArray]  # name -> (n, len(QUANTILES), horizon)
    probabilistic: frozenset[str]


def origins_for(n: int, warmup: int, horizon: int = MAX_HORIZON_HOURS, step: int = 25) -> IntArray:
    """Rolling origins from `warmup` to the last one with a full horizon of truth, every `step` h.

    A step that is not a multiple of 24 makes the origins cycle through the hours of the day.
    """
    return np.arange(warmup, n - horizon + 1, step, dtype=np.int64)


def run_backtest(
    y: FloatArray,
    origins: IntArray,
    predictors: Mapping[str, Predictor],
    horizon: int = MAX_HORIZON_HOURS,
    probabilistic: frozenset[str] = PROBABILISTIC,
) -> BacktestRun:
    """Run every predictor at every origin (each sees only `y[:origin]`)."""
    truth = np.stack([y[o : o + horizon] for o in origins])
    paths = {
        name: np.stack([np.asarray(p(y[:o], horizon), dtype=np.float64) for o in origins])
        for name, p in predictors.items()
    }
    return BacktestRun(origins=origins, truth=truth, paths=paths, probabilistic=probabilistic & paths.keys())


@dataclass(frozen=True, slots=True)
class BucketMetrics:
    """Accuracy of one predictor over one horizon bucket."""

    mae: float
    mape_pct: float
    pinball: float  # mean pinball loss over QUANTILES (point predictors: their path at every q)
    coverage_pct: float | None  # share of truths inside p10–p90 (None: no interval)


def pinball_loss(truth: FloatArray, paths: FloatArray) -> FloatArray:
    """Mean pinball loss over `QUANTILES` per (origin, lead); `paths` is (n, len(QUANTILES), h)."""
    q = np.asarray(QUANTILES)[None, :, None]
    diff = truth[:, None, :] - paths
    out: FloatArray = np.maximum(q * diff, (q - 1.0) * diff).mean(axis=1)
    return out


def bucket_metrics(run: BacktestRun, name: str) -> list[BucketMetrics]:
    """Per-bucket MAE, MAPE, pinball loss and (probabilistic only) p10–p90 coverage."""
    paths = run.paths[name]
    p50 = paths[:, QUANTILES.index(0.5), :]
    err = np.abs(run.truth - p50)
    ape = err / np.maximum(np.abs(run.truth), 1e-9)
    pin = pinball_loss(run.truth, paths)
    inside = (run.truth >= paths[:, 0, :]) & (run.truth <= paths[:, -1, :])
    out = []
    for lo, hi in BUCKETS:
        if lo > run.truth.shape[1]:
            break
        s = slice(lo - 1, min(hi, run.truth.shape[1]))
        out.append(
            BucketMetrics(
                mae=float(err[:, s].mean()),
                mape_pct=100.0 * float(ape[:, s].mean()),
                pinball=float(pin[:, s].mean()),
                coverage_pct=100.0 * float(inside[:, s].mean()) if name in run.probabilistic else None,
            )
        )
    return out


def mae_over(run: BacktestRun, name: str, first: int, last: int) -> float:
    """p50 MAE over horizons first…last (1-based, inclusive)."""
    p50 = run.paths[name][:, QUANTILES.index(0.5), first - 1 : last]
    return float(np.abs(run.truth[:, first - 1 : last] - p50).mean())


@dataclass(frozen=True, slots=True)
class Jobs:
    """Random scheduling decisions: origin row in the run, duration and window (hours)."""

    origin_row: IntArray
    duration: IntArray
    window: IntArray


def random_jobs(
    n_origins: int,
    per_origin: int,
    seed: int,
    durations: tuple[int, int] = (1, 6),
    windows: tuple[int, int] = (12, 48),
) -> Jobs:
    """`per_origin` jobs at every origin with uniform durations and windows (inclusive ranges)."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_origins, dtype=np.int64), per_origin)
    return Jobs(
        origin_row=rows,
        duration=rng.integers(durations[0], durations[1] + 1, rows.shape[0]),
        window=rng.integers(windows[0], windows[1] + 1, rows.shape[0]),
    )


def _window_means(values: FloatArray, duration: IntArray, window: IntArray) -> FloatArray:
    """(jobs, max starts) mean of `values[j, s:s+d_j]`, +inf where the start is outside the window."""
    csum = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
    max_starts = int((window - duration).max()) + 1
    s = np.arange(max_starts)[None, :]
    end = np.minimum(s + duration[:, None], values.shape[1])
    rows = np.arange(values.shape[0])[:, None]
    means = (csum[rows, end] - csum[rows, np.minimum(s, values.shape[1])]) / duration[:, None]
    valid = s <= (window - duration)[:, None]
    out: FloatArray = np.where(valid, means, np.inf)
    return out


def decision_share(run: BacktestRun, name: str, jobs: Jobs) -> float:
    """Share of the oracle's achievable saving realised by the starts `name`'s p50 picks."""
    truth = run.truth[jobs.origin_row]
    guess = run.paths[name][jobs.origin_row, QUANTILES.index(0.5), :]
    true_means = _window_means(truth, jobs.duration, jobs.window)
    guess_means = _window_means(guess, jobs.duration, jobs.window)
    pick = np.argmin(guess_means, axis=1)  # argmin returns the earliest start on ties
    rows = np.arange(truth.shape[0])
    now = true_means[:, 0]
    achievable = float(np.sum(now - true_means.min(axis=1)))
    realised = float(np.sum(now - true_means[rows, pick]))
    return realised / achievable if achievable > 0 else 1.0
