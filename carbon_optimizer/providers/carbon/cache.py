"""Carbon-data cache: a proxy of any live `CarbonSource` with the same `fetch` protocol.

The machinery (local tier, single-flight within and across processes, per-key cool-down,
stale-while-error, negative markers beside the last good value, no write-back) is the shared
`providers/tiered.py`; this module holds what is carbon's own:

- the byte format — a small JSON header (zone, start, step, labels, fetched_at, fresh_until)
  followed by little-endian float64s that `np.frombuffer` loads without a copy; unchanged, so
  entries written by earlier versions are read as they are;
- the key scheme, versioned: `<prefix>:carbon:v<N>:<variant>:<kind>:<zone>` (past-range adds
  `:<start>-<end>`, a marginal signal adds `:marginal`; the negative marker is `<key>:neg`);
- freshness per kind (forecast/latest short, measured history long), and the background refresh
  that keeps configured zones warm.
Why shared: Electricity Maps publishes no rate limit and answers in hundreds of milliseconds, so
every worker and replica shares one copy of each (kind, zone) in Redis; see `tiered.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.health import ComponentStatus
from carbon_optimizer.providers.carbon.base import CarbonSource, Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.store import CacheStore
from carbon_optimizer.providers.tiered import NEGATIVE_SUFFIX, Entry, Lease, TieredCache, TierPolicy
from carbon_optimizer.settings import CacheSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_SCHEMA_VERSION = 1
_MAGIC = b"COC1"
_HEADER_LEN = struct.Struct("<I")
STALE_SUFFIX = "(stale)"


# ----- stores -----


# ----- entries and their byte format -----


CacheEntry = Entry[Fetched]


def encode_entry(entry: CacheEntry) -> bytes:
    """Header JSON + raw little-endian float64 values (loadable with `np.frombuffer`)."""
    header: dict[str, Any] = {"v": CACHE_SCHEMA_VERSION, "fu": entry.fresh_until}
    payload = b""
    if entry.negative is not None:
        header["neg"] = list(entry.negative)
    else:
        assert entry.value is not None
        fetched = entry.value
        series = fetched.series
        header.update(
            zone=series.zone,
            start=series.start.timestamp(),
            step=series.step.total_seconds(),
            runs=[[r.start_index, r.end_index, r.label] for r in series.runs],
            eft=series.emission_factor_type,
            fa=fetched.fetched_at.timestamp(),
            ia=fetched.issued_at.timestamp() if fetched.issued_at else None,
        )
        payload = np.ascontiguousarray(series.values, dtype="<f8").tobytes()
    head = json.dumps(header, separators=(",", ":")).encode()
    return _MAGIC + _HEADER_LEN.pack(len(head)) + head + payload


def decode_entry(data: bytes) -> CacheEntry | None:
    """Inverse of `encode_entry`; None for bytes of another format or version (treated as a miss)."""
    try:
        if not data.startswith(_MAGIC):
            return None
        (length,) = _HEADER_LEN.unpack_from(data, len(_MAGIC))
        offset = len(_MAGIC) + _HEADER_LEN.size
        header = json.loads(data[offset : offset + length])
        if header.get("v") != CACHE_SCHEMA_VERSION:
            return None
        fresh_until = float(header["fu"])
        if "neg" in header:
            kind, message = header["neg"]
            return CacheEntry(fresh_until=fresh_until, negative=(str(kind), str(message)))
        values = np.frombuffer(data, dtype="<f8", offset=offset + length)  # read-only view, no copy
        series = CarbonSeries(
            zone=header["zone"],
            start=datetime.fromtimestamp(header["start"], UTC),
            step=timedelta(seconds=header["step"]),
            values=values,
            runs=tuple(SourceRun(int(a), int(b), str(label)) for a, b, label in header["runs"]),
            emission_factor_type=header["eft"],
        )
        issued = header.get("ia")
        fetched = Fetched(
            series=series,
            fetched_at=datetime.fromtimestamp(header["fa"], UTC),
            issued_at=datetime.fromtimestamp(issued, UTC) if issued is not None else None,
        )
        return CacheEntry(fresh_until=fresh_until, value=fetched)
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def mark_stale(fetched: Fetched, error: str) -> Fetched:
    """The same data relabelled `…(stale)`, carrying the error that made us serve it."""
    runs = tuple(
        run if run.label.endswith(STALE_SUFFIX) else replace(run, label=run.label + STALE_SUFFIX)
        for run in fetched.series.runs
    )
    return replace(fetched, series=replace(fetched.series, runs=runs), stale=True, error=error)


def _glob_escape(text: str) -> str:
    """`text` with glob metacharacters escaped (zone keys never have them; belt and braces)."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


class CarbonCodec:
    """The carbon half's `Codec` for `TieredCache`."""

    def encode(self, entry: CacheEntry) -> bytes:
        """See `encode_entry`."""
        return encode_entry(entry)

    def decode(self, data: bytes) -> CacheEntry | None:
        """See `decode_entry`."""
        return decode_entry(data)

    def fetched_at(self, value: Fetched) -> float:
        """Upstream fetch time (epoch seconds)."""
        return value.fetched_at.timestamp()

    def stale(self, value: Fetched, error: str) -> Fetched:
        """Relabelled `…(stale)`."""
        return mark_stale(value, error)

    def empty(self, value: Fetched) -> bool:
        """An answer whose every value is null (NaN) carries nothing."""
        values = np.asarray(value.series.values)
        return bool(values.size == 0 or np.isnan(values).all())


class CachedSeriesSource:
    """Caches a `CarbonSource` through the shared `TieredCache` (see the module docstring)."""

    def __init__(
        self,
        source: CarbonSource,
        store: CacheStore,
        settings: CacheSettings,
        *,
        key_prefix: str = "co:v1",
        variant: str = "default",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        failure_cooldown_s: float = 5.0,
    ) -> None:
        self.source = source
        self.name = source.name
        self.store = store
        self._settings = settings
        self._key_prefix = key_prefix
        self._variant = variant
        self._sleep = sleep
        self._rng = rng
        policy = TierPolicy(
            local_ttl_s=settings.local_ttl_s,
            local_max_entries=settings.local_max_entries,
            stale_max_age_s=settings.stale_max_age_s,
            negative_base_s=min(settings.negative_base_s, settings.negative_ttl_s),
            negative_ttl_s=settings.negative_ttl_s,
            lock_ttl_s=settings.lock_ttl_s,
            lock_wait_s=settings.lock_wait_s,
            failure_cooldown_s=failure_cooldown_s,
        )
        self.tiers: TieredCache[Fetched] = TieredCache(
            "carbon", store, CarbonCodec(), policy, clock=clock, monotonic=monotonic, sleep=sleep
        )
        self._refresher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"CachedSeriesSource(source={self.source!r}, store={self.store!r})"

    @property
    def signals(self) -> frozenset[Signal]:
        """The wrapped source's signals."""
        return self.source.signals

    def covers(self, zone: str) -> bool:
        """Whether the wrapped source covers `zone`."""
        return self.source.covers(zone)

    # ----- keys and TTLs -----

    def key_for(self, request: SeriesRequest) -> str:
        """Versioned cache key of a request."""
        base = f"{self._key_prefix}:carbon:v{CACHE_SCHEMA_VERSION}:{self._variant}"
        key = f"{base}:{request.kind.value}:{request.zone}"
        if request.kind is SeriesKind.PAST_RANGE and request.start and request.end:
            key += f":{int(request.start.timestamp())}-{int(request.end.timestamp())}"
        if request.signal is not Signal.AVERAGE:
            key += f":{request.signal.value}"  # average keys keep the scheme they always had
        return key

    def ttl_for(self, kind: SeriesKind) -> float:
        """Freshness of a kind: forecast/latest short, measured history long."""
        s = self._settings
        return {
            SeriesKind.FORECAST: s.forecast_ttl_s,
            SeriesKind.LATEST: s.latest_ttl_s,
            SeriesKind.HISTORY: s.history_ttl_s,
            SeriesKind.PAST_RANGE: s.history_ttl_s,
        }[kind]

    # ----- protocol -----

    async def fetch(self, request: SeriesRequest) -> Fetched:
        """Answer from the local tier, the store, or one shared upstream call."""
        return await self.tiers.get(
            self.key_for(request), lambda: self.source.fetch(request), self.ttl_for(request.kind)
        )

    def peek(self, request: SeriesRequest) -> Fetched | None:
        """The in-process tier's fresh answer for `request`, synchronously (None: ask `fetch`)."""
        return self.tiers.peek(self.key_for(request))

    def peek_lease(self, request: SeriesRequest) -> tuple[Fetched, Lease] | None:
        """`peek` plus how long that object stays its answer (`TieredCache.peek_lease`)."""
        return self.tiers.peek_lease(self.key_for(request))

    async def refresh(self, request: SeriesRequest, *, min_remaining_s: float = 0.0) -> bool:
        """Fetch upstream now unless the entry stays fresh for `min_remaining_s`; True if refreshed."""
        return await self.tiers.refresh(
            self.key_for(request),
            lambda: self.source.fetch(request),
            self.ttl_for(request.kind),
            min_remaining_s=min_remaining_s,
        )

    async def clear_negative(self, request: SeriesRequest) -> None:
        """Forget the negative marker of `request` (e.g. after the operator fixed the token)."""
        await self.tiers.clear_negative(self.key_for(request))

    async def clear_zone_negatives(self, zone: str) -> int:
        """Forget every negative marker of `zone` (all kinds, ranges, signals) for every worker.

        Returns the number of markers deleted from the shared store (-1: it could not be swept).
        """
        base = f"{self._key_prefix}:carbon:v{CACHE_SCHEMA_VERSION}:{self._variant}"
        # `<base>:<kind>:<zone>:neg` and `<base>:<kind>:<zone>:<range or signal>…:neg`
        patterns = [
            f"{base}:*:{_glob_escape(zone)}{NEGATIVE_SUFFIX}",
            f"{base}:*:{_glob_escape(zone)}:*{NEGATIVE_SUFFIX}",
        ]
        return await self.tiers.clear_negatives(patterns)

    def health(self) -> dict[str, object]:
        """Cache backend and tier status (JSON-able, no secrets)."""
        return {
            "backend": self.store.name,
            "status": ComponentStatus.OK if self.store.healthy else ComponentStatus.DEGRADED,
            "last_error": self.store.last_error,
            "local_entries": len(self.tiers),
            "inflight": len(self.tiers.flights),
            "background_refresh": self._refresher is not None and not self._refresher.done(),
        }

    # ----- background refresh -----

    def start_background_refresh(
        self, zones: Iterable[str], kinds: Iterable[SeriesKind] = (SeriesKind.FORECAST, SeriesKind.HISTORY)
    ) -> None:
        """Keep `zones` warm: refresh each entry in the last fifth of its life, with jitter."""
        zone_list, kind_list = list(zones), list(kinds)
        if not zone_list or self._refresher is not None:
            return
        self._refresher = asyncio.create_task(self._refresh_loop(zone_list, kind_list), name="carbon-refresh")

    async def _refresh_loop(self, zones: list[str], kinds: list[SeriesKind]) -> None:
        shortest = min(self.ttl_for(kind) for kind in kinds)
        while True:
            jobs = [
                self.refresh(SeriesRequest(kind, zone), min_remaining_s=self.ttl_for(kind) * 0.2)
                for kind in kinds
                for zone in zones
            ]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.warning("background refresh failed: %s", type(result).__name__)
            # Wake ~10 times per shortest TTL; jitter keeps workers and replicas out of step.
            await self._sleep(shortest * 0.1 * (1.0 + 0.5 * self._rng()))

    async def aclose(self) -> None:
        """Stop the background refresher and any shared fetch still running (shutdown)."""
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        await self.tiers.aclose()
