"""Forecast uncertainty carried into the ranking: intervals, p_best, ties, pessimistic ranking.

Pure NumPy, deterministic (seeded). The model, and why (details in docs/forecasting.md):

**Marginals.** Each zone's forecast is given as p10/p50/p90 paths per hour. An hour's value is
`p50 + σ⁻·z` for z < 0 and `p50 + σ⁺·z` for z ≥ 0 with z standard normal, σ⁻ = (p50 − p10)/1.2816
and σ⁺ = (p90 − p50)/1.2816 (a split normal): it reproduces the three quantiles exactly and keeps
the skew. Values are clipped at 0.

**Correlation.** Forecast errors of one zone are strongly correlated from hour to hour (a windy
afternoon stays windy): z follows a stationary AR(1) over the hours of a zone with the lag-1
correlation `rho` measured in the backtest (0.967 for our forecaster: `ErrorModel.hourly_correlation`
in the shipped table, median over zones). Two start times of the
same zone a few hours apart therefore share most of their error, which is exactly why "is 14:00
really better than 15:00?" can be answered with confidence even when each hour's error is large.
Zones are independent except for an optional shared factor (`cross_zone`, default 0: neighbouring
grids share weather, but the backtest has no cross-zone forecasts to estimate it from).

**Options.** An option is (zone, first hour, duration in hours, energy scale); its emissions in a
draw are the scale × the mean of the drawn hourly values over its window. From N draws:
`p_best` (share of draws in which the option is the minimum, ties split evenly, so it sums to 1
and identical options get identical values), intervals (p10–p90 of the draws), the `tied` flag
(an option is tied with the leader when it beats the leader in at least `TIE_THRESHOLD` of the
draws) and a pessimistic score for `risk: "p90"`.

**Provider forecasts without an interval** get quantile paths from `ErrorModel` (relative error
quantiles by lead time estimated in the backtest, shipped as `data/forecast_error_model.json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carbon_optimizer.domain.models import FloatArray, IntArray
from carbon_optimizer.domain.order_stats import row_kth, row_kth_two

Z90 = 1.2815515655446004  # standard-normal 90th percentile
DEFAULT_DRAWS = 1000  # p_best standard error ≤ 1.6 points
DEFAULT_RHO = 0.96  # the backtest's median lag-1 error correlation (0.967); prefer the table's value
TIE_THRESHOLD = 0.25  # an option beating the leader in ≥ 25 % of draws is "statistically tied"
RISKS = ("p50", "p90", "mean")


@dataclass(frozen=True, slots=True)
class LeadError:
    """Relative error quantiles (truth / forecast − 1) for hours ahead first_hour…last_hour."""

    first_hour: int
    last_hour: int
    q10: float
    q50: float
    q90: float


@dataclass(frozen=True, slots=True)
class ErrorModel:
    """Lead-time error model for point forecasts that carry no interval."""

    leads: tuple[LeadError, ...]
    hourly_correlation: float
    provenance: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready mapping (the shipped file's format)."""
        return {
            "provenance": self.provenance,
            "hourly_correlation": self.hourly_correlation,
            "leads": [
                {
                    "first_hour": e.first_hour,
                    "last_hour": e.last_hour,
                    "q10": e.q10,
                    "q50": e.q50,
                    "q90": e.q90,
                }
                for e in self.leads
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorModel:
        """Parse `to_json` output; raises ValueError on a malformed table."""
        try:
            leads = tuple(
                LeadError(
                    first_hour=int(e["first_hour"]),
                    last_hour=int(e["last_hour"]),
                    q10=float(e["q10"]),
                    q50=float(e["q50"]),
                    q90=float(e["q90"]),
                )
                for e in data["leads"]
            )
            model = cls(
                leads=leads,
                hourly_correlation=float(data["hourly_correlation"]),
                provenance=str(data["provenance"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed error model: {exc}") from exc
        if not leads or any(e.q10 > e.q50 or e.q50 > e.q90 for e in leads):
            raise ValueError("error model quantiles must be ordered q10 <= q50 <= q90")
        return model

    def relative_band(self, hours_ahead: IntArray) -> tuple[FloatArray, FloatArray]:
        """(lower, upper) relative offsets around the median for each 1-based hour ahead.

        Hours past the last bucket use the last bucket (errors only grow with the lead, so this
        understates them there: callers should not extrapolate far).
        """
        last = np.array([e.last_hour for e in self.leads])
        idx = np.minimum(np.searchsorted(last, np.maximum(hours_ahead, 1)), len(self.leads) - 1)
        lo = np.array([e.q10 - e.q50 for e in self.leads])[idx]
        hi = np.array([e.q90 - e.q50 for e in self.leads])[idx]
        return lo, hi

    def quantile_paths(self, point: FloatArray, first_hour_ahead: int = 1) -> FloatArray:
        """p10/p50/p90 paths (3, H) around a point forecast whose first value is `first_hour_ahead`.

        The provider's value stays the median: its bias is not ours to correct.
        """
        p = np.asarray(point, dtype=np.float64)
        lo, hi = self.relative_band(first_hour_ahead + np.arange(p.shape[0]))
        out: FloatArray = np.stack([np.maximum(p * (1 + lo), 0.0), p, p * (1 + hi)])
        return out


def ar1_normals(
    rng: np.random.Generator, draws: int, zones: int, hours: int, rho: float, cross_zone: float = 0.0
) -> FloatArray:
    """Standard-normal draws shaped (hours, draws, zones): AR(1) over hours, optional shared factor.

    Stationary from the first hour (z₀ ~ N(0, 1)), so every hour has unit variance and
    corr(z_t, z_{t+k}) = rho**k. With cross_zone = c the innovations are √c·shared + √(1−c)·own,
    so two zones' hours at the same time correlate by c. Hours lead the shape so the recursion
    works on contiguous slices (in place, no temporaries).
    """
    if not 0.0 <= rho <= 1.0 or not 0.0 <= cross_zone <= 1.0:
        raise ValueError("rho and cross_zone must be in [0, 1]")
    z = rng.standard_normal((hours, draws, zones))
    if cross_zone > 0.0:
        z *= np.sqrt(1.0 - cross_zone)
        z += np.sqrt(cross_zone) * rng.standard_normal((hours, draws, 1))
    innovation = np.sqrt(max(0.0, 1.0 - rho * rho))
    for t in range(1, hours):
        z[t] *= innovation
        z[t] += rho * z[t - 1]
    return z


@dataclass(frozen=True, slots=True)
class Options:
    """Candidate runs on a common hourly grid: zone row, first hour index, hours, energy scale."""

    zone: IntArray  # (K,) row into the zones axis of the paths
    start: IntArray  # (K,) first hour index into the paths' hour axis
    hours: IntArray  # (K,) duration in whole hours (≥ 1)
    scale: FloatArray  # (K,) multiplier (e.g. kWh) turning mean intensity into emissions


def _check(paths: FloatArray, options: Options) -> None:
    if paths.ndim != 3 or paths.shape[1] != 3:
        raise ValueError("paths must be (zones, 3, hours): p10, p50, p90")
    if np.any(np.diff(paths, axis=1) < 0):
        raise ValueError("paths must satisfy p10 <= p50 <= p90")
    if (
        np.any(options.hours < 1)
        or np.any(options.start < 0)
        or np.any(options.start + options.hours > paths.shape[2])
    ):
        raise ValueError("every option's window must lie inside the paths")


def sample_emissions(
    paths: FloatArray,
    options: Options,
    draws: int = DEFAULT_DRAWS,
    rho: float = DEFAULT_RHO,
    seed: int = 0,
    cross_zone: float = 0.0,
) -> FloatArray:
    """Monte Carlo emissions (draws, K) of every option under the correlated error model.

    Cost is draws × zones × hours normals (see docs/forecasting.md for timings): pass only the
    zones and hours the options span.
    """
    _check(paths, options)
    rng = np.random.default_rng(seed)
    z = ar1_normals(rng, draws, paths.shape[0], paths.shape[2], rho, cross_zone)  # (H, N, Z)
    p10, p50, p90 = (paths[:, i, :].T[:, None, :] for i in range(3))  # each (H, 1, Z)
    lower, upper = (p50 - p10) / Z90, (p90 - p50) / Z90
    z *= np.where(z < 0.0, lower, upper)
    z += p50
    np.maximum(z, 0.0, out=z)
    csum = np.empty((paths.shape[2] + 1, draws, paths.shape[0]))
    csum[0] = 0.0
    np.cumsum(z, axis=0, out=csum[1:])
    total = csum[options.start + options.hours, :, options.zone] - csum[options.start, :, options.zone]
    out: FloatArray = (total / options.hours[:, None] * options.scale[:, None]).T
    return np.ascontiguousarray(out)


def p_best(samples: FloatArray) -> FloatArray:
    """Probability each option (column) is the lowest, ties within a draw split evenly; sums to 1."""
    return _p_best_rows(_rows(samples))


def tied_with_leader(samples: FloatArray, leader: int, threshold: float = TIE_THRESHOLD) -> FloatArray:
    """Per option: share of draws where it beats the leader (equal counts half). Leader: 0.5."""
    return _beats_rows(_rows(samples), leader)


def _rows(samples: FloatArray) -> FloatArray:
    """Draws (draws, K) as K contiguous rows: reductions across options then run on long rows.

    NumPy reduces a (1,000, 5) array along its short axis several times slower than (5, 1,000)
    along the long one; `window_samples` already returns a transposed view of such rows.
    """
    rows: FloatArray = np.ascontiguousarray(samples.T)
    return rows


def _p_best_rows(rows: FloatArray) -> FloatArray:
    is_min = rows <= rows.min(axis=0)
    count = is_min.sum(axis=0)
    if int(count.max()) == 1:  # no ties in any draw (the usual case): a plain share
        plain: FloatArray = is_min.mean(axis=1)
        return plain
    out: FloatArray = (is_min / count).mean(axis=1)
    return out


def _beats_rows(rows: FloatArray, leader: int) -> FloatArray:
    lead = rows[leader]
    out: FloatArray = (rows < lead).mean(axis=1) + 0.5 * (rows == lead).mean(axis=1)
    return out


@dataclass(frozen=True, eq=False, slots=True)
class Uncertainty:
    """Everything the answer carries per option, plus the result-level tie flag."""

    p10: FloatArray  # (K,) emissions p10
    p50: FloatArray
    p90: FloatArray
    p_best: FloatArray  # (K,)
    beats_leader: FloatArray  # (K,) share of draws the option beats the leader
    order: IntArray  # options ranked by the chosen risk score, best first
    leader: int
    tied: bool  # another option beats the leader in ≥ TIE_THRESHOLD of draws


def assess(
    paths: FloatArray,
    options: Options,
    risk: str = "p50",
    draws: int = DEFAULT_DRAWS,
    rho: float = DEFAULT_RHO,
    seed: int = 0,
    cross_zone: float = 0.0,
    threshold: float = TIE_THRESHOLD,
) -> Uncertainty:
    """Intervals, p_best, ranking by `risk` and the tie flag for a set of options (one MC run)."""
    samples = sample_emissions(paths, options, draws, rho, seed, cross_zone)
    return assess_samples(samples, risk, threshold)


def assess_samples(
    samples: FloatArray, risk: str = "p50", threshold: float = TIE_THRESHOLD, *, intervals: bool = True
) -> Uncertainty:
    """`assess` on drawn emissions (draws, K): one sort gives every quantile.

    With `intervals=False` (the answer's step, whose intervals come from the paths) only the
    `risk` score is computed, by partition rather than a sort, and p10/p50/p90 hold that score.
    """
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
    rows = _rows(samples)
    if not intervals:
        return _assess_rows_lean(rows, risk, threshold)
    ordered = np.sort(rows, axis=1)
    p10, p50, p90 = (_sorted_quantile(ordered, q) for q in (0.1, 0.5, 0.9))
    scores = rows.mean(axis=1) if risk == "mean" else (p90 if risk == "p90" else p50)
    order = np.argsort(scores, kind="stable").astype(np.int64)
    leader = int(order[0])
    beats = _beats_rows(rows, leader)
    others = np.delete(beats, leader)
    return Uncertainty(
        p10=p10,
        p50=p50,
        p90=p90,
        p_best=_p_best_rows(rows),
        beats_leader=beats,
        order=order,
        leader=leader,
        tied=bool(others.size and others.max() >= threshold),
    )


def assess_rows(rows: FloatArray, risk: str = "p50", threshold: float = TIE_THRESHOLD) -> Uncertainty:
    """`assess_samples(samples, risk, intervals=False)` on the options' draws as (K, draws) rows."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
    return _assess_rows_lean(np.ascontiguousarray(rows), risk, threshold)


def _assess_rows_lean(rows: FloatArray, risk: str, threshold: float) -> Uncertainty:
    """`assess_samples(intervals=False)` in as few array passes as the answer's step can afford.

    Why: an answer has a handful of options (K <= P_BEST_CAP), so NumPy's per-call cost, not the
    1,000 draws, dominates; the per-option arithmetic is done on Python floats from the counts.
    Bit-identical to the array formulas: a mean of booleans is its count divided by the draws,
    which is what Python's float division gives too (`test_uncertainty` pins both forms).
    """
    n = rows.shape[1]
    scores = rows.mean(axis=1) if risk == "mean" else _partition_quantile(rows, 0.9 if risk == "p90" else 0.5)
    order = np.argsort(scores, kind="stable").astype(np.int64)
    leader = int(order[0])
    lead = rows[leader]
    below = (rows < lead).sum(axis=1).tolist()
    at_most = (rows <= lead).sum(axis=1).tolist()
    beats = [lt / n + 0.5 * ((le - lt) / n) for lt, le in zip(below, at_most, strict=True)]
    is_min = rows <= rows.min(axis=0)
    minima = is_min.sum(axis=1).tolist()
    # One minimum per draw (no ties, the usual case): a plain share; otherwise ties split evenly.
    p_best = np.array([count / n for count in minima]) if sum(minima) == n else _p_best_rows(rows)
    others = [b for i, b in enumerate(beats) if i != leader]
    return Uncertainty(
        p10=scores,
        p50=scores,
        p90=scores,
        p_best=p_best,
        beats_leader=np.array(beats),
        order=order,
        leader=leader,
        tied=bool(others) and max(others) >= threshold,
    )


def _partition_quantile(rows: FloatArray, q: float) -> FloatArray:
    """Row quantile (K, draws) by partition (linear rule, as `_sorted_quantile`), O(draws)."""
    n = rows.shape[1]
    position = q * (n - 1)
    low = int(np.floor(position))
    high = min(low + 1, n - 1)
    # Both order statistics by one partition, in the form this machine runs faster
    # (`order_stats`); exact order statistics either way, so the result is bit-identical to the
    # sorted quantile (`test_partition_quantile_...`).
    if high > low:
        lower, upper = row_kth_two(rows, low)
    else:
        upper = lower = row_kth(rows, high)
    out: FloatArray = lower + (position - low) * (upper - lower)
    return out


def _sorted_quantile(ordered: FloatArray, q: float) -> FloatArray:
    """Row quantile of row-sorted draws (K, draws), NumPy's default ("linear") rule."""
    n = ordered.shape[1]
    position = q * (n - 1)
    low = int(np.floor(position))
    high = min(low + 1, n - 1)
    frac = position - low
    out: FloatArray = ordered[:, low] + frac * (ordered[:, high] - ordered[:, low])
    return out


def zone_draw_sums(
    path: FloatArray,
    draws: int = DEFAULT_DRAWS,
    rho: float = DEFAULT_RHO,
    seed: int = 0,
    normals: FloatArray | None = None,
) -> FloatArray:
    """Cumulative sums (hours + 1, draws) of one zone's drawn hourly values under the error model.

    The draws of `sample_emissions` for a single zone, kept as prefix sums over hours so any
    window's mean in every draw is two row reads: a zone's sums are made once (per series and
    hour, by the caller's memo) and every option and request on it is index arithmetic. Zones
    drawn this way are independent (give each its own `seed`); `cross_zone` needs the joint
    `sample_emissions`. `normals` (hours or more, draws) are the zone's `ar1_normals`, if the
    caller keeps them (they depend on the seed, the shape and rho, not on the data); a prefix of
    a stationary AR(1) is one too, so longer normals serve shorter paths.
    """
    if path.ndim != 2 or path.shape[0] != 3:
        raise ValueError("path must be (3, hours): p10, p50, p90")
    path = np.nan_to_num(path, nan=0.0)  # hours without an error model: no option may span them
    if np.any(np.diff(path, axis=0) < 0):
        raise ValueError("path must satisfy p10 <= p50 <= p90")
    hours = path.shape[1]
    if normals is None:
        normals = ar1_normals(np.random.default_rng(seed), draws, 1, hours, rho)[:, :, 0]  # (H, N)
    elif normals.shape[0] < hours or normals.shape[1] != draws:
        raise ValueError("normals must be (at least hours, draws)")
    head = normals[:hours]
    p10, p50, p90 = (path[i][:, None] for i in range(3))
    sums = np.empty((hours + 1, draws))
    sums[0] = 0.0
    z = sums[1:]  # the drawn values are written where their prefix sums go, then summed in place
    # z · (lower where z < 0, else upper), as min(z, 0) · lower + max(z, 0) · upper: the same
    # products (the other term is an exact zero), without `np.where` on two broadcast (hours, 1)
    # operands (~140 µs alone at 34 hours × 1,000 draws). With the prefix sums below and no
    # temporary for z, a zone's sums take 135 instead of 295 µs there (868 against 1,811 µs at
    # 200 hours), bit-identical: a zone's first answer of an hour pays this for each top zone.
    np.minimum(head, 0.0, out=z)
    z *= (p50 - p10) / Z90
    upper = np.maximum(head, 0.0)
    upper *= (p90 - p50) / Z90
    z += upper
    z += p50
    np.maximum(z, 0.0, out=z)
    # Row by row, in place: the same sequential additions as `np.cumsum(z, axis=0)`, whose inner
    # loop runs down the strided hour axis (one short loop per draw: ~3× slower at 1,000 draws).
    for hour in range(1, hours):
        sums[hour + 1] += sums[hour]
    sums.flags.writeable = False
    return sums


def window_samples(sums: Sequence[FloatArray], options: Options) -> FloatArray:
    """Drawn emissions (draws, K) of each option from its zone's `zone_draw_sums`."""
    rows = option_rows(
        sums, options.zone.tolist(), options.start.tolist(), options.hours.tolist(), options.scale.tolist()
    )
    out: FloatArray = rows.T  # (draws, K) view of K contiguous rows (see `_rows`)
    return out


def option_rows(
    sums: Sequence[FloatArray] | Mapping[int, FloatArray],
    zones: Sequence[int],
    starts: Sequence[int],
    hours: Sequence[int],
    scales: Sequence[float],
) -> FloatArray:
    """(K, draws) drawn emissions, one contiguous row per option: two rows of its zone's draw sums."""
    count = len(zones)
    if count == 0:
        raise ValueError("need at least one option")
    out: FloatArray | None = None
    for i, (zone, start, span, scale) in enumerate(zip(zones, starts, hours, scales, strict=True)):
        table = sums[zone]
        if span < 1 or start < 0 or start + span > table.shape[0] - 1:
            raise ValueError("every option's window must lie inside its zone's draws")
        if out is None:
            out = np.empty((count, table.shape[1]))
        row = out[i]  # written in place: no temporary per option and no stack (~30 % less)
        np.subtract(table[start + span], table[start], out=row)
        row *= float(scale) / span
    assert out is not None
    return out


def comonotone_interval(paths: FloatArray, options: Options) -> FloatArray:
    """(K, 3) emissions p10/p50/p90 assuming perfectly correlated hours (no sampling).

    Averaging the p10 (p90) path over the window is the window's p10 (p90) when all hours err
    together; with rho < 1 the true band is narrower, so this is the cautious cheap form.
    """
    _check(paths, options)
    csum = np.concatenate([np.zeros((paths.shape[0], 3, 1)), np.cumsum(paths, axis=2)], axis=2)
    total = csum[options.zone, :, options.start + options.hours] - csum[options.zone, :, options.start]
    out: FloatArray = total / options.hours[:, None] * options.scale[:, None]
    return out
