"""Forecast uncertainty of one answer: intervals for every option, p_best and a tie flag for the top.

Pure NumPy over what the service hands in: per zone, hourly p10/p50/p90 paths on one hour grid
(NaN where an hour has no calibrated error model: replay, a held reading, an extension), and the
options as (zone row, first hour, hours, kWh). Why a step of its own: the engine ranks on the
median; this step says how sure that ranking is, without touching the engine.

- **Interval** (every option): the comonotone p10/p90 of its window (`comonotone_interval`: the
  window means of the p10 and p90 paths — exact when all hours err together, otherwise slightly
  wide, so never more certain than the backtest), rescaled onto the option's own emissions
  (the engine's value on the sub-hour lattice stays the centre). `None` when any hour of the
  window has no error model.
- **p_best** (the first `P_BEST_CAP` options only, all with intervals): `domain/uncertainty.assess`,
  a seeded Monte Carlo with AR(1) errors within a zone (rho from the error table) and independent
  zones; ~7–45 ms for 3–10 zones, so it is capped. `tied`: another of those options beats the
  leader in ≥ 25 % of the draws.
- **risk "p90"**: the same draws' p90 emissions re-rank those top options (pessimistic case).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carbon_optimizer.domain.models import FloatArray, IntArray
from carbon_optimizer.domain.uncertainty import DEFAULT_DRAWS, Options, assess, comonotone_interval

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


def assess_answer(
    paths: FloatArray,
    zone: IntArray,
    start: IntArray,
    hours: IntArray,
    kwh: FloatArray,
    emissions_g: FloatArray,
    *,
    rho: float,
    risk: str = "p50",
    cap: int = P_BEST_CAP,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> AnswerUncertainty:
    """Intervals for every option; p_best, tie and `risk` order over the first `cap` options.

    `paths` is (zones, 3, hours) on one hour grid; `start`/`hours` index it; options are in the
    engine's rank order.
    """
    count = zone.shape[0]
    ok = np.ones(count, dtype=np.bool_)
    for k in range(count):
        window = paths[zone[k], :, start[k] : start[k] + hours[k]]
        ok[k] = bool(np.isfinite(window).all())
    intervals: list[tuple[float, float] | None] = [None] * count
    if ok.any():
        idx = np.flatnonzero(ok)
        filled = np.nan_to_num(paths, nan=0.0)
        band = comonotone_interval(filled, Options(zone[idx], start[idx], hours[idx], kwh[idx]))
        centre = np.where(band[:, 1] > 0, emissions_g[idx] / np.maximum(band[:, 1], 1e-12), 1.0)
        for j, k in enumerate(idx.tolist()):
            intervals[k] = (float(band[j, 0] * centre[j]), float(band[j, 2] * centre[j]))
    top = [k for k in range(min(cap, count)) if ok[k]]
    p_best: list[float | None] = [None] * count
    beats: list[float | None] = [None] * count
    order = list(range(count))
    tied: bool | None = None
    if len(top) >= 2:
        t = np.array(top, dtype=np.int64)
        # Draw only the zones and hours the top options span: the cost is draws × zones × hours.
        used, rows = np.unique(zone[t], return_inverse=True)
        first, last = int(start[t].min()), int((start[t] + hours[t]).max())
        sub = np.nan_to_num(paths[used][:, :, first:last], nan=0.0)
        result = assess(
            sub,
            Options(rows.astype(np.int64), start[t] - first, hours[t], kwh[t]),
            risk=risk,
            draws=draws,
            rho=rho,
            seed=seed,
        )
        for j, k in enumerate(top):
            p_best[k] = float(result.p_best[j])
            beats[k] = float(result.beats_leader[j])
        if risk != "p50":
            ranked = [top[j] for j in result.order.tolist()]
            slots = sorted(top)
            for slot, k in zip(slots, ranked, strict=True):
                order[slot] = k
        tied = result.tied
    elif len(top) == 1:
        p_best[top[0]] = None
    return AnswerUncertainty(
        interval_g=tuple(intervals),
        p_best=tuple(p_best),
        beats_leader=tuple(beats),
        order=tuple(order),
        tied=tied,
        risk=risk,
    )
