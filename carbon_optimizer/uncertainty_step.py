"""The service's uncertainty step: from the labelled series of an answer to intervals and p_best.

Why here (not in the engine): which error model applies to an hour depends on where the hour
came from, which only the series labels say, and our forecaster's band lives with the forecast
source. Per hour of a zone's series, by its label:

| label                         | p10 / p90 from                                                  |
|-------------------------------|-----------------------------------------------------------------|
| `forecast:<model>`            | the forecast's own band (`providers/carbon/forecast.py`)         |
| `<provider>:forecast`         | the lead-time error model (`data/forecast_error_model.json`):    |
|                               | our backtest's errors standing in — the provider publishes none  |
| `<source>:history`            | none needed: measured (p10 = p50 = p90)                          |
| replay, annual, latest, extended | nothing calibrated: the option's interval is null, with a reason |

Then `domain/answer_uncertainty.assess_answer` turns the paths into intervals for every option
and p_best / tied / the `risk` order for the first `P_BEST_CAP` options. Runs once per answer on
data already fetched. Each zone's paths and its Monte Carlo draws (as prefix sums over hours)
are memoised per series object and hour (`MEMO_BYTES`): the chain hands out the same series
while its data and the hour are the same, so a warm answer reads its options' draws by index and
draws nothing; each zone's draws are seeded by its name, so every worker gives the same p_best.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np

from carbon_optimizer.domain.answer_uncertainty import P_BEST_CAP, PathPrefix, assess_answer, path_prefix
from carbon_optimizer.domain.models import CarbonSeries, FloatArray
from carbon_optimizer.domain.uncertainty import DEFAULT_DRAWS, ErrorModel, ar1_normals, zone_draw_sums
from carbon_optimizer.providers.carbon.stack import ForecastBand, backtested_mape_pct

HOUR = timedelta(hours=1)
STALE = "(stale)"
ERROR_MODEL = "error-model"
MEASURED = "measured"
# Memoised paths and draw sums (1,000 draws × a zone's hours × 8 bytes ≈ 0.2–1.4 MB a zone).
MEMO_BYTES = 64 * 1024 * 1024
# AR(1) normals kept across hours, oldest dropped first (0.2–1.5 MB a zone at 1,000 draws).
_NORMALS_BYTES = 48 * 1024 * 1024
_DESCRIBED_PER_ENTRY = 4096  # window descriptions kept per entry (a 7-day window has ≤ 2,016 starts)


@dataclass(frozen=True, slots=True)
class ForecastQuality:
    """An option's reliance on our forecaster: which model, on what history, how far ahead."""

    model: str
    history: str  # "replay" (bundled 2023 history) or "live"
    hours_ahead: tuple[int, int]  # first and last hour ahead of the window's forecast hours
    backtested_mape_pct: float  # backtested p50 MAPE at the window's furthest hour ahead


class CandidateWindows(NamedTuple):
    """The ranked candidates' windows, in the engine's order: one list per field."""

    zones: list[str]
    starts: list[datetime]
    ends: list[datetime]
    kwh: list[float]
    emissions_g: list[float]


@dataclass(frozen=True, slots=True)
class OptionUncertainty:
    """What the answer says about one option's uncertainty."""

    interval_g: tuple[float, float] | None
    method: str | None  # "forecast:profile-ar", "error-model", "measured", joined by "+"
    reason: str | None  # why the interval is null
    p_best: float | None
    beats_leader: float | None
    forecast: ForecastQuality | None


@dataclass(frozen=True, slots=True)
class PlanUncertainty:
    """Per option (in the answer's order) plus the answer-level flags."""

    options: tuple[OptionUncertainty, ...]
    tied: bool | None
    risk: str
    p_best_cap: int
    draws: int
    rho: float


def _base(label: str) -> str:
    return label.removesuffix(STALE)


def _reason(label: str) -> str | None:
    """Why hours with this label get no interval (None: they get one)."""
    base = _base(label)
    if base.startswith("forecast:") or base.endswith(":forecast") or base.endswith(":history"):
        return None
    if base.endswith("(extended)"):
        return "some hours hold the nearest value flat (extended): no error model"
    if base.startswith("fallback:replay"):
        return "bundled replay of 2023 (a same-season curve of another year): no calibrated error model"
    if base.startswith("fallback:annual"):
        return "flat annual average: no hourly error model"
    if base.endswith(":latest"):
        return "latest reading held flat: no error model"
    return f"no error model for {base}"


def _method(label: str) -> str:
    base = _base(label)
    if base.startswith("forecast:"):
        return base
    return ERROR_MODEL if base.endswith(":forecast") else MEASURED


@dataclass(eq=False, slots=True)
class _ZoneEntry:
    """One zone's memoised paths (3, hours on the series' lattice) and, once asked, its draw sums."""

    series: CarbonSeries
    band: ForecastBand | None
    paths: FloatArray
    prefix: PathPrefix  # `path_prefix` of the paths
    sums: FloatArray | None = None
    # (first, last-exclusive index) of a window → (reason, methods, forecast quality)
    described: dict[tuple[int, int], tuple[str | None, str | None, ForecastQuality | None]] = field(
        default_factory=dict
    )


class UncertaintyStep:
    """Builds the per-zone paths of an answer and assesses its options (see the module doc)."""

    def __init__(
        self,
        error_model: ErrorModel,
        bands: Callable[[str], ForecastBand | None] | None = None,
        *,
        cap: int = P_BEST_CAP,
        draws: int = DEFAULT_DRAWS,
        memo_bytes: int = MEMO_BYTES,
    ) -> None:
        self.error_model = error_model
        self._bands = bands
        self.cap = cap
        self.draws = draws
        self.memo_bytes = memo_bytes
        self._memo: OrderedDict[tuple[int, int, datetime], _ZoneEntry] = OrderedDict()
        self._memo_bytes = 0
        self._zone_normals: dict[tuple[str, int, float], FloatArray] = {}
        self._normals_bytes = 0

    def _paths(self, series: CarbonSeries, band: ForecastBand | None, now_floor: datetime) -> FloatArray:
        """(3, hours) p10/p50/p90 of one zone on its own hourly lattice; NaN where no model applies.

        Not hourly: (3, 0), so every window of it reads as outside the paths (no interval).
        """
        if series.step != HOUR:
            return np.full((3, 0), np.nan)
        values = np.asarray(series.values, dtype=np.float64)
        out = np.full((3, values.shape[0]), np.nan)
        for run in series.runs:
            a, b = run.start_index, run.end_index
            if b <= a or _reason(run.label) is not None:
                continue
            v = values[a:b]
            first = series.start + HOUR * a
            method = _method(run.label)
            if method == MEASURED:
                out[:, a:b] = v
            elif method == ERROR_MODEL:
                ahead = int((first - now_floor) // HOUR) + 1
                out[:, a:b] = self.error_model.quantile_paths(v, max(ahead, 1))
            else:
                window = band.window(first, b - a) if band is not None else None
                if window is None:
                    continue  # the band is not this worker's (should not happen): no interval
                rel = window / np.maximum(window[1], 1e-12)
                out[:, a:b] = rel * v
        return out

    def apply(
        self, windows: CandidateWindows, by_zone: Mapping[str, CarbonSeries], now: datetime, risk: str = "p50"
    ) -> tuple[tuple[int, ...], PlanUncertainty]:
        """The answer's order (indices into `windows`) and each option's uncertainty in that order.

        The order re-ranks the top options when `risk` is not p50. Takes the ranked candidates'
        windows, not options: the service makes each option once, in its final rank and with its
        margin to the final best (a frozen option rebuilt for a new rank or margin cost ~4 µs).
        """
        now_floor = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        zones = sorted(set(windows.zones))
        row = {z: i for i, z in enumerate(zones)}
        entries = [self._entry(by_zone[z], now_floor) for z in zones]
        firsts = [by_zone[z].start for z in zones]
        # Plain lists: an answer has a handful of options, and assess_answer reads them one by one.
        zone: list[int] = []
        start: list[int] = []
        span: list[int] = []
        for name, begin, end in zip(windows.zones, windows.starts, windows.ends, strict=True):
            z = row[name]
            first = firsts[z]
            a = (begin - first) // HOUR
            zone.append(z)
            start.append(a)
            span.append(max(-(-(end - first) // HOUR) - a, 1))
        rho = self.error_model.hourly_correlation
        draws = self.draws
        result = assess_answer(
            [e.paths for e in entries],
            zone,
            start,
            span,
            windows.kwh,
            windows.emissions_g,
            rho=rho,
            risk=risk,
            cap=self.cap,
            draws=draws,
            sums=lambda z: self._sums(entries[z], draws, rho),
            prefix=lambda z: entries[z].prefix,
        )
        per: list[OptionUncertainty] = []
        for k, (begin, end) in enumerate(zip(windows.starts, windows.ends, strict=True)):
            reason, methods, forecast = self._describe(entries[zone[k]], begin, end, now_floor)
            if reason is None and result.interval_g[k] is None:
                reason = "data not on an hourly lattice (or the forecast band is missing): no interval"
                methods = None
            per.append(
                OptionUncertainty(
                    interval_g=result.interval_g[k],
                    method=methods,
                    reason=reason,
                    p_best=result.p_best[k],
                    beats_leader=result.beats_leader[k],
                    forecast=forecast,
                )
            )
        order = result.order
        plan = PlanUncertainty(
            options=tuple(per[k] for k in order),
            tied=result.tied,
            risk=risk,
            p_best_cap=self.cap,
            draws=self.draws,
            rho=rho,
        )
        return order, plan

    def _entry(self, series: CarbonSeries, now_floor: datetime) -> _ZoneEntry:
        """The zone's paths on its own lattice (and later its draws), memoised per series and hour.

        Keyed on the identity of the series (the chain hands out the same object while its data
        and the hour are the same; the entry keeps it alive so the id stays its own), of the
        forecast band, and the current hour (the error model's lead times move with it).
        """
        band = self._bands(series.zone) if self._bands is not None else None
        key = (id(series), id(band), now_floor)
        memo = self._memo
        entry = memo.get(key)
        if entry is not None and entry.series is series and entry.band is band:
            memo.move_to_end(key)
            return entry
        paths = self._paths(series, band, now_floor)
        paths.flags.writeable = False
        entry = _ZoneEntry(series, band, paths, path_prefix(paths))
        memo[key] = entry
        self._memo_bytes += 3 * paths.nbytes
        self._trim()
        return entry

    def _describe(
        self, entry: _ZoneEntry, begin: datetime, end: datetime, now_floor: datetime
    ) -> tuple[str | None, str | None, ForecastQuality | None]:
        """(reason for no interval, methods, forecast quality) of an option's window, memoised.

        A function of the series' labels over the window's hours and the current hour, which
        the entry's key fixes: options of many requests share the same few windows.
        """
        series = entry.series
        key = (series.index_of(begin), -((series.start - end) // series.step))
        found = entry.described.get(key)
        if found is None:
            labels = series.sources_between(begin, end)
            reason = next((r for r in (_reason(label) for label in labels) if r is not None), None)
            methods = "+".join(dict.fromkeys(_method(label) for label in labels)) if reason is None else None
            found = (reason, methods, self._quality(series, entry.band, begin, end, now_floor))
            if len(entry.described) < _DESCRIBED_PER_ENTRY:
                entry.described[key] = found
        return found

    def _sums(self, entry: _ZoneEntry, draws: int, rho: float) -> FloatArray:
        """The zone's draw sums, drawn once per entry with the zone's own seed (stable everywhere)."""
        if entry.sums is None or entry.sums.shape[1] != draws:
            hours = entry.paths.shape[1]
            entry.sums = zone_draw_sums(
                np.asarray(entry.paths),
                draws,
                rho,
                normals=self._normals(entry.series.zone, hours, draws, rho),
            )
            self._memo_bytes += entry.sums.nbytes
            self._trim()
        return entry.sums

    def _normals(self, zone: str, hours: int, draws: int, rho: float) -> FloatArray:
        """The zone's AR(1) normals, kept across hours (data-free: seeded by the zone's name).

        Drawn in whole days (at least `hours`) so windows of other lengths reuse them; every
        worker draws the same ones, so p_best does not depend on which worker answered.
        """
        key = (zone, draws, rho)
        found = self._zone_normals.get(key)
        if found is None or found.shape[0] < hours:
            length = -(-hours // 24) * 24
            rng = np.random.default_rng(zlib.crc32(zone.encode()))
            found = ar1_normals(rng, draws, 1, length, rho)[:, :, 0]
            found.flags.writeable = False
            previous = self._zone_normals.pop(key, None)
            self._normals_bytes += found.nbytes - (previous.nbytes if previous is not None else 0)
            self._zone_normals[key] = found
            while self._normals_bytes > _NORMALS_BYTES and len(self._zone_normals) > 1:
                self._normals_bytes -= self._zone_normals.pop(next(iter(self._zone_normals))).nbytes
        return found

    def _trim(self) -> None:
        while self._memo_bytes > self.memo_bytes and len(self._memo) > 1:
            _, old = self._memo.popitem(last=False)
            self._memo_bytes -= 3 * old.paths.nbytes + (old.sums.nbytes if old.sums is not None else 0)

    def _quality(
        self,
        series: CarbonSeries,
        band: ForecastBand | None,
        begin: datetime,
        end: datetime,
        now_floor: datetime,
    ) -> ForecastQuality | None:
        """Data quality of the window's reliance on our forecaster (None when it does not)."""
        first_i, last_i = series.index_of(begin), -(-(end - series.start) // series.step)
        for run in series.runs:
            if not _base(run.label).startswith("forecast:"):
                continue
            a, b = max(run.start_index, first_i), min(run.end_index, last_i)
            if b <= a:
                continue
            first = series.start + series.step * a
            last = series.start + series.step * (b - 1)
            ahead = (int((first - now_floor) // HOUR) + 1, int((last - now_floor) // HOUR) + 1)
            history = band.history if band is not None else "replay"
            return ForecastQuality(
                model=_base(run.label).removeprefix("forecast:"),
                history=history,
                hours_ahead=ahead,
                backtested_mape_pct=backtested_mape_pct(ahead[1], history),
            )
        return None
