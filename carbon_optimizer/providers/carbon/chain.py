"""The per-zone priority chain of carbon sources, ending in the bundled data.

For a requested [start, end) this builds one hourly-aligned series (step taken from the first
live data, hourly by default) whose every point is labelled with where it came from:

| label                                   | meaning                                                    |
|-----------------------------------------|------------------------------------------------------------|
| `<source>:history`                      | measured past (`/history`, or past-range further back)     |
| `<source>:forecast`                     | the source's forecast (from the current hour on)           |
| `<source>:latest`                       | latest reading held flat (only when no forecast is allowed)|
| `<any of the above>(stale)`             | last good cached value, served because upstream failed     |
| `fallback:replay-2023`, `fallback:annual-<year>` | the bundled data                                  |
| `<live label>(extended)`                | nearest live value held flat (bundled could not answer)    |

Sources are asked in the zone's priority order (`routes`: zone → source names, `"*"` for every
other zone; default: every source in the order given), only those that offer the requested
`signal` and `covers(zone)`. Each paints the points still empty — per source, before the current
hour history > past-range > forecast > latest, from the current hour on forecast > latest >
history — and the next source is asked only while points are missing, so a healthy first source
costs the others nothing. The bundled data fills whatever is still missing (beyond every horizon,
null hours, every failure). `carbon_source` of an option therefore names each source it used.

Why this shape: the engine must never see NaN or an exception caused by a data outage. Each
source's live part runs under one deadline (`live_deadline_s`, a little longer than the adapter's
own so the adapter records its verdict first), and only after it has finished — never from inside
a Redis or network wait — is the bundled data asked, so any upstream or Redis failure ends in
fallback data and an honest warning, not an error. `UnknownZone` is the one error that passes
through (and `DataUnavailable` when no source at all has anything).

Painted answers are memoised (the fresh-answer path asks 20–150 zones per request): offline-only
zones by (zone, hours, signal); routed zones also by the current hour and the identities of the
fetched objects (the two-tier cache returns the same object until it refreshes), so the sources
are still asked every time — freshness stays the cache's — but an unchanged answer is not
repainted. Answers painted around a failure are never kept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from carbon_optimizer.domain.models import CarbonSeries, FloatArray, SourceRun
from carbon_optimizer.errors import (
    CarbonOptimizerError,
    DataUnavailable,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    UnknownZone,
)
from carbon_optimizer.metrics import CACHE_EVENTS, DATA_AGE, FALLBACKS, child
from carbon_optimizer.providers.budget import UpstreamBudgetExhausted
from carbon_optimizer.providers.carbon.base import (
    HOUR,
    BundledSeries,
    CarbonSource,
    Fetched,
    SeriesKind,
    SeriesRequest,
    SeriesResult,
    Signal,
    validate_zone,
)
from carbon_optimizer.providers.tiered import Lease, join_leases

log = logging.getLogger(__name__)

EXTENDED_SUFFIX = "(extended)"
# Offline-only answers memoised per (zone, first hour, hour count, signal); bounded by entries.
_OFFLINE_MEMO_SIZE = 4096
_MemoKey = tuple[str, int, int, Signal]
# Answers of routed zones memoised per key too, valid while the current hour and every fetched
# object (by identity) are the same; bounded by entries.
_LIVE_MEMO_SIZE = 4096
# Whole request shapes (sorted zones, hours, signal) memoised while their leases hold.
_SHAPE_MEMO_SIZE = 256
_ShapeKey = tuple[tuple[str, ...], int, int, Signal]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
IntArray = npt.NDArray[np.int64]


# What one source gave: results by kind, failures by kind, and every (request, object) fetched.
_Pairs = tuple[tuple[SeriesRequest, Fetched], ...]
_Step = tuple[dict[SeriesKind, Fetched], dict[SeriesKind, BaseException], _Pairs]


@dataclass(eq=False, slots=True)
class _ShapeMemo:
    """One request shape's answers (zones × hours × signal) and what keeps them valid.

    Valid within the hour it was made in while every lease holds (the in-process tiers still hold
    the very objects the answers were painted from); `fallbacks`, `peeks` and `aged` replay the
    metrics the per-zone walk would have moved.
    """

    now_floor: datetime
    leases: tuple[Lease, ...]
    results: tuple[SeriesResult, ...]
    fallbacks: tuple[tuple[str, int], ...]  # label → answers that used it
    aged: tuple[tuple[str, tuple[Fetched, ...]], ...]  # zone → fetched objects (data-age gauge)
    aged_at: datetime

    def holds(self, now: datetime) -> bool:
        if not self.now_floor <= now < self.now_floor + HOUR:
            return False
        return all(lease.holds() for lease in self.leases)


@dataclass(frozen=True, eq=False, slots=True)
class _LiveMemo:
    """A routed zone's answer and what it was painted from (the fetched objects, kept alive)."""

    now_floor: datetime
    trace: tuple[_Pairs, ...]  # per source consumed, in route order
    result: SeriesResult
    fallbacks: tuple[str, ...]


def floor_to(when: datetime, step: timedelta) -> datetime:
    """Round down onto the UTC lattice of `step` (hours for hourly data)."""
    when = when.astimezone(UTC)
    return when - (when - _EPOCH) % step


def ceil_to(when: datetime, step: timedelta) -> datetime:
    """Round up onto the UTC lattice of `step`."""
    floored = floor_to(when, step)
    return floored if floored == when.astimezone(UTC) else floored + step


class _Canvas:
    """The output lattice being painted, source by source, where it is still empty."""

    def __init__(self, start: datetime, step: timedelta, count: int) -> None:
        self.start, self.step, self.count = start, step, count
        self.values: FloatArray = np.full(count, np.nan, dtype=np.float64)
        self.label_ids: IntArray = np.full(count, -1, dtype=np.int64)
        self.labels: list[str] = []

    def slot_mask(
        self, before: datetime | None = None, since: datetime | None = None
    ) -> npt.NDArray[np.bool_]:
        """Slots starting before `before` / at or after `since`."""
        first = 0 if since is None else max(0, min(self.count, _ceil_div(since - self.start, self.step)))
        last = (
            self.count
            if before is None
            else max(0, min(self.count, _ceil_div(before - self.start, self.step)))
        )
        mask = np.zeros(self.count, dtype=np.bool_)
        mask[first:last] = True
        return mask

    def paint(self, series: CarbonSeries, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Fill empty (NaN) slots from `series` (piecewise constant)."""
        values, label_ids = _sample(series, self.start, self.step, self.count, self.labels)
        fill = np.isnan(self.values) & ~np.isnan(values)
        if mask is not None:
            fill &= mask
        self.values[fill] = values[fill]
        self.label_ids[fill] = label_ids[fill]

    def paint_flat(self, value: float, label: str, mask: npt.NDArray[np.bool_]) -> None:
        """Fill empty slots under `mask` with one value."""
        fill = np.isnan(self.values) & mask
        self.values[fill] = value
        self.label_ids[fill] = _label_id(self.labels, label)

    @property
    def missing(self) -> int:
        """Number of slots still empty."""
        return int(np.isnan(self.values).sum())

    def extend_nearest(self) -> None:
        """Fill remaining gaps from the nearest painted slot (forward, then backward), labelled."""
        filled = np.flatnonzero(~np.isnan(self.values))
        if filled.size == 0:
            return
        positions = np.arange(self.count)
        # index of the nearest filled slot at or before each position (else the first filled one)
        before = np.maximum.accumulate(np.where(~np.isnan(self.values), positions, -1))
        source = np.where(before >= 0, before, filled[0])
        gaps = np.isnan(self.values)
        extended = {
            lid: _label_id(self.labels, self.labels[lid] + EXTENDED_SUFFIX)
            for lid in set(self.label_ids[source[gaps]].tolist())
        }
        self.values[gaps] = self.values[source[gaps]]
        self.label_ids[gaps] = [extended[lid] for lid in self.label_ids[source[gaps]].tolist()]

    def series(self, zone: str, emission_factor_type: str) -> CarbonSeries:
        """The finished series; runs compress consecutive equal labels."""
        runs: list[SourceRun] = []
        ids = self.label_ids
        edges = np.flatnonzero(np.diff(ids)) + 1
        bounds = [0, *edges.tolist(), self.count]
        for a, b in itertools.pairwise(bounds):
            if b > a:
                runs.append(SourceRun(a, b, self.labels[int(ids[a])]))
        return CarbonSeries(
            zone=zone,
            start=self.start,
            step=self.step,
            values=self.values,
            runs=tuple(runs),
            emission_factor_type=emission_factor_type,
        )


def _ceil_div(a: timedelta, b: timedelta) -> int:
    return -((-a) // b)


def _label_id(labels: list[str], label: str) -> int:
    if label not in labels:
        labels.append(label)
    return labels.index(label)


def _point_labels(series: CarbonSeries, labels: list[str]) -> IntArray:
    ids = np.full(len(series.values), -1, dtype=np.int64)
    for run in series.runs:
        ids[run.start_index : run.end_index] = _label_id(labels, run.label)
    return ids


def _sample(
    series: CarbonSeries, start: datetime, step: timedelta, count: int, labels: list[str]
) -> tuple[FloatArray, IntArray]:
    """Values and label ids of `series` on the output lattice (NaN outside the series).

    Coarser or equal source steps are looked up; a finer source is averaged over each output
    slot (any NaN sub-point makes the slot NaN so that it gets filled from the next source).
    """
    offset_s = (start - series.start).total_seconds()
    step_s, src_step_s = step.total_seconds(), series.step.total_seconds()
    if src_step_s == step_s and offset_s % step_s == 0:
        return _sample_aligned(series, int(offset_s // step_s), count, labels)
    return _sample_general(series, offset_s, step_s, src_step_s, count, labels)


def _sample_aligned(
    series: CarbonSeries, offset: int, count: int, labels: list[str]
) -> tuple[FloatArray, IntArray]:
    """`_sample` when the source is on the output lattice itself: slot i is source point offset + i.

    The usual case (hourly sources painted onto an hourly canvas), and the one a zone's first
    answer of an hour pays for every source: one slice, and labels for the runs inside it only,
    instead of a label array over the whole source and a gather (`_sample_general` gives the
    same values and labels: `tests/providers/carbon/test_chain_sample.py`).
    """
    out = np.full(count, np.nan, dtype=np.float64)
    out_labels = np.full(count, -1, dtype=np.int64)
    first, last = max(0, -offset), min(count, len(series.values) - offset)
    if last > first:
        out[first:last] = np.asarray(series.values, dtype=np.float64)[first + offset : last + offset]
        for run in series.runs:
            a, b = max(run.start_index - offset, first), min(run.end_index - offset, last)
            if b > a:
                out_labels[a:b] = _label_id(labels, run.label)
    return out, out_labels


def _sample_general(
    series: CarbonSeries, offset_s: float, step_s: float, src_step_s: float, count: int, labels: list[str]
) -> tuple[FloatArray, IntArray]:
    """`_sample` for any source step: looked up (coarser or equal) or averaged (finer)."""
    src_values = np.asarray(series.values, dtype=np.float64)
    src_labels = _point_labels(series, labels)
    n = len(src_values)
    out = np.full(count, np.nan, dtype=np.float64)
    out_labels = np.full(count, -1, dtype=np.int64)
    if n == 0 or count == 0:
        return out, out_labels
    slot_starts = offset_s + step_s * np.arange(count)
    if src_step_s >= step_s:
        idx = np.floor(slot_starts / src_step_s).astype(np.int64)
        ok = (idx >= 0) & (idx < n)
        out[ok] = src_values[idx[ok]]
        out_labels[ok] = src_labels[idx[ok]]
        return out, out_labels
    per_slot = max(1, round(step_s / src_step_s))
    first = np.floor(slot_starts / src_step_s).astype(np.int64)
    sub = first[:, None] + np.arange(per_slot)[None, :]
    ok = (sub >= 0).all(axis=1) & (sub < n).all(axis=1)
    if ok.any():
        out[ok] = src_values[sub[ok]].mean(axis=1)
        out_labels[ok] = src_labels[first[ok]]
    return out, out_labels


class CarbonChain:
    """`CarbonIntensityProvider` over live sources in per-zone priority order, then bundled data."""

    name = "chain"

    def __init__(
        self,
        sources: CarbonSource | Sequence[CarbonSource],
        offline: BundledSeries,
        *,
        live_deadline_s: float,
        routes: Mapping[str, Sequence[str]] | None = None,
        latest_extension: timedelta = timedelta(hours=24),
        history_span: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sources: tuple[CarbonSource, ...] = (
            tuple(sources) if isinstance(sources, Sequence) else (sources,)
        )
        self.offline = offline
        by_name = {source.name: source for source in self.sources}
        self._routes: dict[str, tuple[CarbonSource, ...]] = {
            zone: tuple(by_name[n] for n in names if n in by_name) for zone, names in (routes or {}).items()
        }
        self._default_route = self._routes.pop("*", self.sources)
        self._live_deadline_s = live_deadline_s
        self._latest_extension = latest_extension
        self._history_span = history_span
        self._clock: Callable[[], datetime] = clock or _utc_now
        self._issued: dict[str, datetime] = {}  # zone -> issue time of the newest live data served
        self._age_set: dict[str, tuple[datetime, datetime]] = {}  # zone -> (issued, when the gauge was set)
        # Zones no live source answers get a pure function of (zone, hours, signal) from the bundled
        # data: memoise the painted answer and the fallback labels it counted (see `series_cached`).
        self._offline_memo: OrderedDict[_MemoKey, tuple[SeriesResult, tuple[str, ...]]] = OrderedDict()
        # Zones with a live route: the painted answer is a pure function of the fetched objects,
        # the current hour and the bundled data, so it is memoised against their identities.
        self._live_memo: OrderedDict[_MemoKey, _LiveMemo] = OrderedDict()
        self._painting: dict[tuple[object, ...], asyncio.Future[SeriesResult]] = {}
        # Whole requests' lookups (see `series_many`): valid while the tiers' leases hold.
        self._shape_memo: OrderedDict[_ShapeKey, _ShapeMemo] = OrderedDict()

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.sources)
        return f"CarbonChain(sources=[{names}], offline={type(self.offline).__name__})"

    def route(self, zone: str, signal: Signal = Signal.AVERAGE) -> tuple[CarbonSource, ...]:
        """The live sources asked for `zone`, in priority order, that offer `signal`."""
        chain = self._routes.get(zone, self._default_route)
        return tuple(s for s in chain if signal in s.signals and s.covers(zone))

    def signals(self, zone: str) -> frozenset[Signal]:
        """Signals answerable for `zone`: the bundled data is average; live sources may add marginal."""
        found = {Signal.AVERAGE}
        for source in self._routes.get(zone, self._default_route):
            if source.covers(zone):
                found |= source.signals
        return frozenset(found)

    async def clear_negative(self, zone: str) -> dict[str, int]:
        """Clear `zone`'s negative markers in every live source's cache: source name → markers deleted.

        The operators' lever after an upstream blip or a fixed token (see docs/edge.md); sources
        without a cache (none today) are skipped. -1 means the shared store could not be swept.
        """
        validate_zone(zone)
        cleared: dict[str, int] = {}
        for source in self.sources:
            clear = getattr(source, "clear_zone_negatives", None)
            if clear is not None:
                cleared[source.name] = await clear(zone)
        return cleared

    def data_age_s(self) -> dict[str, float]:
        """Age in seconds of the newest live data served per zone (for /health)."""
        now = self._clock()
        return {
            zone: round((now - issued).total_seconds(), 1) for zone, issued in sorted(self._issued.items())
        }

    @staticmethod
    def _memo_key(zone: str, start: datetime, end: datetime, signal: Signal) -> _MemoKey:
        first = (start - _EPOCH) // HOUR  # exact integer floor
        return (zone, first, -((_EPOCH - end) // HOUR) - first, signal)

    def series_cached(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult | None:
        """The answer `series` would give, synchronously, when it is already in memory; else None.

        Why: the hot path asks for 20-150 zones per request; for zones no live source routes (the
        bundled data alone answers) the painted series is a pure function of the zone, the hours
        and the signal, so a hit needs no task, no canvas and no await. Zones with a live route
        hit only when their memoised answer is this hour's and every source it consumed still
        holds the very same objects in its in-process tier (`peek`): their freshness stays the
        two-tier cache's, and anything else takes `series`.
        """
        if end <= start:
            return None
        route = self.route(zone, signal)
        key = self._memo_key(zone, start, end, signal)
        if route:
            return self._live_cached(key, route, zone)
        return self._offline_cached(key)

    def series_many(
        self, zones: Sequence[str], start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> list[SeriesResult | None]:
        """`series_cached` for every zone in one pass: each answer, or None where `series` is needed.

        A bundled-only zone (no live route) never needs it: a new window of one is painted here,
        synchronously (`_paint_bundled`), unless that fails, which `series` then raises.

        Why: a request asks 20–150 zones, each through route → memo key → live memo → the sources'
        `peek` → the tier, although every answer is an in-process memo hit. When every zone hits
        and every source consumed can say how long its answer stays the same (`peek_lease`), the
        answers are kept for this request shape (zones, hours, signal) with one lease per tier:
        a later request of the same shape within the hour checks those leases, not the zones. Any
        change in a tier (a refresh, an eviction, a failure's stale value), the end of a local
        entry's life or a new hour ends it; a shape with any miss is not kept. Metrics move as the
        per-zone walk moves them (fallback counts per answer, local hits per peek, the data-age
        gauge at its one-second resolution).
        """
        if end <= start:
            return [None] * len(zones)
        first = (start - _EPOCH) // HOUR
        key: _ShapeKey = (tuple(zones), first, -((_EPOCH - end) // HOUR) - first, signal)
        now = self._clock()
        memo = self._shape_memo.get(key)
        if memo is not None:
            if memo.holds(now):
                return self._serve_shape(memo, now)
            del self._shape_memo[key]
        results: list[SeriesResult | None] = []
        leases: list[Lease] = []
        leased = True
        now_floor = floor_to(now, HOUR)
        for zone in zones:
            route = self.route(zone, signal)
            zone_key = (zone, key[1], key[2], signal)
            if not route:
                hit = self._offline_cached(zone_key)
                if hit is None:
                    hit = self._bundled_or_none(zone, start, end, signal, zone_key)
                results.append(hit)
                continue
            result, zone_leases = self._live_leased(zone_key, route, zone, now, now_floor)
            results.append(result)
            if zone_leases is None:
                leased = False
            else:
                leases.extend(zone_leases)
        if leased and None not in results:
            self._remember_shape(key, zones, signal, now, results, leases)
        return results

    def _bundled_or_none(
        self, zone: str, start: datetime, end: datetime, signal: Signal, key: _MemoKey
    ) -> SeriesResult | None:
        """A route-less zone's new window painted now (`_paint_bundled`); None if that fails.

        A failure (an unknown zone, no data) is left to `series`, which raises it per zone where
        the caller handles it.
        """
        try:
            return self._paint_bundled(zone, start, end, signal, key)
        except (CarbonOptimizerError, ValueError):
            return None

    def _remember_shape(
        self,
        key: _ShapeKey,
        zones: Sequence[str],
        signal: Signal,
        now: datetime,
        results: list[SeriesResult | None],
        leases: list[Lease],
    ) -> None:
        fallbacks: dict[str, int] = {}
        aged: list[tuple[str, tuple[Fetched, ...]]] = []
        for zone, result in zip(zones, results, strict=True):
            assert result is not None
            zone_key = (zone, key[1], key[2], signal)
            offline = self._offline_memo.get(zone_key)
            live = self._live_memo.get(zone_key)
            if offline is not None and offline[0] is result:
                labels = offline[1]
            elif live is not None and live.result is result:
                labels = live.fallbacks
                aged.append((zone, tuple(f for pairs in live.trace for _, f in pairs)))
            else:
                return  # not an answer of either memo: nothing to keep
            for label in labels:
                fallbacks[label] = fallbacks.get(label, 0) + 1
        done = tuple(r for r in results if r is not None)
        self._shape_memo[key] = _ShapeMemo(
            floor_to(now, HOUR), join_leases(leases), done, tuple(fallbacks.items()), tuple(aged), now
        )
        if len(self._shape_memo) > _SHAPE_MEMO_SIZE:
            self._shape_memo.popitem(last=False)

    def _serve_shape(self, memo: _ShapeMemo, now: datetime) -> list[SeriesResult | None]:
        """A shape-memo hit: the answers, with the metrics the per-zone walk would have moved."""
        for label, count in memo.fallbacks:
            child(FALLBACKS, "carbon", label).inc(count)
        for lease in memo.leases:
            child(CACHE_EVENTS, lease.name, "local", "hit").inc(lease.peeks)
        if (now - memo.aged_at).total_seconds() >= 1.0 or now < memo.aged_at:
            memo.aged_at = now
            for zone, fetched in memo.aged:
                self._note_age(zone, fetched, now)
        return list(memo.results)

    def _live_leased(
        self, key: _MemoKey, route: tuple[CarbonSource, ...], zone: str, now: datetime, now_floor: datetime
    ) -> tuple[SeriesResult | None, list[Lease] | None]:
        """The routed zone's memoised answer if its sources' in-process tiers still hold its objects.

        (answer, leases) on a hit, leases None when a source can only `peek`; (None, None) on a
        miss. Each source is asked once per fetched object, by `peek_lease` where it has one
        (the same answer and local-hit count as `peek`), so both lanes count alike.
        """
        memo = self._live_memo.get(key)
        if memo is None or len(memo.trace) > len(route) or memo.now_floor != now_floor:
            return None, None
        leases: list[Lease] | None = []
        for source, pairs in zip(route, memo.trace, strict=False):
            peek_lease = getattr(source, "peek_lease", None)
            if peek_lease is None:
                peek = getattr(source, "peek", None)
                if peek is None:
                    return None, None
                leases = None
                for request, fetched in pairs:
                    if peek(request) is not fetched:
                        return None, None
                continue
            for request, fetched in pairs:
                got = peek_lease(request)
                if got is None or got[0] is not fetched:
                    return None, None
                if leases is not None:
                    leases.append(got[1])
        return self._serve_memo(key, memo, zone, now), leases

    def _offline_cached(self, key: _MemoKey) -> SeriesResult | None:
        hit = self._offline_memo.get(key)
        if hit is None:
            return None
        result, fallbacks = hit
        for label in fallbacks:  # the metric counts answers that used fallback data, hits included
            child(FALLBACKS, "carbon", label).inc()
        return result

    async def series(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult:
        """Series covering [start, end) on the hour lattice, every point labelled, plus warnings."""
        validate_zone(zone)
        if end <= start:
            raise ValueError("series needs start < end")
        route = self.route(zone, signal)
        key = self._memo_key(zone, start, end, signal)
        if not route:
            cached = self._offline_cached(key)
            # Bundled data alone: painted synchronously (no task, no flight to share: nothing
            # can interleave with it, and the next request finds it in the offline memo).
            return cached if cached is not None else self._paint_bundled(zone, start, end, signal, key)
        # One painting per answer at a time: concurrent requests that all miss (a new hour at c=16)
        # share it instead of each painting the same canvas; a caller giving up does not cancel it.
        flight_key = (*key, floor_to(self._clock(), HOUR))
        flight = self._painting.get(flight_key)
        if flight is None:
            flight = asyncio.ensure_future(self._paint(zone, start, end, signal, route, key))
            self._painting[flight_key] = flight
            flight.add_done_callback(lambda done: self._flight_done(flight_key, done))
        return await asyncio.shield(flight)

    def _flight_done(self, flight_key: tuple[object, ...], done: asyncio.Future[SeriesResult]) -> None:
        self._painting.pop(flight_key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have given up

    async def _paint(
        self,
        zone: str,
        start: datetime,
        end: datetime,
        signal: Signal,
        route: tuple[CarbonSource, ...],
        key: _MemoKey,
    ) -> SeriesResult:
        """The answer of `series`: memo check against fresh fetches, else a freshly painted canvas."""
        now = self._clock()
        now_floor = floor_to(now, HOUR)
        steps: list[_Step] = []
        memo = self._live_memo.get(key)  # only routed zones reach `_paint` (bundled: `_paint_bundled`)
        if (
            memo is not None
            and memo.now_floor == now_floor
            and await self._replay_memo(memo, route, zone, start, end, now_floor, signal, steps)
        ):
            return self._serve_memo(key, memo, zone, now)
        warnings: list[str] = []
        canvas: _Canvas | None = None
        all_fetched: list[Fetched] = []
        all_errors: list[BaseException] = []
        trace: list[_Pairs] = []
        for i, source in enumerate(route):
            if i < len(steps):  # already fetched while checking the memo: never ask a source twice
                fetched, errors, refs = steps[i]
            else:
                fetched, errors, refs = await self._fetch_live(source, zone, start, end, now_floor, signal)
            trace.append(refs)
            all_fetched.extend(fetched.values())
            all_errors.extend(errors.values())
            if canvas is None and fetched:
                canvas = _new_canvas(fetched, start, end)
            if canvas is not None:
                self._paint_source(source.name, zone, canvas, fetched, now_floor, warnings)
            for kind, exc in errors.items():
                warnings.append(_describe_failure(source.name, zone, kind, exc))
            stale = [f.fetched_at for f in fetched.values() if f.stale]
            if stale:
                since = f"{min(stale):%Y-%m-%dT%H:%MZ}"
                warnings.append(f"{source.name} unavailable for {zone}; used cached data from {since}")
            if canvas is not None and not canvas.missing:
                break
        return self._finish(
            zone, start, end, signal, key, now, canvas, warnings, all_fetched, all_errors, trace
        )

    def _paint_bundled(
        self, zone: str, start: datetime, end: datetime, signal: Signal, key: _MemoKey
    ) -> SeriesResult:
        """A zone no live source routes, painted from the bundled data alone, synchronously.

        Why not `_paint`'s task: the bundled data is in memory (`BundledSeries.series_sync`), so
        the task, its shield and the loop turns they take were most of a new window's cost for
        such a zone (~70–100 µs against ~45 µs of painting).
        """
        return self._finish(zone, start, end, signal, key, self._clock(), None, [], [], [], [])

    def _finish(
        self,
        zone: str,
        start: datetime,
        end: datetime,
        signal: Signal,
        key: _MemoKey,
        now: datetime,
        canvas: _Canvas | None,
        warnings: list[str],
        all_fetched: list[Fetched],
        all_errors: list[BaseException],
        trace: list[_Pairs],
    ) -> SeriesResult:
        """The rest of a painting once the live sources are done: bundled fill, checks, memo.

        `now`: the clock when the painting began (its hour is the live memo's, whatever the
        sources' waits took).
        """
        fallbacks: tuple[str, ...] = ()
        if canvas is None:
            canvas = _new_canvas({}, start, end)
        if canvas.missing:
            if signal is not Signal.AVERAGE:
                warnings.append(f"no {signal.value} data for some hours of {zone}; used average bundled data")
            fallbacks = self._paint_offline(zone, canvas, bool(all_fetched), all_errors)
        if canvas.missing:
            canvas.extend_nearest()
        if canvas.missing:
            raise DataUnavailable(f"no carbon intensity data for zone {zone}")

        self._note_age(zone, all_fetched, now)
        emission_factor_type = next((f.series.emission_factor_type for f in all_fetched), "lifecycle")
        result = SeriesResult(canvas.series(zone, emission_factor_type), tuple(dict.fromkeys(warnings)))
        if not trace:  # no live source asked: the bundled answer, a function of zone, hours, signal
            # Shared between requests from now on: make it read-only so no caller can edit it.
            np.asarray(result.series.values).flags.writeable = False
            offline_memo = self._offline_memo
            offline_memo[key] = (result, fallbacks)
            if len(offline_memo) > _OFFLINE_MEMO_SIZE:
                offline_memo.popitem(last=False)
        elif not all_errors:
            # Errors depend on time and luck, not on the fetched data: only clean answers are kept.
            np.asarray(result.series.values).flags.writeable = False
            self._live_memo[key] = _LiveMemo(floor_to(now, HOUR), tuple(trace), result, fallbacks)
            self._live_memo.move_to_end(key)
            if len(self._live_memo) > _LIVE_MEMO_SIZE:
                self._live_memo.popitem(last=False)
        return result

    def _live_cached(self, key: _MemoKey, route: tuple[CarbonSource, ...], zone: str) -> SeriesResult | None:
        """The routed zone's memoised answer if its sources' in-process tiers still hold its objects."""
        now = self._clock()
        return self._live_leased(key, route, zone, now, floor_to(now, HOUR))[0]

    def _serve_memo(self, key: _MemoKey, memo: _LiveMemo, zone: str, now: datetime) -> SeriesResult:
        """A live-memo hit, by either lane: data age and fallback counts as a painted answer's."""
        self._note_age(zone, [f for pairs in memo.trace for _, f in pairs], now)
        for label in memo.fallbacks:
            child(FALLBACKS, "carbon", label).inc()
        self._live_memo.move_to_end(key)
        return memo.result

    async def _replay_memo(
        self,
        memo: _LiveMemo,
        route: tuple[CarbonSource, ...],
        zone: str,
        start: datetime,
        end: datetime,
        now_floor: datetime,
        signal: Signal,
        steps: list[_Step],
    ) -> bool:
        """Fetch the sources the memoised answer consumed, in order; True if each gave the same objects.

        The sources are asked exactly as the full path would ask them (the same order, stopping
        at the first difference), and what was fetched is left in `steps` for that path, so a
        miss costs no second upstream or cache call.
        """
        if len(memo.trace) > len(route):
            return False
        for source, expected in zip(route, memo.trace, strict=False):
            step = await self._fetch_live(source, zone, start, end, now_floor, signal)
            steps.append(step)
            fetched, errors, refs = step
            if (
                errors
                or len(refs) != len(expected)
                or any(a[1] is not b[1] for a, b in zip(refs, expected, strict=True))
            ):
                return False
        return True

    # ----- live part -----

    def _paint_source(
        self,
        name: str,
        zone: str,
        canvas: _Canvas,
        fetched: dict[SeriesKind, Fetched],
        now_floor: datetime,
        warnings: list[str],
    ) -> None:
        past = canvas.slot_mask(before=now_floor)
        future = ~past
        for kind in (SeriesKind.HISTORY, SeriesKind.PAST_RANGE, SeriesKind.FORECAST):
            if kind in fetched:
                canvas.paint(fetched[kind].series, past)
        if SeriesKind.FORECAST in fetched:
            canvas.paint(fetched[SeriesKind.FORECAST].series, future)
        latest = fetched.get(SeriesKind.LATEST)
        if latest is not None:
            self._paint_latest(canvas, latest)
        history = fetched.get(SeriesKind.HISTORY)
        if history is not None:
            canvas.paint(history.series, future)
            covered = canvas.slot_mask(since=history.series.start, before=history.series.end)
            if (covered & past & np.isnan(canvas.values)).any():
                warnings.append(f"{name} history for {zone} has missing hours; filled from fallback data")

    def _requests(
        self, zone: str, start: datetime, end: datetime, now_floor: datetime, signal: Signal
    ) -> list[SeriesRequest]:
        history_start = now_floor - self._history_span
        wanted: list[SeriesRequest] = []
        if end > now_floor:
            wanted.append(SeriesRequest(SeriesKind.FORECAST, zone, signal=signal))
        if start < now_floor and end > history_start:
            wanted.append(SeriesRequest(SeriesKind.HISTORY, zone, signal=signal))
        if start < history_start:
            wanted.extend(
                SeriesRequest(SeriesKind.PAST_RANGE, zone, a, b, signal=signal)
                for a, b in past_chunks(start, min(end, history_start), history_start)
            )
        return wanted

    async def _fetch_live(
        self,
        source: CarbonSource,
        zone: str,
        start: datetime,
        end: datetime,
        now_floor: datetime,
        signal: Signal,
    ) -> _Step:
        """Fetch one source's kinds concurrently under one deadline.

        Returns the results by kind, the failures by kind, and every fetched object as the cache
        returned it (past-range chunks before they are merged, in start order): the identities
        the live memo compares.
        """
        results: dict[SeriesKind, Fetched] = {}
        errors: dict[SeriesKind, BaseException] = {}
        deadline_at = asyncio.get_running_loop().time() + self._live_deadline_s
        got: dict[int, tuple[SeriesRequest, Fetched]] = {}  # by the request's place in `asked`

        async def one(at: int, request: SeriesRequest) -> None:
            try:
                async with asyncio.timeout_at(deadline_at):
                    fetched = await source.fetch(request)
            except (ProviderError, TimeoutError) as exc:
                errors.setdefault(request.kind, exc)
                return
            got[at] = (request, fetched)
            if request.kind is not SeriesKind.PAST_RANGE:
                results[request.kind] = fetched

        # A source may answer only some kinds (our forecaster: forecasts only): ask it nothing else.
        kinds = getattr(source, "kinds", None)
        wanted = [
            r for r in self._requests(zone, start, end, now_floor, signal) if kinds is None or r.kind in kinds
        ]
        if len(wanted) == 1:
            await one(0, wanted[0])  # the usual case (a forecast only): no task for one await
        else:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(wanted)))
        chunks = [f for r, f in (got[i] for i in sorted(got)) if r.kind is SeriesKind.PAST_RANGE]
        if chunks:
            results[SeriesKind.PAST_RANGE] = _merge_chunks(zone, chunks)
        forecast_error = errors.get(SeriesKind.FORECAST)
        if isinstance(forecast_error, ProviderNotEntitled):
            # Plans without forecasts usually still have `latest`: hold it flat for a while.
            await one(len(wanted), SeriesRequest(SeriesKind.LATEST, zone, signal=signal))
            if SeriesKind.LATEST in results:
                del errors[SeriesKind.FORECAST]
            else:
                del errors[SeriesKind.LATEST]
        return results, errors, tuple(got[i] for i in sorted(got))

    def _paint_latest(self, canvas: _Canvas, latest: Fetched) -> None:
        series = latest.series
        values = np.asarray(series.values)
        if not len(values) or np.isnan(values[-1]):
            return
        reading_at = series.start + series.step * (len(values) - 1)
        mask = canvas.slot_mask(
            since=floor_to(reading_at, canvas.step), before=reading_at + self._latest_extension
        )
        canvas.paint_flat(float(values[-1]), series.runs[-1].label, mask)

    # ----- offline part (never inside a live wait) -----

    def _paint_offline(
        self, zone: str, canvas: _Canvas, have_live: bool, errors: Sequence[BaseException]
    ) -> tuple[str, ...]:
        """Fill the canvas's gaps from the bundled data; return the fallback labels it counted."""
        gaps = np.flatnonzero(np.isnan(canvas.values))
        first = canvas.start + canvas.step * int(gaps[0])
        last = canvas.start + canvas.step * (int(gaps[-1]) + 1)
        try:
            offline = self.offline.series_sync(zone, first, last)
        except UnknownZone:
            if have_live:
                log.info("offline provider has no data for %s; extending live data", zone)
                return ()
            if all(isinstance(e, NoDataForZone) for e in errors):
                raise  # nobody knows this zone
            raise DataUnavailable(f"no carbon intensity source could answer for {zone}") from None
        except ProviderError as exc:
            log.warning("offline provider failed for %s: %s", zone, type(exc).__name__)
            if not have_live:
                raise DataUnavailable(f"no carbon intensity source could answer for {zone}") from exc
            return ()
        live_labels = set(canvas.labels)
        before = canvas.label_ids.copy()
        canvas.paint(offline)
        used = {canvas.labels[i] for i in set(canvas.label_ids[before != canvas.label_ids].tolist())}
        counted = tuple(sorted(used - live_labels))
        for label in counted:
            child(FALLBACKS, "carbon", label).inc()
        return counted

    def _note_age(self, zone: str, fetched: Sequence[Fetched], now: datetime) -> None:
        newest = [f.issued_at or f.fetched_at for f in fetched]
        if newest:
            issued = max(newest)
            # The gauge moves by seconds: set it at most once a second per zone while the data is
            # the same (memo hits report every request, 20–150 zones each).
            last = self._age_set.get(zone)
            if last is not None and last[0] == issued and (now - last[1]).total_seconds() < 1.0:
                return
            self._age_set[zone] = (issued, now)
            self._issued[zone] = issued
            child(DATA_AGE, "carbon", zone).set(max(0.0, (now - issued).total_seconds()))


PAST_CHUNK = timedelta(days=7)
_DAY = timedelta(days=1)


def past_chunks(start: datetime, end: datetime, history_start: datetime) -> list[tuple[datetime, datetime]]:
    """The aligned past-range chunks covering [start, end): every request shares the same keys.

    Chunks are weeks on the UTC epoch lattice (`/past-range` takes ≤ 10 days a call), so any
    `baseline.start` or zone-series window inside a week reuses that week's cache entry; only the
    chunk that reaches the recent past is cut, at the day after `history_start`, so its key is
    stable for a day. N distinct windows therefore cost at most the number of chunks they touch.
    """
    cap = ceil_to(history_start, _DAY)
    chunks: list[tuple[datetime, datetime]] = []
    cursor = floor_to(start, PAST_CHUNK)
    while cursor < end and cursor < cap:
        chunks.append((cursor, min(cursor + PAST_CHUNK, cap)))
        cursor += PAST_CHUNK
    return chunks


def _merge_chunks(zone: str, chunks: Sequence[Fetched]) -> Fetched:
    """One past-range `Fetched` from its chunks (labels kept; stale if any chunk was stale)."""
    if len(chunks) == 1:
        return chunks[0]
    ordered = sorted(chunks, key=lambda f: f.series.start)
    step = min(f.series.step for f in ordered)
    begin = ordered[0].series.start
    finish = max(f.series.end for f in ordered)
    canvas = _Canvas(begin, step, _ceil_div(finish - begin, step))
    for fetched in ordered:
        canvas.paint(fetched.series)
    issued = [f.issued_at for f in ordered if f.issued_at is not None]
    stale = [f for f in ordered if f.stale]
    return Fetched(
        series=canvas.series(zone, ordered[0].series.emission_factor_type),
        fetched_at=min(f.fetched_at for f in ordered),
        issued_at=max(issued) if issued else None,
        stale=bool(stale),
        error=stale[0].error if stale else None,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_canvas(fetched: Mapping[SeriesKind, Fetched], start: datetime, end: datetime) -> _Canvas:
    step = HOUR
    for kind in (SeriesKind.FORECAST, SeriesKind.HISTORY):
        if kind in fetched:
            step = fetched[kind].series.step
            break
    if HOUR % step:
        step = HOUR  # keep the output on the hour lattice whatever the source says
    begin = floor_to(start, step)
    return _Canvas(begin, step, _ceil_div(end.astimezone(UTC) - begin, step))


def _describe_failure(source: str, zone: str, kind: SeriesKind, exc: BaseException) -> str:
    """The response warning for one failed live kind (never a secret: messages are ours)."""
    if isinstance(exc, UpstreamBudgetExhausted):
        return f"{exc.message}; used cached or fallback data for {zone}"
    if isinstance(exc, ProviderNotEntitled):
        return f"{source} plan does not include {kind.value} data for {zone}; used fallback data"
    if isinstance(exc, NoDataForZone):
        return f"{source} has no {kind.value} data for {zone}; used fallback data"
    if isinstance(exc, ProviderAuthError):
        return f"{source} rejected the configured API token; used fallback data"
    return f"{source} unavailable for {zone}; used fallback data"
