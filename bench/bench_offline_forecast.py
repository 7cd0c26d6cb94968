"""Offline: should `forecast:profile-ar` replace the bare 2023 replay? Prints the measurement.

Offline the service has no live history: the only "history" it can fit on is the bundled 2023
data replayed, so the forecaster would forecast the *replayed* week from the replayed weeks before
it, and that forecast would stand in for this year's week. Emulated on 2023 like the backtest's
replay proxy (docs/forecasting.md): the target week starts at origin T, the "replayed" week is the
same week four weeks earlier (T − 672), and

- `replay`: the replayed week itself, `y[t − 672]` (the backtest's `replay_proxy`);
- `offline-fcst`: `profile-ar` fitted on `y[:T − 672]` (the replayed history preceding the
  replayed week), forecasting the 168 h after it, i.e. a forecast at lead 4–5 weeks;

both scored against the truth `y[T : T + 168]`: p50 MAE per horizon bucket, the decision share
(same random jobs as `bench_forecast.py`) and the offline forecast's p10–p90 coverage. Neither
predictor sees any hour at or after T − 504 (T − 672 + 168).

Run: `python bench/bench_offline_forecast.py [--step 97] [--jobs 8] [--zones DE,FR]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carbon_optimizer.domain import backtest as bt
from carbon_optimizer.domain.forecast import FULL_HISTORY_HOURS, MAX_HORIZON_HOURS
from carbon_optimizer.domain.models import FloatArray
from carbon_optimizer.providers.catalog import HOURLY_YEAR, load_hourly_carbon

LAG = bt.REPLAY_LAG_HOURS


def offline_forecast(y: FloatArray, horizon: int) -> FloatArray:
    """`profile-ar` fitted on the history preceding the replayed week, forecasting that week."""
    return bt.forecaster(y[: y.shape[0] - LAG], horizon)


def flat_band(pooled: list[tuple[FloatArray, FloatArray]]) -> tuple[tuple[float, float, float], list[float]]:
    """Relative error quantiles (truth / p50 − 1) pooled over zones and leads, and their coverage.

    At a lead of four to five weeks the error no longer grows with the hour ahead, so one flat
    relative band replaces the forecaster's lead-dependent one (which is far too narrow there).
    """
    rel = np.concatenate([(t / np.maximum(p[:, 1, :], 1e-9) - 1.0) for t, p in pooled])
    q10, q50, q90 = (float(v) for v in np.quantile(rel, [0.1, 0.5, 0.9]))
    inside = (rel >= q10) & (rel <= q90)
    return (q10, q50, q90), [100.0 * float(inside[:, a - 1 : b].mean()) for a, b in bt.BUCKETS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=97, help="hours between rolling origins")
    parser.add_argument("--jobs", type=int, default=8, help="random jobs per origin")
    parser.add_argument("--zones", type=str, default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    hourly = load_hourly_carbon()
    zones = [z for z in hourly.zones if not args.zones or z in args.zones.split(",")]
    predictors: dict[str, bt.Predictor] = {"replay": bt.replay_proxy, "offline-fcst": offline_forecast}
    print(
        f"# offline forecast vs replay — data {HOURLY_YEAR}, "
        f"origins every {args.step} h, {args.jobs} jobs/origin"
    )
    print(
        f"{'zone':<12} {'replay MAE':>10} {'fcst MAE':>9} {'gain':>6} | {'replay %':>8} {'fcst %':>7} | cover"
    )
    rows: list[tuple[float, float, float, float, float]] = []
    buckets: dict[str, list[list[float]]] = {n: [] for n in predictors}
    mapes: dict[str, list[float]] = {n: [] for n in predictors}
    started = time.perf_counter()
    pooled: list[tuple[FloatArray, FloatArray]] = []  # (truth, paths) per zone, for the widening
    for zone in zones:
        y = np.asarray(hourly.lifecycle[hourly.zones.index(zone)], dtype=np.float64)
        origins = bt.origins_for(y.shape[0], FULL_HISTORY_HOURS + LAG, step=args.step)
        run = bt.run_backtest(y, origins, predictors, probabilistic=frozenset({"offline-fcst"}))
        jobs = bt.random_jobs(len(origins), args.jobs, seed=1)
        mae = {n: bt.mae_over(run, n, 1, MAX_HORIZON_HOURS) for n in predictors}
        share = {n: 100.0 * bt.decision_share(run, n, jobs) for n in predictors}
        metrics = {n: bt.bucket_metrics(run, n) for n in predictors}
        for n in predictors:
            buckets[n].append([m.mae for m in metrics[n]])
            mapes[n].append(float(np.mean([m.mape_pct for m in metrics[n]])))
        pooled.append((run.truth, run.paths["offline-fcst"]))
        cover = float(np.mean([m.coverage_pct or 0.0 for m in metrics["offline-fcst"]]))
        gain = 100.0 * (1.0 - mae["offline-fcst"] / mae["replay"])
        rows.append((mae["replay"], mae["offline-fcst"], share["replay"], share["offline-fcst"], cover))
        print(
            f"{zone:<12} {mae['replay']:>10.1f} {mae['offline-fcst']:>9.1f} {gain:>5.1f}% | "
            f"{share['replay']:>8.1f} {share['offline-fcst']:>7.1f} | {cover:5.1f}"
        )
    m = np.mean(np.array(rows), axis=0)
    wins = sum(r[3] > r[2] for r in rows)
    print(
        f"{'mean':<12} {m[0]:>10.1f} {m[1]:>9.1f} {100 * (1 - m[1] / m[0]):>5.1f}% | "
        f"{m[2]:>8.1f} {m[3]:>7.1f} | {m[4]:5.1f}"
    )
    print(f"offline forecast's decision share beats the replay in {wins}/{len(rows)} zones")
    print("p50 MAE per bucket (mean of zones): " + " ".join(f"{lo}-{hi}" for lo, hi in bt.BUCKETS))
    for n in predictors:
        per = np.mean(np.array(buckets[n]), axis=0)
        print(f"  {n:<13}" + " ".join(f"{v:6.1f}" for v in per))
    (q10, q50, q90), per_bucket = flat_band(pooled)
    print(
        f"flat relative band for offline forecasts: q10 {q10:+.4f} q50 {q50:+.4f} q90 {q90:+.4f}; "
        "in-sample coverage per bucket: " + " ".join(f"{c:.1f}" for c in per_bucket)
    )
    print(
        "p50 MAPE % over 1–168 h, mean of zones: "
        + ", ".join(f"{n} {np.mean(v):.1f}" for n, v in mapes.items())
    )
    print(f"# {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
