"""Benchmark of the scoring engine against `cats` (GreenScheduler's climate-aware-task-scheduler).

Run: `python bench/bench_engine.py [--runs N]`. Prints a table; it is a script, not a test.
Balanced mode unless the `mode` column says otherwise.

What is timed (wall clock, `time.perf_counter`, median and p90 over N runs after a warm-up):
- `window_means`: the (L, K) window means on a freshly built IntensityGrid (so its prefix sums are
  computed inside the timing, as they are once per request in the service);
- `rank`: `rank_candidates` on a fresh grid (prefix sums + window means + balanced scores + top 5);
- `e2e`: `align_series` from CarbonSeries objects (9 days of data each, as a cache would hold)
  + `candidate_grid` + `rank_candidates`.
- `cats`: `cats.forecast.WindowedForecast` over the same 7-day window for ONE location, iterating
  every window and taking the minimum (the list of PointEstimate is built outside the timing, as
  our align step is outside `rank`). cats integrates with the trapezoidal rule between samples,
  we integrate piecewise-constant intervals, so the numbers differ a little; the work (all
  K windows of one location) is the same and the window counts are printed to show it.

Speed ratio = cats time per location / our `rank` time per location (= rank / L).
Targets: 150 locations × 7 days × 15-minute steps × 3 h ≤ 5 ms median; ≥ 50× faster than cats.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from cats.forecast import PointEstimate, WindowedForecast

from carbon_optimizer.domain.models import CarbonSeries, FloatArray, Objective, ObjectiveMode, SourceRun
from carbon_optimizer.domain.scoring import ScoringInput, candidate_grid, rank_candidates, window_means
from carbon_optimizer.domain.series import IntensityGrid, align_series

EARLIEST = datetime(2026, 11, 24, tzinfo=UTC)
WINDOW = timedelta(days=7)
DURATION = timedelta(hours=3)
MAX_RESULTS = 5
OBJECTIVE = Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5)
SEED = 20261124


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float


def measure(fn: Callable[[], object], runs: int) -> Timing:
    """Median and p90 wall time of `fn` in milliseconds, after two warm-up calls."""
    fn()
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    arr = np.array(samples) * 1e3
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)))


def synthetic_intensities(
    locations: int, points: int, step: timedelta, rng: np.random.Generator
) -> FloatArray:
    """Daily sinusoid around 300 g/kWh with per-zone phase/amplitude plus an AR(1) random walk."""
    hours = np.arange(points) * (step / timedelta(hours=1))
    base = rng.uniform(150, 450, (locations, 1))
    amplitude = rng.uniform(20, 150, (locations, 1))
    phase = rng.uniform(0, 2 * np.pi, (locations, 1))
    daily = base + amplitude * np.sin(2 * np.pi * hours / 24 + phase)
    noise = np.zeros((locations, points))
    shocks = rng.normal(0, 8, (locations, points))
    for j in range(1, points):  # AR(1) so the noise wanders but stays bounded
        noise[:, j] = 0.95 * noise[:, j - 1] + shocks[:, j]
    return np.asarray(np.clip(daily + noise, 10, None), dtype=np.float64)


def make_series(values: FloatArray, start: datetime, step: timedelta) -> list[CarbonSeries]:
    return [
        CarbonSeries(
            zone=f"Z{i:03d}",
            start=start,
            step=step,
            values=row,
            runs=(SourceRun(0, row.size, "bench:synthetic"),),
        )
        for i, row in enumerate(values)
    ]


def cats_best(points: list[PointEstimate], end_constraint: datetime) -> tuple[int, float]:
    """All windows of one location through cats, and the best mean (what cats' CLI does)."""
    forecast = WindowedForecast(
        points,
        int(DURATION / timedelta(minutes=1)),
        EARLIEST,
        max_window_minutes=int(WINDOW / timedelta(minutes=1)),
        end_constraint=end_constraint,
    )
    windows = list(forecast)
    return len(windows), float(min(w.value for w in windows))


@dataclass(frozen=True)
class Row:
    mode: str
    locations: int
    data_step_min: int
    cand_step_min: int
    earliest_offset: timedelta
    k: int
    means: Timing
    rank: Timing
    e2e: Timing


def bench_case(
    locations: int,
    data_step: timedelta,
    cand_step: timedelta,
    earliest_offset: timedelta,
    runs: int,
    rng: np.random.Generator,
    objective: Objective = OBJECTIVE,
) -> tuple[Row, FloatArray]:
    # The cache holds 9 days from the day before; the request asks for 7 days from EARLIEST.
    series_start = EARLIEST - timedelta(days=1)
    points = int(timedelta(days=9) / data_step)
    values = synthetic_intensities(locations, points, data_step, rng)
    series = make_series(values, series_start, data_step)
    earliest = EARLIEST + earliest_offset
    deadline = earliest + WINDOW
    grid = align_series(series, earliest, deadline)
    cands = candidate_grid(earliest, deadline, DURATION, cand_step)
    energy = rng.uniform(0.2, 2.0, locations)
    cost = rng.uniform(0.5, 5.0, locations)
    if objective.mode is ObjectiveMode.COST:
        cost = np.full(locations, 1.0)  # worst case for the tie-break: every candidate ties
    step_min = cand_step / timedelta(minutes=1)
    starts_min = grid.minutes_from_start(earliest) + np.arange(cands.count, dtype=np.float64) * step_min
    duration_min = DURATION / timedelta(minutes=1)

    def fresh_grid() -> IntensityGrid:
        return IntensityGrid(grid.start, grid.step, grid.values)  # no cached prefix sums

    def run_means() -> object:
        return window_means(fresh_grid(), starts_min, duration_min)

    def run_rank() -> object:
        return rank_candidates(ScoringInput(fresh_grid(), cands, energy, cost, objective, MAX_RESULTS))

    def run_e2e() -> object:
        aligned = align_series(series, earliest, deadline)
        candidates = candidate_grid(earliest, deadline, DURATION, cand_step)
        return rank_candidates(ScoringInput(aligned, candidates, energy, cost, objective, MAX_RESULTS))

    row = Row(
        mode=objective.mode.value,
        locations=locations,
        data_step_min=int(data_step / timedelta(minutes=1)),
        cand_step_min=int(cand_step / timedelta(minutes=1)),
        earliest_offset=earliest_offset,
        k=cands.count,
        means=measure(run_means, runs),
        rank=measure(run_rank, runs),
        e2e=measure(run_e2e, runs),
    )
    # Location 0 over exactly the request's range, for the cats comparison.
    first = int((grid.start - series_start) / data_step)
    return row, values[0, first : first + grid.values.shape[1] + 1]


def bench_cats(row0: FloatArray, data_step: timedelta, runs: int) -> tuple[Timing, int]:
    # cats samples are instants joined by straight lines: N + 1 samples span the N intervals.
    points = [PointEstimate(value=float(v), datetime=EARLIEST + i * data_step) for i, v in enumerate(row0)]
    # cats keeps windows that start strictly before end_constraint.
    end_constraint = EARLIEST + WINDOW - DURATION + data_step
    windows, _ = cats_best(points, end_constraint)
    return measure(lambda: cats_best(points, end_constraint), runs), windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per figure (>= 20)")
    parser.add_argument("--cats-runs", type=int, default=20, help="timed runs of cats per step")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)

    print(f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(
        f"7-day window, 3 h job, max_results={MAX_RESULTS}, "
        f"{args.runs} runs (cats: {args.cats_runs}); times in ms, median / p90\n"
    )
    header = (
        f"{'mode':>8} {'L':>4} {'data':>5} {'cand':>5} {'start':>9} {'K':>4} {'L*K':>7} | "
        f"{'window_means':>14} | {'rank':>14} | {'e2e(align+rank)':>16} | {'rank/L us':>9}"
    )
    print(header)
    print("-" * len(header))
    cases = [
        (20, 60, 60, timedelta(0), OBJECTIVE),
        (150, 60, 60, timedelta(0), OBJECTIVE),
        (20, 15, 15, timedelta(0), OBJECTIVE),
        (150, 15, 15, timedelta(0), OBJECTIVE),
        # Production shapes: 15-minute steps on hourly data, and an earliest start of "now".
        (150, 60, 15, timedelta(0), OBJECTIVE),
        (150, 15, 15, timedelta(minutes=7, seconds=23), OBJECTIVE),
        # Worst case for ties: cost mode with one price everywhere (all L·K candidates tie).
        (150, 15, 15, timedelta(0), Objective(mode=ObjectiveMode.COST)),
    ]
    rows: list[Row] = []
    location0: dict[int, FloatArray] = {}
    for locations, data_min, cand_min, offset, objective in cases:
        row, first_row = bench_case(
            locations,
            timedelta(minutes=data_min),
            timedelta(minutes=cand_min),
            offset,
            args.runs,
            rng,
            objective,
        )
        rows.append(row)
        if offset == timedelta(0) and data_min == cand_min:
            location0.setdefault(data_min, first_row)
        start = "on grid" if offset == timedelta(0) else f"+{offset.seconds // 60}m{offset.seconds % 60}s"
        print(
            f"{row.mode:>8} {row.locations:>4} {row.data_step_min:>4}m {row.cand_step_min:>4}m "
            f"{start:>9} {row.k:>4} {row.locations * row.k:>7} | "
            f"{row.means.median_ms:>6.3f} / {row.means.p90_ms:<6.3f}"
            f"| {row.rank.median_ms:>6.3f} / {row.rank.p90_ms:<6.3f}"
            f"| {row.e2e.median_ms:>7.3f} / {row.e2e.p90_ms:<7.3f}"
            f"| {row.rank.median_ms / row.locations * 1e3:>9.2f}"
        )

    print("\ncats.forecast.WindowedForecast, one location, same data (median / p90 ms)")
    header2 = (
        f"{'data':>5} {'windows':>8} | {'cats 1 loc':>17} | {'ours/loc us (L=20)':>18} "
        f"{'ratio':>7} | {'ours/loc us (L=150)':>19} {'ratio':>7}"
    )
    print(header2)
    print("-" * len(header2))
    for data_min in (60, 15):
        timing, windows = bench_cats(location0[data_min], timedelta(minutes=data_min), args.cats_runs)
        ours = {
            r.locations: r.rank.median_ms / r.locations
            for r in rows
            if r.data_step_min == data_min
            and r.cand_step_min == data_min
            and r.earliest_offset == timedelta(0)
            and r.mode == OBJECTIVE.mode.value
        }
        ks = {r.k for r in rows if r.data_step_min == data_min and r.cand_step_min == data_min}
        print(
            f"{data_min:>4}m {windows:>8} | {timing.median_ms:>8.2f} / {timing.p90_ms:<6.2f} | "
            f"{ours[20] * 1e3:>18.2f} {timing.median_ms / ours[20]:>6.0f}x | "
            f"{ours[150] * 1e3:>19.2f} {timing.median_ms / ours[150]:>6.0f}x   (our K: {sorted(ks)})"
        )

    target = next(
        r
        for r in rows
        if (r.mode, r.locations, r.data_step_min, r.cand_step_min) == (OBJECTIVE.mode.value, 150, 15, 15)
    )
    verdict = "met" if target.rank.median_ms <= 5.0 else "MISSED"
    print(
        f"\ntarget 150 loc × 7 d × 15 min × 3 h <= 5 ms median: rank {target.rank.median_ms:.3f} ms, "
        f"e2e {target.e2e.median_ms:.3f} ms -> {verdict}"
    )


if __name__ == "__main__":
    main()
