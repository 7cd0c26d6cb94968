"""Forecast uncertainty of one answer: intervals for every option, p_best and a tie flag for the top.

Pure NumPy over what the service hands in: per zone, hourly p10/p50/p90 paths on one hour grid
(NaN where an hour has no calibrated error model: replay, a held reading, an extension), and the
options as (zone row, first hour, hours, kWh). Why a step of its own: the engine ranks on the
median; this step says how sure that ranking is, without touching the engine.

- **Interval** (every option): the comonotone p10/p90 of its window (`comonotone_interval`'s
  rule, read from prefix sums of the paths, `path_prefix`: the window means of the p10 and p90
  paths — exact when all hours err together, otherwise slightly wide, so never more certain
  than the backtest), rescaled onto the option's own emissions
  (the engine's value on the sub-hour lattice stays the centre). `None` when any hour of the
  window has no error model.
- **p_best** (the first `P_BEST_CAP` options only, all with intervals): a seeded Monte Carlo with
  AR(1) errors within a zone (rho from the error table) and independent zones. Each zone's draws
  are kept as prefix sums over its hours (`zone_draw_sums`, memoised by the caller per series and
  hour), so an option's drawn emissions are two row reads and a warm answer draws nothing.
  `tied`: another of those options beats the leader in ≥ 25 % of the draws.
- **risk "p90"**: the same draws' p90 emissions re-rank those top options (pessimistic case).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carbon_optimizer.domain.models import FloatArray, IntArray
from carbon_optimizer.domain.uncertainty import DEFAULT_DRAWS, assess_rows, option_rows, zone_draw_sums

P_BEST_CAP = 5  # options that get p_best (cost grows with zones × hours × draws; see the module doc)


@dataclass(frozen=True, slots=True)
class AnswerUncertainty:
    """Per option (input order) and for the answer."""

    interval_g: tuple[tuple[float, float] | None, ...]  # emissions p10, p90 (g) or None
    p_best: tuple[float | None, ...]  # None outside the top P_BEST_CAP or without an interval
    beats_leader: tuple[float | None, ...]
    order: tuple[int, ...]  # the top options' indices re-ranked by `risk` (identity for p50)
    tied: bool | None  # None: fewer than two top options had an interval
    risk: str


@dataclass(frozen=True, eq=False, slots=True)
class PathPrefix:
    """A zone's `path_prefix`: the arrays, and the same numbers as Python lists for per-option reads.

    Why both: an answer reads a handful of windows, and a Python list lookup plus a float
    subtraction costs a fraction of a NumPy column read (same IEEE arithmetic, same figures).
    """

    band_sums: FloatArray  # (3, hours + 1) prefix sums of the p10/p50/p90 paths (NaN as 0)
    gaps: IntArray  # (hours + 1,) prefix counts of hours without an error model
    columns: list[list[float]]  # band_sums.T as lists: columns[i] = [p10, p50, p90] sums to hour i
    gap_counts: list[int]


def path_prefix(path: FloatArray) -> PathPrefix:
    """Prefix sums (3, hours + 1) of a zone's paths (NaN as 0) and of its hours without a model.

    Any window's band sums, and whether it touches an hour without an error model, are then
    two reads each, whatever the window's length.
    """
    missing = ~np.isfinite(path).all(axis=0)
    band_sums = np.zeros((3, path.shape[1] + 1))
    np.cumsum(np.where(missing, 0.0, path), axis=1, out=band_sums[:, 1:])
    gaps = np.zeros(path.shape[1] + 1, dtype=np.int64)
    np.cumsum(missing, out=gaps[1:])
    band_sums.flags.writeable = False
    gaps.flags.writeable = False
    return PathPrefix(band_sums, gaps, band_sums.T.tolist(), gaps.tolist())


def _values(x: Sequence[int] | Sequence[float] | IntArray | FloatArray) -> list[Any]:
    return x.tolist() if isinstance(x, np.ndarray) else list(x)


def assess_answer(
    paths: Sequence[FloatArray] | FloatArray,
    zone: IntArray | Sequence[int],
    start: IntArray | Sequence[int],
    hours: IntArray | Sequence[int],
    kwh: FloatArray | Sequence[float],
    emissions_g: FloatArray | Sequence[float],
    *,
    rho: float,
    risk: str = "p50",
    cap: int = P_BEST_CAP,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    sums: Callable[[int], FloatArray] | None = None,
    prefix: Callable[[int], PathPrefix] | None = None,
) -> AnswerUncertainty:
    """Intervals for every option; p_best, tie and `risk` order over the first `cap` options.

    `paths[z]` is zone z's (3, hours) p10/p50/p90 on its own hour lattice (zones may differ in
    length; a (zones, 3, hours) array works too); `start`/`hours` index it; options are in the
    engine's rank order (arrays or lists). `sums(z)` gives zone z's `zone_draw_sums` (the caller
    memoises them per series and hour); without it they are drawn here with seed `seed + z`.
    `prefix(z)` gives zone z's `path_prefix` (memoised likewise; computed here without it).
    """
    zones, starts, spans = _values(zone), _values(start), _values(hours)
    kwhs, emissions = _values(kwh), _values(emissions_g)
    count = len(zones)
    prefixes = {z: prefix(z) if prefix is not None else path_prefix(np.asarray(paths[z])) for z in set(zones)}
    ok = [False] * count
    intervals: list[tuple[float, float] | None] = [None] * count
    for k, (z, a, h) in enumerate(zip(zones, starts, spans, strict=True)):
        found = prefixes[z]
        columns, gaps = found.columns, found.gap_counts
        b = a + h
        if a < 0 or h < 1 or b >= len(columns) or gaps[b] != gaps[a]:
            continue  # outside the paths, or touching an hour without an error model
        ok[k] = True
        # Comonotone band: the window means of the p10 and p90 paths, rescaled onto the engine's
        # own emissions (exact on the sub-hour lattice) as the centre.
        at_a, at_b = columns[a], columns[b]
        low, mid, high = at_b[0] - at_a[0], at_b[1] - at_a[1], at_b[2] - at_a[2]
        scale = float(emissions[k]) / mid if mid > 0 else float(kwhs[k]) / h
        intervals[k] = (low * scale, high * scale)
    top = [k for k in range(min(cap, count)) if ok[k]]
    p_best: list[float | None] = [None] * count
    beats: list[float | None] = [None] * count
    order = list(range(count))
    tied: bool | None = None
    if len(top) >= 2:
        draw = sums or (lambda z: zone_draw_sums(np.asarray(paths[z]), draws, rho, seed + z))
        tables = {z: draw(z) for z in sorted({zones[k] for k in top})}
        rows = option_rows(
            tables,
            [zones[k] for k in top],
            [starts[k] for k in top],
            [spans[k] for k in top],
            [kwhs[k] for k in top],
        )
        result = assess_rows(rows, risk)
        for j, k in enumerate(top):
            p_best[k] = float(result.p_best[j])
            beats[k] = float(result.beats_leader[j])
        if risk != "p50":
            ranked = [top[j] for j in result.order.tolist()]
            slots = sorted(top)
            for slot, k in zip(slots, ranked, strict=True):
                order[slot] = k
        tied = result.tied
    return AnswerUncertainty(
        interval_g=tuple(intervals),
        p_best=tuple(p_best),
        beats_leader=tuple(beats),
        order=tuple(order),
        tied=tied,
        risk=risk,
    )
