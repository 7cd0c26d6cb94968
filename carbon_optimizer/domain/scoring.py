"""The scoring engine: every (location, start) candidate of a request scored at once with NumPy.

Why this shape: a request is L locations × K start times (up to 200 × 2016), so nothing may cost a
Python object per candidate. Window means come from the exact prefix sums of `series.IntensityGrid`
(two strided views of them per window when the starts move in whole grid steps, a gather
otherwise; all locations at once); scores are elementwise array formulas computed in place; the
top k are found without sorting the L·K scores (a cheap upper bound, then argpartition and a
lexsort on the few candidates under it). Python objects are built for the k winners only.

Ties break exactly as the contract says — lower score, then earlier start, then earlier location in
the request. Scores are compared on a decimal scale: intensities are rounded to 10**-6 g/kWh
(`series.INTENSITY_DECIMALS`, coarser only if a grid would overflow exact int64 sums) and integrated
exactly, so windows whose means are equal in decimal at that scale have bit-identical means, equal
energy and price then give bit-identical scores, and the tie rule — not truncation noise of about
1e-7 g/kWh — decides their order. Means that differ at that scale are real differences and rank
as such. Start times are whole seconds (the API floors them once, at the edge), which keeps the
integrals exact.

Balanced mode divides by the request's minimum emissions and minimum cost. A minimum of zero (a
zero-carbon zone, a free on-prem location) would divide by zero, so both minima are floored at
`NORMALISATION_FLOOR` (1e-9 g or USD); the ordering then still follows the raw values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from carbon_optimizer.domain import diversity
from carbon_optimizer.domain.models import FloatArray, IntArray, Objective, ObjectiveMode
from carbon_optimizer.domain.series import IntensityGrid, PrefixSums, seconds

NORMALISATION_FLOOR = 1e-9
GRAMS_PER_TONNE = 1e6
_SNAP_SECONDS = 1e-7
# Above this many phases (or with fewer than two windows per phase) a gather is cheaper.
_MAX_PHASES = 16


@dataclass(frozen=True, slots=True)
class CandidateGrid:
    """Candidate start times first_start + k·start_step, k < count, each running for `duration`."""

    first_start: datetime
    start_step: timedelta
    count: int
    duration: timedelta

    def start(self, k: int) -> datetime:
        """Start time of candidate k."""
        return self.first_start + k * self.start_step

    @property
    def last_end(self) -> datetime:
        """End of the last candidate's run."""
        return self.start(self.count - 1) + self.duration


def candidate_grid(
    earliest_start: datetime, deadline: datetime, duration: timedelta, step: timedelta
) -> CandidateGrid:
    """Starts earliest_start + k·step, k = 0, 1, …, while start + duration <= deadline; ValueError if none."""
    if step <= timedelta(0):
        raise ValueError("candidate step must be positive")
    if duration <= timedelta(0):
        raise ValueError("duration must be positive")
    slack = deadline - earliest_start - duration
    if slack < timedelta(0):
        raise ValueError(
            f"no candidate: the window [{earliest_start}, {deadline}) is shorter than the duration {duration}"
        )
    return CandidateGrid(
        first_start=earliest_start, start_step=step, count=slack // step + 1, duration=duration
    )


def _snap(x: FloatArray) -> FloatArray:
    """Round positions that are within rounding noise of a whole second to it."""
    whole = np.rint(x)
    return np.where(np.abs(x - whole) <= _SNAP_SECONDS, whole, x)


def _edge(prefix: PrefixSums, pos_s: FloatArray) -> tuple[IntArray, FloatArray]:
    """Grid point at or before each position and the offset past it (seconds); callers check the range.

    The index runs to N (the grid's end), where the offset is always 0, so F(end) = cumulative[N].
    """
    step_s = prefix.step_seconds
    index = np.floor(pos_s / step_s).astype(np.int64)
    np.clip(index, 0, prefix.points, out=index)
    return index, pos_s - index * step_s


def _uniform_stride(index: IntArray, offset_a: FloatArray, offset_b: FloatArray) -> int | None:
    """Stride when the windows are one pattern shifted by a whole number of grid steps, else None.

    Then the engine reads strided views of the prefix sums instead of gathering (L, K) values.
    """
    if index.size == 1:
        return 1
    stride = int(index[1] - index[0])
    if stride <= 0 or not bool(np.all(np.diff(index) == stride)):
        return None
    if not (bool(np.all(offset_a == offset_a[0])) and bool(np.all(offset_b == offset_b[0]))):
        return None
    return stride


def _phase_period(start_s: FloatArray, step_s: float) -> int:
    """How many in-step phases evenly spaced whole-second starts cycle through (1 if not that shape).

    E.g. 15-minute starts on hourly data cycle through 4 phases; each phase class is then uniform.
    """
    count = start_s.size
    if count < 2 or not step_s.is_integer():
        return 1
    spacing = float(start_s[1] - start_s[0])
    if spacing <= 0 or not spacing.is_integer() or not bool(np.all(np.diff(start_s) == spacing)):
        return 1
    period = int(step_s) // math.gcd(int(step_s), int(spacing))
    return period if period <= _MAX_PHASES and 2 * period <= count else 1


def _strided_into(
    out: FloatArray,
    cum: IntArray,
    a0: int,
    fa: float,
    b0: int,
    fb: float,
    stride: int,
    size: int,
    step_s: float,
) -> None:
    """`_integrals_into` for windows one pattern apart by `stride` grid steps: strided views, no gather.

    Window k runs from grid point a0 + k·stride plus `fa` seconds to b0 + k·stride plus `fb`. The
    general path and the arithmetic-progression path both end here, so they agree bit for bit.
    """
    reach = stride * (size - 1) + 1
    ca, cb = cum[..., a0 : a0 + reach : stride], cum[..., b0 : b0 + reach : stride]
    # Only read when the offset is non-zero, which guarantees index + 1 <= N.
    ca_next = cum[..., a0 + 1 : a0 + 1 + reach : stride] if fa else ca
    cb_next = cum[..., b0 + 1 : b0 + 1 + reach : stride] if fb else cb
    _combine_into(out, ca, ca_next, cb, cb_next, fa, fb, step_s)


def _combine_into(
    out: FloatArray,
    ca: IntArray,
    ca_next: IntArray,
    cb: IntArray,
    cb_next: IntArray,
    fa: float | FloatArray,
    fb: float | FloatArray,
    step_s: float,
) -> None:
    """Write F(b) − F(a) into `out`, with F(i + f) = C[i]·(step − f) + C[i+1]·f (see `_integrals_into`)."""
    if not (fa.any() if isinstance(fa, np.ndarray) else fa) and not (
        fb.any() if isinstance(fb, np.ndarray) else fb
    ):
        np.subtract(cb, ca, out=out, casting="unsafe")
        out *= step_s
        return
    # In place with one scratch buffer: every fresh (L, K) array costs page faults.
    scratch = np.empty_like(out)
    np.multiply(cb, step_s - fb, out=out)
    np.multiply(cb_next, fb, out=scratch)
    out += scratch
    np.multiply(ca, step_s - fa, out=scratch)
    out -= scratch
    np.multiply(ca_next, fa, out=scratch)
    out -= scratch


def _integrals_into(
    out: FloatArray,
    cum: IntArray,
    a_index: IntArray,
    a_offset: FloatArray,
    b_index: IntArray,
    b_offset: FloatArray,
    step_s: float,
) -> None:
    """Write scale·∫ intensity dt (g/kWh·s) over each window [a, b) into `out`, shape (..., K).

    With C the quantised prefix sums and x = grid point i plus f seconds, the integral up to x is
    F(x) = C[i]·step + f·(C[i+1] − C[i]) = C[i]·(step − f) + C[i+1]·f; for whole-second times every
    product and sum here is an exact integer below 2**53 (see series.py).
    """
    stride = _uniform_stride(a_index, a_offset, b_offset)
    if stride is not None:
        _strided_into(
            out,
            cum,
            int(a_index[0]),
            float(a_offset[0]),
            int(b_index[0]),
            float(b_offset[0]),
            stride,
            a_index.size,
            step_s,
        )
        return
    points = cum.shape[-1] - 1
    # offset == 0 wherever index == N, so clipping index + 1 there changes nothing.
    _combine_into(
        out,
        cum[..., a_index],
        cum[..., np.minimum(a_index + 1, points)],
        cum[..., b_index],
        cum[..., np.minimum(b_index + 1, points)],
        a_offset,
        b_offset,
        step_s,
    )


def _progression_period(
    prefix: PrefixSums, first_s: float, spacing_s: float, count: int, duration_s: float
) -> int | None:
    """How many phase classes the progression's windows fall into, or None: take the general path.

    None unless everything is whole seconds inside the grid and the classes are few enough for
    strided views (the general path's `_phase_period` rule); 1 when the starts move in whole
    grid steps.
    """
    step_s = prefix.step_seconds
    if not (
        count >= 1
        and duration_s > 0
        and spacing_s > 0
        and first_s >= 0
        and first_s.is_integer()
        and spacing_s.is_integer()
        and duration_s.is_integer()
        and step_s.is_integer()
    ):
        return None
    g, c = int(step_s), int(spacing_s)
    if first_s + (count - 1) * spacing_s + duration_s > step_s * prefix.points:
        return None
    if count == 1 or c % g == 0:
        return 1
    period = g // math.gcd(g, c)
    return period if period <= _MAX_PHASES and 2 * period <= count else None


def _progression_means(
    grid: IntensityGrid, first_s: float, spacing_s: float, count: int, duration_s: float
) -> FloatArray:
    """(L, count) window means for starts first_s + k·spacing_s: `_window_means_seconds` on a progression.

    Why: the candidate starts of a request are always an arithmetic progression, so the edges,
    the stride and the phase classes the general path finds with a dozen array passes follow from
    four integers. With whole seconds on a whole-second grid (the API floors times) this computes
    the same scalars and calls the same `_strided_into`, so the means are bit-identical; any other
    shape (fractional seconds, a gather) goes the general way.
    """
    prefix = grid.prefix_sums()
    step_s = prefix.step_seconds
    period = _progression_period(prefix, first_s, spacing_s, count, duration_s)
    if period is None:  # not whole seconds, a gather, or outside the grid (the general path says so)
        return _window_means_seconds(
            grid, first_s + spacing_s * np.arange(count, dtype=np.float64), duration_s
        )
    g, c, f, d = int(step_s), int(spacing_s), int(first_s), int(duration_s)
    cum = prefix.cumulative
    means = np.empty((cum.shape[0], count), dtype=np.float64)
    for phase in range(period):
        # Each phase class moves by period·c, a whole number of grid steps (period·c = lcm(g, c)).
        first = f + phase * c
        size = -(-(count - phase) // period)
        a0, b0 = first // g, (first + d) // g
        stride = period * c // g if size > 1 else 1
        out = means if period == 1 else means[:, phase::period]
        fa, fb = float(first - a0 * g), float(first + d - b0 * g)
        _strided_into(out, cum, a0, fa, b0, fb, stride, size, step_s)
    means /= prefix.scale * duration_s
    return means


def _window_means_seconds(
    grid: IntensityGrid, start_s: FloatArray, duration_s: float, rows: slice | int = slice(None)
) -> FloatArray:
    """Mean intensity over [s, s + d) for positions and duration in seconds from grid.start."""
    if not duration_s > 0:
        raise ValueError("window duration must be positive")
    start_s = _snap(np.asarray(start_s, dtype=np.float64).reshape(-1))
    duration_s = float(_snap(np.array([duration_s]))[0])
    if start_s.size == 0:
        raise ValueError("no window start given")
    end_s = start_s + duration_s
    prefix = grid.prefix_sums()
    step_s = prefix.step_seconds
    span = step_s * prefix.points
    if start_s.min() < 0 or end_s.max() > span:
        raise ValueError(
            f"window outside the intensity grid: needs [{start_s.min()}, {end_s.max()}) s "
            f"from {grid.start}, grid covers [0, {span}) s"
        )
    a_index, a_offset = _edge(prefix, start_s)
    b_index, b_offset = _edge(prefix, end_s)
    cum = prefix.cumulative[rows]
    means = np.empty((*cum.shape[:-1], start_s.size), dtype=np.float64)
    period = _phase_period(start_s, step_s)
    if period == 1:
        _integrals_into(means, cum, a_index, a_offset, b_index, b_offset, step_s)
    else:
        # Each phase class is uniform: strided views in and out instead of (L, K) gathers.
        for phase in range(period):
            pick = slice(phase, None, period)
            _integrals_into(
                means[..., pick], cum, a_index[pick], a_offset[pick], b_index[pick], b_offset[pick], step_s
            )
    # One rounding: the numerator is exact and scale·duration an exact integer (whole seconds).
    means /= prefix.scale * duration_s
    return means


def window_means(grid: IntensityGrid, start_minutes: FloatArray, duration_minutes: float) -> FloatArray:
    """Time-weighted mean intensity over [s, s+d) for every grid row and every start s (minutes): (L, K)."""
    start_s = np.asarray(start_minutes, dtype=np.float64).reshape(-1) * 60.0
    return _window_means_seconds(grid, start_s, float(duration_minutes) * 60.0)


def evaluate_window(grid: IntensityGrid, location_index: int, start: datetime, duration: timedelta) -> float:
    """Mean intensity of one row over [start, start+duration) (used for the baseline)."""
    if not 0 <= location_index < grid.values.shape[0]:
        raise ValueError(f"location index {location_index} out of range")
    pos = np.array([seconds(start - grid.start)])
    return float(_window_means_seconds(grid, pos, seconds(duration), rows=location_index)[0])


@dataclass(frozen=True, slots=True)
class ScoringInput:
    """One request's candidates: grid rows = locations (request order), energy and cost per location."""

    grid: IntensityGrid
    candidates: CandidateGrid
    energy_kwh: FloatArray  # shape (L,), per location
    cost_usd: FloatArray  # shape (L,), NaN = no price for that location
    objective: Objective
    max_results: int
    # Each location's best starts to keep (None: every pair); see `domain/diversity.py`.
    max_per_location: int | None = None
    # Show starts of one location with identical numbers once (the earliest).
    collapse_duplicates: bool = False


@dataclass(frozen=True, slots=True)
class RankedCandidate:
    """One ranked (location, start) option with its figures."""

    location_index: int
    start_index: int
    start: datetime
    end: datetime
    avg_intensity_g_per_kwh: float
    emissions_g: float
    cost_usd: float | None
    score: float


@dataclass(frozen=True, slots=True)
class ScoringResult:
    """The top candidates plus the counts and minima the response reports."""

    ranked: tuple[RankedCandidate, ...]  # best first, len <= max_results
    candidates_evaluated: int  # L*K
    candidates_eligible: int  # after the budget constraint (== evaluated for other modes)
    min_emissions_g: float
    min_cost_usd: float | None
    # Every (location, start) window mean, (L, K): the first column is the "as soon as allowed"
    # window, so a baseline at a listed location needs no second engine call (bit-identical).
    means: FloatArray | None = None


def _check_objective(objective: Objective) -> None:
    mode = objective.mode
    if mode is ObjectiveMode.BALANCED and not 0.0 <= objective.carbon_weight <= 1.0:
        raise ValueError("carbon_weight must be in [0, 1]")
    if mode is ObjectiveMode.CARBON_WITHIN_BUDGET and not objective.max_cost_increase_pct >= 0.0:
        raise ValueError("max_cost_increase_pct must be >= 0")
    if mode is ObjectiveMode.MONETIZED and not (
        objective.carbon_price_usd_per_tonne is not None and objective.carbon_price_usd_per_tonne >= 0.0
    ):
        raise ValueError("monetized mode needs carbon_price_usd_per_tonne >= 0")


def _scores_in_place(
    objective: Objective, emissions: FloatArray, cost: FloatArray, min_emissions: float, min_cost: float
) -> FloatArray:
    """Scores from emissions (overwritten) and cost; shared by the ranking and `objective_score`.

    The ranking passes an (L, K) buffer and an (L, 1) cost column, `objective_score` 0-d arrays:
    the same elementwise operations in the same order, so a baseline scored on its own gets exactly
    the score it would have had inside the ranking.
    """
    mode = objective.mode
    if mode is ObjectiveMode.CARBON or mode is ObjectiveMode.CARBON_WITHIN_BUDGET:
        return emissions
    if mode is ObjectiveMode.COST:
        return np.asarray(np.broadcast_to(cost, np.broadcast_shapes(cost.shape, emissions.shape)))
    if mode is ObjectiveMode.BALANCED:
        weight = objective.carbon_weight
        # w·em/min_em + (1−w)·cost/min_cost as two scaled terms: two passes over the buffer.
        emissions *= weight / max(min_emissions, NORMALISATION_FLOOR)
        emissions += cost * ((1.0 - weight) / max(min_cost, NORMALISATION_FLOOR))
        return emissions
    price = objective.carbon_price_usd_per_tonne
    if price is None:  # pragma: no cover - rejected by _check_objective
        raise ValueError("monetized mode needs carbon_price_usd_per_tonne")
    emissions *= price / GRAMS_PER_TONNE
    emissions += cost
    return emissions


def objective_score(
    objective: Objective,
    emissions_g: float,
    cost_usd: float | None,
    min_emissions_g: float,
    min_cost_usd: float | None,
) -> float:
    """Score of one (e.g. baseline) candidate relative to the minima of a ranking (same formulas)."""
    _check_objective(objective)
    if objective.uses_cost and (cost_usd is None or min_cost_usd is None):
        raise ValueError(f"objective {objective.mode.value} needs a cost")
    em = np.array(emissions_g, dtype=np.float64)
    cost = np.array(np.nan if cost_usd is None else cost_usd, dtype=np.float64)
    min_cost = np.nan if min_cost_usd is None else min_cost_usd
    return float(_scores_in_place(objective, em, cost, min_emissions_g, min_cost))


def _first_by_start(tied: IntArray, starts: int, needed: int) -> IntArray:
    """The `needed` entries of `tied` (ascending flat indices) that come first by (start, location).

    Linear (a bincount over start indices) rather than a sort: in cost mode with equal prices, or on
    a flat forecast, tens of thousands of candidates can tie.
    """
    start_of = tied % starts
    cut = int(np.searchsorted(np.cumsum(np.bincount(start_of, minlength=starts)), needed))
    earlier = tied[start_of < cut]
    # Ascending flat index within one start is ascending location index.
    return np.concatenate((earlier, tied[start_of == cut][: needed - earlier.size]))


def _top_k(scores: FloatArray, k: int) -> IntArray:
    """Flat indices of the k best (score, start, location), best first, without sorting everything.

    `scores` is (rows, K), flat index = row·K + start. A full-size argpartition costs ~2 ms at
    150 × 661 on the development machine, so it runs on a pre-filtered set instead: the minima of
    ≥ k disjoint chunks are k distinct candidates, so the k-th smallest of them (`bound`) is at
    least the k-th smallest score and `flat <= bound` keeps every candidate that can make the top k.
    If fewer than k of those lie strictly below `bound`, the k-th score is `bound` itself;
    otherwise argpartition finds it among the ones below. Candidates tied with the k-th score are
    cut by (start, location), and only the final k are lexsorted by (score, start, location).
    """
    rows, starts = scores.shape
    flat = scores.reshape(-1)
    if k < flat.size:
        chunks = -(-k // rows)  # <= starts because k <= rows·starts
        chunk_starts = np.arange(0, starts, starts // chunks)
        chunk_minima = np.minimum.reduceat(scores, chunk_starts, axis=1).reshape(-1)
        bound = np.partition(chunk_minima, k - 1)[k - 1]
        selected = np.flatnonzero(flat <= bound)
        kept = flat[selected]
        below = kept[kept < bound]
        kth = below[np.argpartition(below, k - 1)[k - 1]] if below.size >= k else bound
        better = selected[kept < kth]  # fewer than k
        tied = selected[kept == kth]
        needed = k - better.size
        if tied.size > needed:
            tied = _first_by_start(tied, starts, needed)
        selected = np.concatenate((better, tied))
    else:
        selected = np.arange(flat.size)
    order = np.lexsort((selected // starts, selected % starts, flat[selected]))[:k]
    return np.asarray(selected[order], dtype=np.int64)


def rank_candidates(inp: ScoringInput) -> ScoringResult:
    """Score every (location, start) candidate and return the best `max_results`, best first."""
    grid, cands, objective = inp.grid, inp.candidates, inp.objective
    locations = grid.values.shape[0]
    energy = np.asarray(inp.energy_kwh, dtype=np.float64)
    cost = np.asarray(inp.cost_usd, dtype=np.float64)
    if energy.shape != (locations,) or cost.shape != (locations,):
        raise ValueError(
            f"energy_kwh {energy.shape} and cost_usd {cost.shape} must both have shape ({locations},)"
        )
    # min/max instead of isfinite/all passes: NaN fails `>=`, ±inf fails one of the bounds.
    if energy.size and not (float(energy.min()) >= 0.0 and float(energy.max()) < math.inf):
        raise ValueError("energy_kwh must be finite and >= 0")
    if inp.max_results < 1:
        raise ValueError("max_results must be >= 1")
    if cands.count < 1:
        raise ValueError("no candidate start times")
    _check_objective(objective)
    has_price = ~np.isnan(cost)
    if objective.uses_cost and not has_price.all():
        missing = np.flatnonzero(~has_price).tolist()
        raise ValueError(
            f"objective {objective.mode.value} needs a price for every location; missing {missing}"
        )
    priced = cost[has_price]
    if priced.size and not (float(priced.min()) >= 0.0 and float(priced.max()) < math.inf):
        raise ValueError("cost_usd must be finite and >= 0 (or NaN for no price)")

    starts = cands.count
    first_s, spacing_s = seconds(cands.first_start - grid.start), seconds(cands.start_step)
    means = _progression_means(grid, first_s, spacing_s, starts, seconds(cands.duration))  # (L, K)
    energy_column = energy[:, None]
    # fl(e·m) is monotonic in m for e >= 0, so the minimum emission needs only the row minima.
    min_emissions = float((energy * means.min(axis=1)).min())
    min_cost = float(priced.min()) if priced.size else None

    rows: IntArray | None = None
    if objective.mode is ObjectiveMode.CARBON_WITHIN_BUDGET:
        assert min_cost is not None  # every location has a price (checked above)
        limit = (1.0 + objective.max_cost_increase_pct / 100.0) * min_cost
        rows = np.flatnonzero(cost <= limit)  # never empty: the cheapest location is within budget
        scores = means[rows] * energy_column[rows]
    else:
        buffer = np.multiply(means, energy_column)  # emissions, turned into scores in place
        scores = _scores_in_place(
            objective, buffer, cost[:, None], min_emissions, np.nan if min_cost is None else min_cost
        )
    shown_means = means if rows is None else means[rows]
    best = diversity.select(
        scores, shown_means, inp.max_results, inp.max_per_location, _top_k, inp.collapse_duplicates
    )

    ranked: list[RankedCandidate] = []
    for flat in best.tolist():
        sub_row, k = divmod(flat, starts)
        loc = sub_row if rows is None else int(rows[sub_row])
        start = cands.start(k)
        price = float(cost[loc])
        ranked.append(
            RankedCandidate(
                location_index=loc,
                start_index=k,
                start=start,
                end=start + cands.duration,
                avg_intensity_g_per_kwh=float(means[loc, k]),
                emissions_g=float(energy[loc] * means[loc, k]),  # same product as in the scores
                cost_usd=None if np.isnan(price) else price,
                score=float(scores[sub_row, k]),
            )
        )
    evaluated = locations * starts
    return ScoringResult(
        ranked=tuple(ranked),
        candidates_evaluated=evaluated,
        candidates_eligible=evaluated if rows is None else int(rows.size) * starts,
        min_emissions_g=min_emissions,
        min_cost_usd=min_cost,
        means=means,
    )
