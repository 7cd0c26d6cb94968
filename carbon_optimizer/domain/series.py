"""Carbon series on one common time grid, and the exact prefix sums the scoring engine reads.

Why a common grid: zones arrive at different granularities (Electricity Maps gives hourly data for
most zones and 15- or 5-minute data for some); scoring every location at once needs one (L, N) array.
Resampling to the gcd of the steps is lossless for piecewise-constant data: a finer grid only repeats
each value, so every window mean stays exactly what it was on the source series.

Why quantised prefix sums: window means come from a cumulative integral F (one subtraction per window
instead of a sum over its points). In plain floating point F(b) - F(a) carries rounding noise that
depends on *where* the window sits, so two windows with identical contents (a flat forecast
extension, two zones with the same data) would differ in the last bits and the contract's tie-break
("earlier start, then request order") would be decided by noise. Rounding intensities to a
*decimal* quantum (10**-6 g/kWh, `INTENSITY_DECIMALS`, finer than any source publishes), summing
them as int64 and integrating in whole seconds keeps every intermediate an exact integer below
2**53, so F is exact and each window mean is one correctly rounded division: identical windows give
bit-identical means, and so do windows whose means are equal in decimal (100.1 and 100.3 against
100.2 twice). A binary quantum would not do the second: truncating 100.1, 100.2 and 100.3 to
multiples of 2**-20 leaves the two sums one quantum apart, and ties went to that noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, FloatArray, IntArray

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MINUTE = timedelta(minutes=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
# Intensity quantum 10**-INTENSITY_DECIMALS g/kWh; coarsened only if the data would overflow 2**53.
INTENSITY_DECIMALS = 6
# Headroom below 2**53 for the sums of two prefix values and two partial-step terms.
_EXACT_BITS = 50


def seconds(delta: timedelta) -> float:
    """Length of `delta` in seconds, exact for whole seconds (integer microsecond arithmetic)."""
    return (delta // _ONE_MICROSECOND) / 1_000_000


@dataclass(frozen=True, eq=False, slots=True)
class PrefixSums:
    """Exact cumulative sums of a grid in quantised integer units (see the module docstring).

    With q[l, j] = rint(values[l, j] · scale) (scale = 10**d, d <= INTENSITY_DECIMALS), `cumulative[l, j]` =
    Σ_{i<j} q[l, i], shape (L, N + 1), int64: integer adds are also several times faster than a
    float64 cumsum, which is latency-bound. q itself is cumulative[:, j+1] - cumulative[:, j].
    The integral over [a, b) in g/kWh·s is ((cumulative[b'] - cumulative[a']) · step_seconds
    + partial steps) / scale.
    """

    scale: float
    step_seconds: float
    points: int  # N
    cumulative: IntArray


@dataclass(frozen=True, eq=False, slots=True)
class IntensityGrid:
    """All locations' intensities on one common uniform time grid."""

    start: datetime  # UTC, aware; grid point 0
    step: timedelta  # common granularity
    values: FloatArray  # shape (L, N), gCO2e/kWh, piecewise constant on [start+j*step, start+(j+1)*step)
    # Computed on first use and reused by every window query on this grid (values must not change).
    _prefix: PrefixSums | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("IntensityGrid.start must be timezone-aware")
        if self.step <= timedelta(0):
            raise ValueError("IntensityGrid.step must be positive")
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or 0 in values.shape:
            raise ValueError(
                f"IntensityGrid.values must have shape (L, N) with L, N >= 1, got {values.shape}"
            )
        # A read-only view: the cached prefix sums would silently go stale if the grid were edited.
        view = values.view()
        view.flags.writeable = False
        object.__setattr__(self, "values", view)

    @property
    def end(self) -> datetime:
        """End of the last interval (exclusive)."""
        return self.start + self.step * int(self.values.shape[1])

    def minutes_from_start(self, when: datetime) -> float:
        """Minutes from grid point 0 to `when` (negative before the grid)."""
        return (when - self.start) / _ONE_MINUTE

    def prefix_sums(self) -> PrefixSums:
        """Exact quantised cumulative integral of every row (computed once, then cached)."""
        cached = self._prefix
        if cached is not None:
            return cached
        values = self.values
        rows, points = values.shape
        step_s = seconds(self.step)
        largest = max(float(values.max()), -float(values.min()))
        if not math.isfinite(largest):
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            raise ValueError(f"intensity grid has non-finite values in rows {bad.tolist()}")
        # Bound on |cumulative| · step and on any partial-step term, in raw units (g/kWh·s).
        bound = largest * step_s * points
        decimals = INTENSITY_DECIMALS
        if bound > 0:
            # A subnormal bound makes the headroom infinite: the full decimal scale then fits.
            headroom = math.ldexp(1.0, _EXACT_BITS) / bound
            if math.isfinite(headroom):
                decimals = min(INTENSITY_DECIMALS, math.floor(math.log10(headroom)))
        scale = 10.0**decimals
        # Quantise: round to the nearest quantum (error <= half a quantum; exact for data with at
        # most `decimals` decimals), cast into the int64 array that is kept and sum in place. One
        # float temporary: rint cannot write through the integer cast.
        cumulative = np.empty((rows, points + 1), dtype=np.int64)
        cumulative[:, 0] = 0
        quantised = cumulative[:, 1:]
        scaled = np.multiply(values, scale)
        np.rint(scaled, out=scaled)
        quantised[...] = scaled
        np.cumsum(quantised, axis=1, out=quantised)
        prefix = PrefixSums(scale=scale, step_seconds=step_s, points=points, cumulative=cumulative)
        # Benign race: two threads would compute the same arrays.
        object.__setattr__(self, "_prefix", prefix)
        return prefix


def _whole_minutes(step: timedelta, zone: str) -> int:
    if step <= timedelta(0) or step % _ONE_MINUTE:
        raise ValueError(f"series for zone {zone!r} has step {step}, not a positive whole number of minutes")
    return step // _ONE_MINUTE


def align_series(series: Sequence[CarbonSeries], start: datetime, end: datetime) -> IntensityGrid:
    """Resample series (possibly different steps) onto one grid covering [start, end), rows in input order.

    Common step = gcd of the steps (whole minutes); grid start = `start` floored to that step on the UTC
    epoch lattice. Each series must cover [grid start, end) and start on its own step lattice
    (ValueError naming the zone otherwise). One slice or np.repeat per series; no per-point loops.
    """
    if not series:
        raise ValueError("align_series needs at least one series")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("align_series needs timezone-aware start and end")
    if end <= start:
        raise ValueError(f"empty range: end {end} is not after start {start}")
    step_minutes = [_whole_minutes(s.step, s.zone) for s in series]
    common = timedelta(minutes=math.gcd(*step_minutes))
    grid_start = EPOCH + ((start - EPOCH) // common) * common
    points = -((grid_start - end) // common)  # ceil: the grid covers [grid_start, end)
    out = np.empty((len(series), points), dtype=np.float64)
    for row, s in enumerate(series):
        if (s.start - EPOCH) % s.step:
            raise ValueError(
                f"series for zone {s.zone!r} starts at {s.start}, not on its {s.step} lattice from the epoch"
            )
        if s.start > grid_start or s.end < end:
            raise ValueError(
                f"series for zone {s.zone!r} covers [{s.start}, {s.end}), "
                f"which does not cover the needed range [{grid_start}, {end})"
            )
        ratio = s.step // common  # grid points per series point
        offset = (grid_start - s.start) // common  # grid_start in grid steps after the series start
        first, phase = divmod(offset, ratio)
        last = (offset + points - 1) // ratio  # inclusive
        source = np.asarray(s.values, dtype=np.float64)
        if ratio == 1:
            out[row] = source[first : first + points]
        elif phase == 0 and points % ratio == 0:
            # Broadcast straight into the output row: no temporary.
            out[row].reshape(points // ratio, ratio)[...] = source[first : last + 1, None]
        else:
            out[row] = np.repeat(source[first : last + 1], ratio)[phase : phase + points]
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        zones = [series[i].zone for i in np.flatnonzero(~finite).tolist()]
        raise ValueError(f"non-finite intensities in [{grid_start}, {end}) for zones {zones}")
    return IntensityGrid(start=grid_start, step=common, values=out)
