"""Backtest of the carbon-intensity forecaster on the bundled 2023 hourly data (every replay zone).

Run: `python bench/bench_forecast.py [--step 49] [--jobs 8] [--library] [--write-error-model]`.
Prints tables; it is a script, not a test. The logic is `carbon_optimizer.domain.backtest`
(tested on small slices in `tests/domain/test_backtest.py`); this script only loops and prints.

- Rolling origins every `--step` hours (not a multiple of 24, so they cycle through the hours of the
  day) from the first hour with 9 weeks of history (2023-03-05) to the last with a full 168 h of
  truth. Every predictor at origin T sees only hours before T.
- Decision metric: `--jobs` random jobs per origin (1–6 h, windows 12–48 h, seed 1), share of the
  oracle's saving realised (see the backtest module).
- `--library`: also backtests statsforecast's MSTL (seasons 24 and 168 h, AutoETS trend, its own
  80 % interval) on every `--library-every`-th origin (it needs ~0.7 s per fit). Needs
  `pip install statsforecast` (not a project dependency: see docs/forecasting.md for why).
- `--write-error-model`: writes the lead-time error table for provider forecasts without an
  interval to `carbon_optimizer/data/forecast_error_model.json` (provenance inside the file).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from carbon_optimizer.domain import backtest as bt
from carbon_optimizer.domain.forecast import FULL_HISTORY_HOURS, MODEL_NAME, QUANTILES
from carbon_optimizer.domain.models import FloatArray
from carbon_optimizer.domain.uncertainty import ErrorModel, LeadError, Options, assess
from carbon_optimizer.providers.catalog import HOURLY_YEAR, load_hourly_carbon

ERROR_MODEL_PATH = (
    Path(__file__).resolve().parents[1] / "carbon_optimizer" / "data" / "forecast_error_model.json"
)
NAIVE = ("persistence", "seasonal_daily", "seasonal_weekly", "replay_proxy")


def mstl_predictor(y: FloatArray, horizon: int) -> FloatArray:
    """statsforecast MSTL on the last 9 weeks (what our model sees), p10/p50/p90 from its 80 % band."""
    from statsforecast.models import MSTL, AutoETS  # type: ignore[import-not-found]

    model = MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN"))
    out = model.forecast(y=y[-FULL_HISTORY_HOURS:], h=horizon, level=[80])
    paths = np.stack([out["lo-80"], out["mean"], out["hi-80"]]).astype(np.float64)
    return np.maximum(paths, 0.0)


def fmt(x: float | None, spec: str = "6.1f") -> str:
    return "     -" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=49, help="hours between rolling origins")
    parser.add_argument("--jobs", type=int, default=8, help="random jobs per origin for the decision metric")
    parser.add_argument("--zones", type=str, default="", help="comma-separated subset (default: all)")
    parser.add_argument("--library", action="store_true", help="also backtest statsforecast MSTL")
    parser.add_argument("--library-every", type=int, default=4, help="MSTL on every n-th origin")
    parser.add_argument("--write-error-model", action="store_true")
    args = parser.parse_args()

    hourly = load_hourly_carbon()
    zones = [z for z in hourly.zones if not args.zones or z in args.zones.split(",")]
    predictors: dict[str, bt.Predictor] = {**bt.NAIVE_PREDICTORS, "forecast": bt.forecaster}
    names = [*NAIVE, "forecast"]
    print(f"# forecast backtest — {platform.python_version()}, {platform.machine()}, data {HOURLY_YEAR}")
    print(
        f"# origins every {args.step} h from hour {FULL_HISTORY_HOURS}; {args.jobs} jobs/origin; "
        f"model {MODEL_NAME}"
    )
    bucket_sum: dict[str, list[list[bt.BucketMetrics]]] = {n: [] for n in names}
    per_zone: list[tuple[str, dict[str, float], dict[str, float], float, int]] = []
    lib_rows: list[tuple[str, float, float, float, float, float, list[float | None]]] = []
    residuals: dict[str, tuple[FloatArray, FloatArray]] = {}
    for zone in zones:
        y = np.asarray(hourly.lifecycle[hourly.zones.index(zone)], dtype=np.float64)
        origins = bt.origins_for(y.shape[0], FULL_HISTORY_HOURS, step=args.step)
        t0 = time.perf_counter()
        run = bt.run_backtest(y, origins, {"forecast": predictors["forecast"]})
        fit_ms = 1000.0 * (time.perf_counter() - t0) / origins.shape[0]
        naive_run = bt.run_backtest(y, origins, {n: predictors[n] for n in NAIVE})
        run = bt.BacktestRun(
            origins=run.origins,
            truth=run.truth,
            paths={**naive_run.paths, **run.paths},
            probabilistic=run.probabilistic,
        )
        jobs = bt.random_jobs(origins.shape[0], args.jobs, seed=1)
        mae = {n: bt.mae_over(run, n, 24, 168) for n in names}
        share = {n: bt.decision_share(run, n, jobs) for n in names}
        for n in names:
            bucket_sum[n].append(bt.bucket_metrics(run, n))
        per_zone.append((zone, mae, share, fit_ms, origins.shape[0]))
        residuals[zone] = (run.truth, run.paths["forecast"][:, QUANTILES.index(0.5), :])
        if args.library:
            sub = origins[:: args.library_every]
            t0 = time.perf_counter()
            lib = bt.run_backtest(y, sub, {"mstl": mstl_predictor}, probabilistic=frozenset({"mstl"}))
            lib_ms = 1000.0 * (time.perf_counter() - t0) / sub.shape[0]
            ours = bt.run_backtest(
                y, sub, {"forecast": predictors["forecast"], "seasonal_daily": bt.seasonal_daily}
            )
            both = bt.BacktestRun(
                lib.origins, lib.truth, {**lib.paths, **ours.paths}, lib.probabilistic | ours.probabilistic
            )
            sj = bt.random_jobs(sub.shape[0], args.jobs, seed=1)
            cov = [m.coverage_pct for m in bt.bucket_metrics(both, "mstl")]
            lib_rows.append(
                (
                    zone,
                    bt.mae_over(both, "mstl", 24, 168),
                    bt.mae_over(both, "forecast", 24, 168),
                    bt.decision_share(both, "mstl", sj),
                    bt.decision_share(both, "forecast", sj),
                    lib_ms,
                    cov,
                )
            )
        print(f"  {zone}: {origins.shape[0]} origins, {fit_ms:.0f} ms/fit", flush=True)

    print("\n## Per zone: p50 MAE at 24–168 h (gCO2e/kWh) and decision share (% of the oracle's saving)")
    print(
        f"{'zone':<12} {'persist':>7} {'daily':>7} {'weekly':>7} {'replay':>7} {'fcst':>7} "
        f"{'vs d':>6} {'vs w':>6} | {'persist':>7} {'daily':>6} {'weekly':>6} {'replay':>6} {'fcst':>6} "
        f"{'fit ms':>6}"
    )
    gains_d, gains_w, beats = [], [], 0
    for zone, mae, share, fit_ms, _ in per_zone:
        gd = 100.0 * (1 - mae["forecast"] / mae["seasonal_daily"])
        gw = 100.0 * (1 - mae["forecast"] / mae["seasonal_weekly"])
        gains_d.append(gd)
        gains_w.append(gw)
        beats += all(share["forecast"] > share[n] for n in NAIVE)
        print(
            f"{zone:<12} "
            + " ".join(f"{mae[n]:7.1f}" for n in names)
            + f" {gd:5.1f}% {gw:5.1f}% | "
            + " ".join(f"{100 * share[n]:6.1f}" for n in names)
            + f" {fit_ms:6.0f}"
        )
    mean_share = {n: 100.0 * float(np.mean([s[n] for _, _, s, _, _ in per_zone])) for n in names}
    print(
        f"{'mean':<12} "
        + " ".join(f"{np.mean([m[n] for _, m, _, _, _ in per_zone]):7.1f}" for n in names)
        + f" {np.mean(gains_d):5.1f}% {np.mean(gains_w):5.1f}% | "
        + " ".join(f"{mean_share[n]:6.1f}" for n in names)
    )
    print(f"forecast's decision share beats every naive predictor in {beats}/{len(per_zone)} zones")

    print("\n## Per horizon bucket, averaged over zones: MAE | MAPE % | pinball | p10–p90 coverage %")
    print(f"{'hours':<8} " + " ".join(f"{n[:14]:>30}" for n in names))
    for b, (lo, hi) in enumerate(bt.BUCKETS):
        cells = []
        for n in names:
            ms = [z[b] for z in bucket_sum[n]]
            mean_cov = (
                None if ms[0].coverage_pct is None else float(np.mean([m.coverage_pct or 0.0 for m in ms]))
            )
            cells.append(
                f"{np.mean([m.mae for m in ms]):6.1f} {np.mean([m.mape_pct for m in ms]):5.1f} "
                f"{np.mean([m.pinball for m in ms]):6.2f} {fmt(mean_cov, '5.1f'):>6}"
            )
        print(f"{lo:>3}–{hi:<4} " + " ".join(f"{c:>30}" for c in cells))
    print("\n## Forecast p10–p90 coverage % per zone and bucket (target 75–85)")
    print(f"{'zone':<12} " + " ".join(f"{f'{lo}-{hi}':>7}" for lo, hi in bt.BUCKETS))
    for (zone, *_), zone_ms in zip(per_zone, bucket_sum["forecast"], strict=True):
        print(f"{zone:<12} " + " ".join(f"{fmt(m.coverage_pct, '7.1f')}" for m in zone_ms))

    if lib_rows:
        print(
            f"\n## statsforecast MSTL vs ours on every {args.library_every}th origin "
            "(same origins, same jobs)"
        )
        print(
            f"{'zone':<12} {'MSTL MAE':>8} {'ours':>7} {'MSTL share':>10} {'ours':>6} "
            f"{'MSTL ms/fit':>11}  MSTL coverage"
        )
        for zone, lm, om, ls, os_, lib_ms, lib_cov in lib_rows:
            print(
                f"{zone:<12} {lm:8.1f} {om:7.1f} {100 * ls:10.1f} {100 * os_:6.1f} {lib_ms:11.0f}  "
                + " ".join(fmt(c, "4.0f") for c in lib_cov)
            )
        arr = np.array([r[1:6] for r in lib_rows])
        print(
            f"{'mean':<12} {arr[:, 0].mean():8.1f} {arr[:, 1].mean():7.1f} {100 * arr[:, 2].mean():10.1f} "
            f"{100 * arr[:, 3].mean():6.1f} {arr[:, 4].mean():11.0f}"
        )

    print("\n## uncertainty.assess cost (1000 draws, 50 options, risk p90; median of 7)")
    for zones_n, hours_n in ((3, 48), (10, 48), (10, 168)):
        print(f"  {zones_n} zones × {hours_n} h: {time_assess(zones_n, hours_n):6.1f} ms")

    if args.write_error_model:
        model = error_model_from(residuals, args.step)
        ERROR_MODEL_PATH.write_text(
            json.dumps(model.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        print(f"\nwrote {ERROR_MODEL_PATH.relative_to(ERROR_MODEL_PATH.parents[2])}")


def time_assess(zones_n: int, hours_n: int, options_n: int = 50) -> float:
    """Median ms of one `assess` call on synthetic paths (the cost the answer path would pay)."""
    p50 = np.full((zones_n, hours_n), 300.0)
    paths = np.stack([p50 - 30.0, p50, p50 + 40.0], axis=1)
    rng = np.random.default_rng(0)
    opts = Options(
        zone=rng.integers(0, zones_n, options_n),
        start=rng.integers(0, hours_n - 6, options_n),
        hours=rng.integers(1, 7, options_n),
        scale=np.ones(options_n),
    )
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        assess(paths, opts, risk="p90")
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def error_model_from(residuals: dict[str, tuple[FloatArray, FloatArray]], step: int) -> ErrorModel:
    """Relative error quantiles (truth / p50 − 1) by lead bucket, pooled over zones, and AR(1) rho."""
    leads: list[LeadError] = []
    ratios = {z: t / np.maximum(p, 1e-9) - 1.0 for z, (t, p) in residuals.items()}
    for lo, hi in bt.BUCKETS:
        pooled = np.concatenate([r[:, lo - 1 : hi].ravel() for r in ratios.values()])
        q10, q50, q90 = (float(v) for v in np.quantile(pooled, [0.1, 0.5, 0.9]))
        leads.append(
            LeadError(first_hour=lo, last_hour=hi, q10=round(q10, 4), q50=round(q50, 4), q90=round(q90, 4))
        )
    rhos = []
    for r in ratios.values():
        a, b = r[:, :-1].ravel(), r[:, 1:].ravel()
        rhos.append(float(np.corrcoef(a, b)[0, 1]))
    return ErrorModel(
        leads=tuple(leads),
        hourly_correlation=round(float(np.median(rhos)), 4),
        provenance=(
            f"bench/bench_forecast.py --step {step} --write-error-model: relative errors "
            "(truth / p50 - 1) of "
            f"the {MODEL_NAME} forecaster in a rolling-origin backtest over the bundled {HOURLY_YEAR} hourly "
            f"lifecycle data of {len(residuals)} zones, pooled; hourly_correlation is the median over zones "
            "of the lag-1 correlation of errors at consecutive leads. No archive of provider forecasts "
            "exists in the bundled data, so this is our forecaster's error, used as a stand-in (likely "
            "wider than a weather-driven provider forecast) for provider forecasts that carry no interval."
        ),
    )


if __name__ == "__main__":
    main()
