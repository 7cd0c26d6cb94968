"""Where the forecaster's missing decision share is: an upper bound with deliberate look-ahead.

Run: `python bench/bench_decision_bound.py [--step 49] [--jobs 8]` (≈ 40 s). Prints, per zone, the
decision share (docs/forecasting.md "The decision metric", same jobs as `bench_forecast.py`) of

- `forecast`: `profile-ar`'s p50 (horizon 48 h, the longest job window), no look-ahead;
- `slow24` / `slow12` / `slow6`: that p50 with its slow part (the k-hour centred moving average)
  replaced by the truth's — our intraday shape, the true weather level (**look-ahead**);
- `shape`: the other way round — our slow level, the truth's intraday shape (**look-ahead**).

If `slow24` is close to 100 % and `forecast` is not, the missing share is the level of the next
one to two days (the weather), which no profile of the past can know; that is the argument in
docs/forecasting.md for why 85 % is out of reach from history alone. Not a predictor: the bound
variants read the truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carbon_optimizer.domain import backtest as bt
from carbon_optimizer.domain.forecast import FULL_HISTORY_HOURS, QUANTILES
from carbon_optimizer.domain.models import FloatArray
from carbon_optimizer.providers.catalog import load_hourly_carbon

HORIZON = 48  # the longest job window of the decision metric


def moving_average(x: FloatArray, k: int) -> FloatArray:
    """Centred k-hour moving average along axis 1, edges padded with the end values."""
    pad = np.pad(x, ((0, 0), (k // 2, k - 1 - k // 2)), mode="edge")
    c = np.cumsum(np.concatenate([np.zeros((x.shape[0], 1)), pad], axis=1), axis=1)
    out: FloatArray = (c[:, k:] - c[:, :-k]) / k
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=49, help="hours between rolling origins")
    parser.add_argument("--jobs", type=int, default=8, help="random jobs per origin")
    args = parser.parse_args()
    hourly = load_hourly_carbon()
    names = ["forecast", "slow24", "slow12", "slow6", "shape"]
    print(f"# decision share bound — origins every {args.step} h, {args.jobs} jobs/origin, {HORIZON} h")
    print(f"{'zone':<12} " + " ".join(f"{n:>8}" for n in names))
    rows = []
    for zone in hourly.zones:
        y = np.asarray(hourly.lifecycle[hourly.zones.index(zone)], dtype=np.float64)
        origins = bt.origins_for(y.shape[0], FULL_HISTORY_HOURS, step=args.step)
        run = bt.run_backtest(y, origins, {"forecast": bt.forecaster}, horizon=HORIZON)
        p50, truth = run.paths["forecast"][:, QUANTILES.index(0.5), :], run.truth
        guesses = {
            **{f"slow{k}": p50 - moving_average(p50, k) + moving_average(truth, k) for k in (24, 12, 6)},
            "shape": moving_average(p50, 24) + truth - moving_average(truth, 24),
        }
        paths = {"forecast": run.paths["forecast"]}
        paths.update({n: np.repeat(g[:, None, :], len(QUANTILES), axis=1) for n, g in guesses.items()})
        both = bt.BacktestRun(origins, truth, paths, frozenset())
        jobs = bt.random_jobs(origins.shape[0], args.jobs, seed=1)
        shares = [100.0 * bt.decision_share(both, n, jobs) for n in names]
        rows.append(shares)
        print(f"{zone:<12} " + " ".join(f"{s:8.1f}" for s in shares), flush=True)
    print(f"{'mean':<12} " + " ".join(f"{s:8.1f}" for s in np.mean(rows, axis=0)))


if __name__ == "__main__":
    main()
