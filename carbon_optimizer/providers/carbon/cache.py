"""Carbon-data cache: a proxy of any live `CarbonSource` with the same `fetch` protocol.

Why it looks like this:
- Electricity Maps publishes no rate limit and answers in hundreds of milliseconds, so every worker
  and replica shares one copy of each (kind, zone) in Redis, and concurrent misses cause exactly one
  upstream call: in-process through a shared task, across processes through a short Redis lock
  (`SET NX PX`) that the others poll behind until the value appears (or `lock_wait_s` passes).
- One Redis GET costs ~120 µs of CPU per request, so decoded entries also live in a small
  in-process LRU tier (`local_ttl_s`) in front of Redis; the hot path usually never touches Redis.
- Entries are compact bytes — a small JSON header (zone, start, step, labels, fetched_at,
  fresh_until) followed by little-endian float64s — that `np.frombuffer` loads without a copy.
  Keys are versioned (`<prefix>:carbon:v<N>:<variant>:<kind>:<zone>`) so a format change never
  reads old bytes.
- Entries stay in the store `stale_max_age_s` beyond their freshness: when the upstream fails we
  serve the last good value labelled `…(stale)` (stale-while-error). Definite answers (no data,
  not in plan, bad token) are cached as negative entries for `negative_ttl_s`.
- A store never raises: a failing Redis (refused, timing out, stalled by SIGSTOP) reports misses,
  marks itself degraded and is skipped for `retry_after_failure_s`, after which the next operation
  probes it again. Requests keep being answered from the local tier and the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import (
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderUnavailable,
)
from carbon_optimizer.metrics import CACHE_EVENTS, child
from carbon_optimizer.providers.carbon.base import CarbonSource, Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.store import CacheStore, LockingStore
from carbon_optimizer.settings import CacheSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_SCHEMA_VERSION = 1
_MAGIC = b"COC1"
_HEADER_LEN = struct.Struct("<I")
STALE_SUFFIX = "(stale)"
# Definite upstream answers: cached as negative entries instead of being retried on every request.
_NEGATIVE_KINDS: dict[str, type[ProviderError]] = {
    "no_data": NoDataForZone,
    "not_entitled": ProviderNotEntitled,
    "auth": ProviderAuthError,
}


# ----- stores -----


# ----- entries and their byte format -----


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached answer: a `Fetched` series, or a negative (definite error) entry."""

    fresh_until: float  # epoch seconds
    fetched: Fetched | None = None
    negative: tuple[str, str] | None = None  # (kind, message)

    def is_fresh(self, now: float) -> bool:
        """Whether the entry may be served without asking upstream."""
        return now < self.fresh_until

    def usable_stale(self, now: float, max_age_s: float) -> bool:
        """Whether a positive entry is young enough to serve after an upstream failure."""
        return self.fetched is not None and now - self.fetched.fetched_at.timestamp() <= max_age_s

    def result(self) -> Fetched:
        """The cached value, or the cached error raised again."""
        if self.negative is not None:
            kind, message = self.negative
            raise _NEGATIVE_KINDS.get(kind, NoDataForZone)(message, source="cache")
        assert self.fetched is not None
        return self.fetched


def encode_entry(entry: CacheEntry) -> bytes:
    """Header JSON + raw little-endian float64 values (loadable with `np.frombuffer`)."""
    header: dict[str, Any] = {"v": CACHE_SCHEMA_VERSION, "fu": entry.fresh_until}
    payload = b""
    if entry.negative is not None:
        header["neg"] = list(entry.negative)
    else:
        assert entry.fetched is not None
        fetched = entry.fetched
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
        return CacheEntry(fresh_until=fresh_until, fetched=fetched)
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def mark_stale(fetched: Fetched, error: str) -> Fetched:
    """The same data relabelled `…(stale)`, carrying the error that made us serve it."""
    runs = tuple(
        run if run.label.endswith(STALE_SUFFIX) else replace(run, label=run.label + STALE_SUFFIX)
        for run in fetched.series.runs
    )
    return replace(fetched, series=replace(fetched.series, runs=runs), stale=True, error=error)


class _LocalTier:
    """Small LRU of decoded entries, each remembering when it entered the tier."""

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[str, tuple[float, CacheEntry]] = OrderedDict()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> tuple[float, CacheEntry] | None:
        item = self._data.get(key)
        if item is not None:
            self._data.move_to_end(key)
        return item

    def put(self, key: str, entry: CacheEntry, now: float) -> None:
        self._data[key] = (now, entry)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)


# ----- the caching proxy -----


class CachedSeriesSource:
    """Caches a `SeriesSource` in two tiers with single-flight, stale-while-error, negative caching."""

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
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng
        self._locking: LockingStore | None = store if isinstance(store, LockingStore) else None
        # With only this process writing (memory store), local entries are as good as the store's.
        self._local_ttl_s = settings.local_ttl_s if self._locking is not None else math.inf
        self._local = _LocalTier(settings.local_max_entries)
        self._inflight: dict[str, asyncio.Task[Fetched]] = {}
        # key -> (monotonic time until which we do not ask upstream again, why it failed)
        # key → (until, reason, best entry known then): during a cool-down the hot path answers from
        # memory without a Redis round trip per zone (an outage must not cost ~40 GETs a request).
        self._cooling: dict[str, tuple[float, str, CacheEntry | None]] = {}
        self._failure_cooldown_s = failure_cooldown_s
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
        """Answer from the local tier, the store, or one shared upstream call (see module doc)."""
        key = self.key_for(request)
        now = self._clock()
        item = self._local.get(key)
        if item is not None:
            stored_at, entry = item
            if entry.is_fresh(now) and now - stored_at < self._local_ttl_s:
                child(CACHE_EVENTS, "carbon", "local", "negative" if entry.negative else "hit").inc()
                return entry.result()
        return await self._single_flight(key, lambda: self._load(key, request))

    async def refresh(self, request: SeriesRequest, *, min_remaining_s: float = 0.0) -> bool:
        """Fetch upstream now unless the entry stays fresh for `min_remaining_s`; True if refreshed."""
        key = self.key_for(request)
        now = self._clock()
        best = self._best_known(key, await self._store_get(key))
        if best is not None and best.fresh_until - now > min_remaining_s:
            return False
        with contextlib.suppress(ProviderError):
            await self._single_flight(key, lambda: self._refresh(key, request, best))
            return True
        return False

    def health(self) -> dict[str, object]:
        """Cache backend and tier status (JSON-able, no secrets)."""
        return {
            "backend": self.store.name,
            "status": "healthy" if self.store.healthy else "degraded",
            "last_error": self.store.last_error,
            "local_entries": len(self._local),
            "inflight": len(self._inflight),
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
        tasks = [t for t in (self._refresher, *self._inflight.values()) if t is not None]
        self._refresher = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----- internals -----

    async def _single_flight(self, key: str, factory: Callable[[], Awaitable[Fetched]]) -> Fetched:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # shield: one caller giving up (its own deadline) must not cancel the shared fetch.
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[Fetched]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not reported as unhandled

    async def _store_get(self, key: str) -> CacheEntry | None:
        data = await self.store.get(key)
        return decode_entry(data) if data is not None else None

    def _best_known(self, key: str, stored: CacheEntry | None) -> CacheEntry | None:
        item = self._local.get(key)
        local = item[1] if item is not None else None
        if local is None:
            return stored
        if stored is None:
            return local
        return stored if stored.fresh_until >= local.fresh_until else local

    async def _load(self, key: str, request: SeriesRequest) -> Fetched:
        cooling = self._cooling.get(key)
        if cooling is not None:
            until, reason, known = cooling
            if self._monotonic() < until:
                # This key just failed upstream: answer stale/fallback now, from memory, instead of
                # waiting again or asking Redis (one request may ask for a zone twice, e.g. options
                # and baseline, and an outage hits every zone of every request).
                best = self._best_known(key, known)
                if best is not None and best.is_fresh(self._clock()):
                    return best.result()
                return self._stale_or_raise(best, ProviderUnavailable(f"{reason} (recent failure)"))
            del self._cooling[key]
        stored = await self._store_get(key)
        now = self._clock()
        tier = self.store.name
        if stored is not None and stored.is_fresh(now):
            self._local.put(key, stored, now)
            child(CACHE_EVENTS, "carbon", tier, "negative" if stored.negative else "hit").inc()
            return stored.result()
        best = self._best_known(key, stored)
        if best is not None and best.is_fresh(now):
            # The store lost it (eviction, restart) or was down when we fetched, but our copy is
            # still fresh: serve it, and give it back to the store so other workers need not fetch.
            child(CACHE_EVENTS, "carbon", "local", "hit").inc()
            if stored is None and self.store.healthy:
                extra = self._settings.stale_max_age_s if best.fetched is not None else 0
                await self.store.set(key, encode_entry(best), best.fresh_until - now + extra)
            return best.result()
        child(CACHE_EVENTS, "carbon", tier, "miss").inc()
        return await self._refresh(key, request, best)

    async def _refresh(self, key: str, request: SeriesRequest, fallback: CacheEntry | None) -> Fetched:
        token = secrets.token_hex(8)
        lock_key = key + ":lock"
        held = False
        if self._locking is not None:
            acquired = await self._locking.acquire_lock(lock_key, token, self._settings.lock_ttl_s)
            if acquired is False:
                entry = await self._wait_for_other(key, lock_key)
                if entry is not None:
                    self._local.put(key, entry, self._clock())
                    return entry.result()
                return self._failed(
                    key, fallback, ProviderUnavailable("another worker's upstream fetch did not complete")
                )
            held = acquired is True
        try:
            fetched = await self.source.fetch(request)
        except (NoDataForZone, ProviderNotEntitled, ProviderAuthError) as exc:
            self._cooling.pop(key, None)
            await self._put(key, self._negative(exc), self._settings.negative_ttl_s)
            raise
        except ProviderError as exc:
            return self._failed(key, fallback, exc)
        finally:
            if held and self._locking is not None:
                await self._locking.release_lock(lock_key, token)
        self._cooling.pop(key, None)
        ttl = self.ttl_for(request.kind)
        entry = CacheEntry(fresh_until=self._clock() + ttl, fetched=fetched)
        await self._put(key, entry, ttl + self._settings.stale_max_age_s)
        return fetched

    def _negative(self, exc: ProviderError) -> CacheEntry:
        kind = next(k for k, cls in _NEGATIVE_KINDS.items() if isinstance(exc, cls))
        return CacheEntry(
            fresh_until=self._clock() + self._settings.negative_ttl_s, negative=(kind, exc.message)
        )

    async def _put(self, key: str, entry: CacheEntry, store_ttl_s: float) -> None:
        self._local.put(key, entry, self._clock())
        await self.store.set(key, encode_entry(entry), store_ttl_s)

    async def _wait_for_other(self, key: str, lock_key: str) -> CacheEntry | None:
        """Poll the store for the value another process is fetching, up to `lock_wait_s`."""
        assert self._locking is not None
        give_up_at = self._monotonic() + self._settings.lock_wait_s
        delay = 0.01
        while (remaining := give_up_at - self._monotonic()) > 0:
            await self._sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.05)  # a short cap: waiters see the value soon after it lands
            entry = await self._store_get(key)
            if entry is not None and entry.is_fresh(self._clock()):
                child(CACHE_EVENTS, "carbon", self.store.name, "hit").inc()
                return entry
            held = await self._locking.lock_held(lock_key)
            if held is None:
                return None  # store went away: stop waiting on it
            if not held:
                entry = await self._store_get(key)  # it may have landed just before the release
                fresh = entry is not None and entry.is_fresh(self._clock())
                return entry if fresh else None
        return None

    def _failed(self, key: str, fallback: CacheEntry | None, exc: ProviderError) -> Fetched:
        self._cooling[key] = (self._monotonic() + self._failure_cooldown_s, exc.message, fallback)
        return self._stale_or_raise(fallback, exc)

    def _stale_or_raise(self, fallback: CacheEntry | None, exc: ProviderError) -> Fetched:
        now = self._clock()
        if (
            fallback is not None
            and fallback.fetched is not None
            and fallback.usable_stale(now, self._settings.stale_max_age_s)
        ):
            child(CACHE_EVENTS, "carbon", "any", "stale").inc()
            return mark_stale(fallback.fetched, f"{type(exc).__name__}: {exc.message}")
        raise exc
