"""The forecaster's history from a live source: ~9 weeks kept in the shared store, extended hourly.

Why: `profile-ar` fitted on the bundled 2023 replay forecasts a week of *another* year (p50 MAPE
19.1 %); fitted on this zone's measured recent hours it is the backtested forecaster (3.0 % at 1 h
… 16.0 % at 121–168 h, providers/carbon/forecast.py). Fetching 9 weeks at every hourly refit would
cost 7 past-range calls per zone and hour, so the long history is kept, per (source, zone), in the
same `CacheStore` as every cached series (Redis when configured) and only its newest hours are
asked per refit:

| stored history            | upstream calls of a refit                                           |
|---------------------------|---------------------------------------------------------------------|
| none (first fit, flushed) | past-range over the whole window (Electricity Maps: 7 × ≤ 10 days)  |
| ends ≤ 24 h ago           | the source's 24 h `history` through its shared cache (0 or 1 call;  |
|                           | refreshed there when it ends early and is > `RECENT_REFRESH_S` old)  |
| ends > 24 h ago           | one past-range over the missing span (1 call per 10 days)           |
| unknown older hours       | past-range for those chunks, at most every `BACKFILL_RETRY_S`       |

A plan without past-range (Electricity Maps' free tier answers it 401) costs one call (the first
chunk is asked alone, its 401 stands for the rest) and is asked again daily only;
meanwhile each refit's 24 h `history` still adds its hours, so the stored history fills up to the
full 9 weeks on its own (the fit is `mixed` until then).

Cost: the first fit of a zone 7 calls (Electricity Maps), then 0–1 per hourly refit — the 24 h
`history` entry the request path caches anyway (key `…:<variant>:history:<zone>`).

The newest hours may not be published yet: up to `MAX_LAG_HOURS` behind, the history ends at the
last measured hour and the forecast starts there (the store keeps that many hours more at the old
end, so the fit still has its full window) rather than replaying the hours the fit leans on most.

Single flight: the fit that calls this runs once per zone per TTL (the forecast cache's own
single flight); on top, the update holds a store lock (`<key>:lock`, longer than a backfill can
take), and a worker that finds it held waits for the holder's entry instead of fetching again.
At most `PAST_CONCURRENCY` past-range calls are in flight per worker, so a cold start over many
zones reaches the upstream as a trickle, not one burst.

Degrading, never failing: each upstream part that fails (5xx, timeout, breaker open, budget
spent, plan without past-range, an adapter bug) is skipped; the hours still unknown are filled
from the bundled replay, labelled `fallback:replay-2023`, so `forecast.history_kind` calls the fit `mixed` (or
`replay` when nothing live arrived) and the answer carries the cautious replay error figures.
A live source whose emission-factor type differs from the bundled data's is never glued to it:
with gaps, the whole history is the replay. Only measured points count (labels ending
`:history`/`:actual`; a GB regional "forecast" of a past half-hour does not).
Budget: the calls run in the context of whatever triggered the fit, so a request's upstream
budget is charged as for any cached series (one cold request never costs more than its
`max_calls_per_request`, backfills included), and the background refresher's are `internal`.
A refused chunk only leaves its hours to the replay for this fit (no retry delay): the chunks
that did arrive are stored, so successive refits complete the backfill within their budgets.
The breaker and deadlines apply as always.
Nothing here logs or stores a token: keys carry source and zone only, logs the error class.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from carbon_optimizer.domain import forecast as fc
from carbon_optimizer.domain.models import CarbonSeries, FloatArray, SourceRun
from carbon_optimizer.errors import NoDataForZone, ProviderAuthError, ProviderNotEntitled
from carbon_optimizer.providers.budget import UpstreamBudgetExhausted
from carbon_optimizer.providers.carbon.base import (
    HOUR,
    BundledSeries,
    CarbonSource,
    Fetched,
    SeriesKind,
    SeriesRequest,
    Signal,
)
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.store import CacheStore, LockingStore

log = logging.getLogger(__name__)

KEEP_HOURS = fc.FULL_HISTORY_HOURS  # what the full model reads (9 weeks + 6 h)
RECENT_HOURS = 24  # the span of a source's `history` endpoint
PAST_CHUNK = timedelta(days=10)  # Electricity Maps' past-range cap at hourly granularity
PAST_CONCURRENCY = 8  # past-range calls in flight per worker (all zones together)
MAX_LAG_HOURS = 6  # newest hours not yet published upstream: the history ends earlier instead
STORED_HOURS = KEEP_HOURS + MAX_LAG_HOURS  # the stored window: what a lagging history can shift into
RECENT_REFRESH_S = 600.0  # a cached 24 h history younger than this is not asked again
BACKFILL_RETRY_S = 6 * 3600.0  # an older part that failed or is absent upstream: asked again after this
NOT_ENTITLED_RETRY_S = 24 * 3600.0  # the plan has no past-range: ask again daily (plans change)
STORE_TTL_S = 14 * 24 * 3600.0  # a quiet fortnight keeps the history; older than the window is trimmed
LOCK_TTL_S = 60.0  # longer than a backfill (one deadline per concurrent chunk) plus the write
LOCK_WAIT_S = 10.0
_MAGIC = b"COH1"
_LEN = struct.Struct("<I")
_MEASURED = (":history", ":actual")
STALE = "(stale)"


@dataclass(frozen=True, slots=True)
class HistorySource:
    """A live source that can answer past hours: the raw adapter and its shared cache."""

    name: str
    raw: CarbonSource  # past-range (the long spans are this module's own entry)
    cached: CachedSeriesSource  # the 24 h `history`, shared with the request path
    emission_factor_type: str


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """The stored hourly history of one (source, zone): NaN where no measured value is known."""

    zone: str
    start: datetime
    values: FloatArray
    label: str
    emission_factor_type: str
    updated_at: float  # epoch s of the last change
    backfill_after: float  # epoch s before which a missing older part is not asked again

    @property
    def end(self) -> datetime:
        """The hour after the last stored one."""
        return self.start + HOUR * len(self.values)


def encode(history: StoredHistory) -> bytes:
    """Header JSON + little-endian float64 values (one entry per source and zone)."""
    head = json.dumps(
        {
            "v": 1,
            "zone": history.zone,
            "start": history.start.timestamp(),
            "label": history.label,
            "eft": history.emission_factor_type,
            "ua": history.updated_at,
            "ba": history.backfill_after,
        },
        separators=(",", ":"),
    ).encode()
    payload = np.ascontiguousarray(history.values, dtype="<f8").tobytes()
    return _MAGIC + _LEN.pack(len(head)) + head + payload


def decode(data: bytes) -> StoredHistory | None:
    """Inverse of `encode`; None for anything else (a miss)."""
    try:
        if not data.startswith(_MAGIC):
            return None
        (length,) = _LEN.unpack_from(data, len(_MAGIC))
        offset = len(_MAGIC) + _LEN.size
        head = json.loads(data[offset : offset + length])
        if head.get("v") != 1:
            return None
        return StoredHistory(
            zone=str(head["zone"]),
            start=datetime.fromtimestamp(float(head["start"]), UTC),
            values=np.frombuffer(data, dtype="<f8", offset=offset + length),
            label=str(head["label"]),
            emission_factor_type=str(head["eft"]),
            updated_at=float(head["ua"]),
            backfill_after=float(head["ba"]),
        )
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def hourly_measured(series: CarbonSeries) -> tuple[datetime, FloatArray]:
    """(first hour, hourly values) of the measured points of `series`; NaN elsewhere.

    Sub-hourly data (GB's half-hours) becomes the mean of an hour's points when all are measured.
    """
    values = np.array(series.values, dtype=np.float64)
    keep = np.zeros(values.shape[0], dtype=bool)
    for run in series.runs:
        if run.label.removesuffix(STALE).endswith(_MEASURED):
            keep[run.start_index : run.end_index] = True
    values[~keep] = np.nan
    start = series.start.astimezone(UTC)
    first = start.replace(minute=0, second=0, microsecond=0)
    if series.step == HOUR and first == start:
        return first, values
    per_hour = max(1, int(HOUR // series.step))
    lead = int((start - first) // series.step)
    padded = np.concatenate([np.full(lead, np.nan), values])
    hours = -(-padded.shape[0] // per_hour)
    padded = np.concatenate([padded, np.full(hours * per_hour - padded.shape[0], np.nan)])
    grid = padded.reshape(hours, per_hour)
    out: FloatArray = grid.mean(axis=1)  # NaN unless every point of the hour is measured
    return first, out


def _merge(into: FloatArray, start: datetime, first: datetime, values: FloatArray) -> int:
    """Write the finite `values` (hourly from `first`) into `into` (hourly from `start`); count."""
    offset = int((first - start) // HOUR)
    lo, hi = max(0, offset), min(into.shape[0], offset + values.shape[0])
    if hi <= lo:
        return 0
    part = values[lo - offset : hi - offset]
    ok = np.isfinite(part)
    into[lo:hi][ok] = part[ok]
    return int(ok.sum())


class LiveHistory:
    """`HistoryFn` for the forecaster: live measured hours, the bundled replay for the rest."""

    def __init__(
        self,
        route: Callable[[str], Sequence[HistorySource]],
        offline: BundledSeries,
        store: CacheStore,
        *,
        key_prefix: str = "co:v1",
        clock: Callable[[], float] = time.time,
        lock_wait_s: float = LOCK_WAIT_S,
        sleep_s: float = 0.05,
    ) -> None:
        self._route = route
        self._offline = offline
        self._store = store
        self._prefix = key_prefix
        self._clock = clock
        self._lock_wait_s = lock_wait_s
        self._sleep_s = sleep_s
        # This process's last copy, for when the store is down (a miss there costs a backfill).
        self._local: dict[str, StoredHistory] = {}
        # Past-range chunks in flight per worker: a cold start over 19 zones is 133 calls, which
        # must not reach the upstream as one burst (it publishes no rate limit to stay under).
        self._slots = asyncio.Semaphore(PAST_CONCURRENCY)

    def key_for(self, source: str, zone: str) -> str:
        """Store key of one (source, zone) history (no secret: names only)."""
        return f"{self._prefix}:carbon:v1:forecast-history-{source}:{zone}"

    async def __call__(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Hourly history over [start, end): measured where known, the bundled replay elsewhere."""
        source = next(iter(self._route(zone)), None)
        if source is None:
            return await self._offline.series(zone, start, end)
        replay = await self._offline.series(zone, start - HOUR * MAX_LAG_HOURS, end)
        try:
            stored = await self._updated(source, zone, start, end)
        except Exception as exc:  # belt and braces: each part already degrades on its own
            log.warning("live history of %s failed (%s); fitting on the replay", zone, type(exc).__name__)
            stored = None
        lag = _trailing_lag(stored, end)
        # The upstream's newest hours may not be published yet: end the history at the last
        # measured hour (the forecast then starts there) rather than fill the hours the fit
        # leans on most — its current anomaly — from another year.
        shift = HOUR * (lag if lag <= MAX_LAG_HOURS else 0)
        return _assemble(stored, replay, start - shift, end - shift)

    async def _updated(
        self, source: HistorySource, zone: str, start: datetime, end: datetime
    ) -> StoredHistory | None:
        """The stored history, extended to `end` (at most one updater per key across workers)."""
        key = self.key_for(source.name, zone)
        token = secrets.token_hex(8)
        locking = self._store if isinstance(self._store, LockingStore) else None
        acquired = await locking.acquire_lock(key + ":lock", token, LOCK_TTL_S) if locking else None
        if acquired is False:
            assert locking is not None
            return await self._wait_for_other(locking, key)
        try:
            stored = await self._read(key)
            updated = await self._extend(source, zone, stored, start, end)
            if updated is not stored and updated is not None:
                self._local[key] = updated
                await self._store.set(key, encode(updated), STORE_TTL_S)
            return updated
        finally:
            if acquired and locking is not None:
                await locking.release_lock(key + ":lock", token)

    async def _read(self, key: str) -> StoredHistory | None:
        data = await self._store.get(key)
        stored = decode(data) if data is not None else None
        return stored if stored is not None else self._local.get(key)

    async def _wait_for_other(self, locking: LockingStore, key: str) -> StoredHistory | None:
        """Another worker is updating this history: use its entry once it lands (or what is stored)."""
        give_up = time.monotonic() + self._lock_wait_s
        while time.monotonic() < give_up:
            held = await locking.lock_held(key + ":lock")
            if not held:
                break
            await asyncio.sleep(self._sleep_s)
        data = await self._store.get(key)
        return decode(data) if data is not None else None

    async def _extend(
        self, source: HistorySource, zone: str, stored: StoredHistory | None, start: datetime, end: datetime
    ) -> StoredHistory | None:
        """`stored` re-windowed to end at `end`, with the missing newest (and older) hours asked."""
        now = self._clock()
        window_start = min(start - HOUR * MAX_LAG_HOURS, end - HOUR * STORED_HOURS)
        values = np.full(int((end - window_start) // HOUR), np.nan)
        backfill_after = 0.0
        if stored is not None and stored.emission_factor_type == source.emission_factor_type:
            _merge(values, window_start, stored.start, np.asarray(stored.values))
            backfill_after = stored.backfill_after
        known = np.flatnonzero(np.isfinite(values))
        have_until = window_start + HOUR * (int(known[-1]) + 1) if known.size else window_start
        may_backfill = now >= backfill_after
        before = np.isfinite(values).sum()
        retry = 0.0  # seconds until a missing part is worth asking again (0: no delay)
        if end - have_until > HOUR * RECENT_HOURS and (known.size or may_backfill):
            retry = max(retry, await self._past(source, zone, values, window_start, have_until, end))
        elif have_until < end:
            got = await self._recent(source, zone, end)
            if got is not None:
                _merge(values, window_start, *got)
        older = values[: int((have_until - window_start) // HOUR)]
        if may_backfill and known.size and not np.isfinite(older).all():
            retry = max(retry, await self._past(source, zone, values, window_start, window_start, have_until))
        if retry:
            backfill_after = now + retry
        changed = bool(np.isfinite(values).sum() != before) or (
            stored is not None and stored.start != window_start
        )
        if not changed and stored is not None and backfill_after == stored.backfill_after:
            return stored
        if not changed and stored is None and not retry:
            return None
        return StoredHistory(
            zone=zone,
            start=window_start,
            values=values,
            label=SeriesKind.HISTORY.label_for(source.name),
            emission_factor_type=source.emission_factor_type,
            updated_at=now,
            backfill_after=backfill_after,
        )

    async def _past(
        self,
        source: HistorySource,
        zone: str,
        values: FloatArray,
        origin: datetime,
        start: datetime,
        end: datetime,
    ) -> float:
        """Fill `values` (hourly from `origin`) over [start, end) by past-range, per ≤ 10-day chunk.

        Only chunks with unknown hours are asked, concurrently, each on its own (one failing chunk
        costs its own hours only). Returns the delay before asking again (0: none): a chunk that
        failed or left hours unknown waits `BACKFILL_RETRY_S`; a plan without past-range (the free
        tier answers 401) `NOT_ENTITLED_RETRY_S`; a budget refusal none (asked next refit).
        """
        chunks: list[tuple[datetime, datetime]] = []
        cursor = start
        while cursor < end:
            chunk_end = min(end, cursor + PAST_CHUNK)
            lo, hi = int((cursor - origin) // HOUR), int((chunk_end - origin) // HOUR)
            if not np.isfinite(values[lo:hi]).all():
                chunks.append((cursor, chunk_end))
            cursor = chunk_end

        async def one(a: datetime, b: datetime) -> Fetched:
            async with self._slots:
                return await source.raw.fetch(
                    SeriesRequest(SeriesKind.PAST_RANGE, zone, a, b, Signal.AVERAGE)
                )

        # The first chunk alone first: a plan without past-range (401) then costs one call, not 7.
        results: list[Fetched | BaseException] = []
        if chunks:
            results += await asyncio.gather(one(*chunks[0]), return_exceptions=True)
        if chunks[1:] and isinstance(results[0], ProviderNotEntitled | ProviderAuthError):
            results += [results[0]] * (len(chunks) - 1)
        elif chunks[1:]:
            results += await asyncio.gather(*(one(a, b) for a, b in chunks[1:]), return_exceptions=True)
        retry = 0.0
        failed: list[str] = []  # logged once per backfill: an outage is one line, not one per chunk
        for (a, b), result in zip(chunks, results, strict=True):
            if isinstance(result, UpstreamBudgetExhausted):
                continue  # the request's budget said no: the next refit asks again
            if isinstance(result, ProviderNotEntitled | ProviderAuthError):
                retry = max(retry, NOT_ENTITLED_RETRY_S)  # the 24 h history still accrues meanwhile
                continue
            if isinstance(result, NoDataForZone):
                retry = max(retry, BACKFILL_RETRY_S)  # nothing upstream for that span: later
                continue
            if isinstance(result, Exception):  # upstream failure, or an adapter bug: never the answer's
                failed.append(type(result).__name__)
                retry = max(retry, BACKFILL_RETRY_S)
                continue
            if isinstance(result, BaseException):
                raise result  # cancelled (shutdown, deadline): not ours to swallow
            _merge(values, origin, *hourly_measured(result.series))
            lo, hi = int((a - origin) // HOUR), int((b - origin) // HOUR)
            if not np.isfinite(values[lo:hi]).all():
                retry = max(retry, BACKFILL_RETRY_S)
        if failed:
            log.warning(
                "history backfill of %s from %s: %d of %d chunks failed (%s)",
                zone,
                source.name,
                len(failed),
                len(chunks),
                ", ".join(dict.fromkeys(failed)),
            )
        return retry

    async def _recent(
        self, source: HistorySource, zone: str, end: datetime
    ) -> tuple[datetime, FloatArray] | None:
        """The source's last 24 h, through its shared cache (often no upstream call at all).

        The cached entry lives `history_ttl_s` (6 h): when it ends before `end` and was fetched
        more than `RECENT_REFRESH_S` ago it is refreshed in the shared cache (one call, which the
        request path's next read of that entry also gets).
        """
        request = SeriesRequest(SeriesKind.HISTORY, zone)
        try:
            fetched = await source.cached.fetch(request)
            behind = fetched.series.end < end
            old = self._clock() - fetched.fetched_at.timestamp() > RECENT_REFRESH_S
            if behind and old and await source.cached.refresh(request, min_remaining_s=math.inf):
                fetched = await source.cached.fetch(request)
        except Exception as exc:  # upstream failure, or an adapter bug: the replay fills in
            log.warning("recent history of %s from %s failed: %s", zone, source.name, type(exc).__name__)
            return None
        return hourly_measured(fetched.series)


def _trailing_lag(stored: StoredHistory | None, end: datetime) -> int:
    """Hours between the last measured stored hour and `end` (0 when it reaches `end`)."""
    if stored is None:
        return 0
    known = np.flatnonzero(np.isfinite(np.asarray(stored.values)))
    if known.size == 0:
        return 0
    last = stored.start + HOUR * (int(known[-1]) + 1)
    return max(0, int((end - last) // HOUR))


def _assemble(
    stored: StoredHistory | None, replay: CarbonSeries, start: datetime, end: datetime
) -> CarbonSeries:
    """[start, end) hourly: the stored measured hours, the replay's hours (and label) elsewhere."""
    hours = int((end - start) // HOUR)
    offset = int((start - replay.start) // HOUR)
    base = np.asarray(replay.values, dtype=np.float64)[offset : offset + hours]
    if offset < 0 or base.shape[0] != hours or replay.step != HOUR:
        return replay  # not the bundled hourly shape: let the fitter judge it as it is
    replay_label = replay.runs[0].label if replay.runs else "fallback:replay"
    live = np.full(hours, np.nan)
    if stored is not None:
        _merge(live, start, stored.start, np.asarray(stored.values))
    measured = np.isfinite(live)
    glued = measured.any() and not measured.all()
    if (
        stored is None
        or not measured.any()
        or (glued and stored.emission_factor_type != replay.emission_factor_type)
    ):
        # Nothing live, or two emission-factor types that must never be glued: the replay alone.
        measured[:] = False
    values = np.where(measured, live, base)
    edges = np.flatnonzero(np.diff(measured.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), hours]
    live_label = stored.label if stored is not None else replay_label
    runs = tuple(
        SourceRun(a, b, live_label if measured[a] else replay_label) for a, b in itertools.pairwise(bounds)
    )
    return CarbonSeries(
        zone=replay.zone,
        start=start,
        step=HOUR,
        values=values,
        runs=runs,
        emission_factor_type=(
            stored.emission_factor_type
            if stored is not None and measured.all()
            else replay.emission_factor_type
        ),
    )
