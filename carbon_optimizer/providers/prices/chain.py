"""The price chain: cache → live API (when enabled and configured) → bundled tables.

Why this shape (docs/data-sources.md §2.5): list prices change rarely, so a table fetched
once is good for 24 h (spot for at most 1 h); an outage must never turn into an error when older
data exists, and a failed fetch must never replace a good price. Hence:

- Entries are stored with their fetch time and kept for `cache_retention_s` (30 days), far past
  their freshness TTL, so a stale-but-real price outlives any outage. Only successful, non-empty
  answers are written: a failure cannot overwrite anything.
- A stale or missing entry triggers a *lazy* refresh: one single-flight fetch per key, awaited
  for at most `live_wait_s`; if it is slower the request is answered from stale cache or the
  bundled table and the fetch finishes in the background. After a failure the provider's live
  calls pause (`failure_cooldown_s`) so an outage does not add latency to every request.
- Every row carries its provenance: `live:<provider>` (fetched for this answer),
  `cache:<as_of>` (fetched earlier, as_of = fetch date), `bundled:<as_of>`.
- A small in-process tier (`local_ttl_s`) keeps decoded tables so the hot path rarely touches
  the store (Redis) or decodes JSON.
GCP's live tables only cover the composed families, so bundled rows of other types are merged in
(each keeps its own `bundled:` label).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import orjson

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType, price_label
from carbon_optimizer.errors import CarbonOptimizerError, ProviderAuthError, ProviderRateLimited
from carbon_optimizer.health import ComponentStatus
from carbon_optimizer.metrics import CACHE_EVENTS, DATA_AGE, FALLBACKS, PRICE_DATA_FETCHED, child
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.store import KeyValueStore
from carbon_optimizer.providers.tiered import SingleFlight

from ._common import LivePriceSource, SourceStatus, check_region, log, safe_message, utc_now

CACHE_FORMAT = 1
LIVE_PROVIDERS: tuple[str, ...] = ("aws", "azure", "gcp", "lambda")
# Lambda has one price for every region: its table is cached once, under "*".
_REGION_INDEPENDENT = {"lambda": "*"}
# Live tables of these providers list only part of the catalog (GCP: composed families).
_PARTIAL_PROVIDERS = {"gcp"}
MAX_SPOT_TTL_S = 3600.0


def cache_region(provider: str, region: str) -> str:
    """The region a provider's table is cached under."""
    return _REGION_INDEPENDENT.get(provider, region)


def cache_key(provider: str, region: str, price_type: PriceType) -> str:
    """Store key of one table: `prices:<provider>:<cache region>:<price type>`."""
    return f"prices:{provider}:{cache_region(provider, region)}:{price_type.value}"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Freshness, retention and patience of the chain (see PricingSettings for the env names)."""

    on_demand_ttl_s: float = 24 * 3600.0
    spot_ttl_s: float = 3600.0
    retention_s: float = 30 * 24 * 3600.0
    live_wait_s: float = 3.0
    failure_cooldown_s: float = 300.0
    auth_failure_cooldown_s: float = 3600.0
    local_ttl_s: float = 30.0
    local_max_entries: int = 2048

    def ttl_s(self, price_type: PriceType) -> float:
        """Freshness TTL; spot is capped at one hour whatever is configured."""
        if price_type is PriceType.SPOT:
            return min(self.spot_ttl_s, MAX_SPOT_TTL_S)
        return self.on_demand_ttl_s


def _nan_to_none(values: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """A decoded store entry: one table (rows labelled `cache:<fetch date>`) and its fetch time."""

    provider: str
    region: str
    price_type: PriceType
    fetched_at: datetime
    columns: OfferTable

    @property
    def as_of(self) -> date:
        """Fetch date, the `as_of` of every cached row."""
        return self.fetched_at.astimezone(UTC).date()

    def table(self, region: str) -> OfferTable:
        """The entry as an OfferTable for `region` (Lambda's one table serves every region)."""
        if region == self.columns.region:
            return self.columns
        return dataclasses.replace(self.columns, region=region)


def encode_table(table: OfferTable, fetched_at: datetime) -> bytes:
    """Serialise a live table for the store (JSON rows; schema version in `v`)."""
    vcpus = [None if v is None else int(v) for v in _nan_to_none(table.vcpus)]
    rows = list(
        zip(
            table.instance_types,
            vcpus,
            _nan_to_none(table.memory_gib),
            table.gpu_count.tolist(),
            table.gpu_models,
            table.price_usd_per_hour.tolist(),
            strict=True,
        )
    )
    return orjson.dumps(
        {
            "v": CACHE_FORMAT,
            "provider": table.provider,
            "region": table.region,
            "price_type": table.price_type.value,
            "fetched_at": fetched_at.astimezone(UTC).isoformat(),
            "currency": "USD",
            "rows": rows,
        }
    )


def decode_table(raw: bytes) -> CachedEntry | None:
    """Parse a store entry straight into columns; None (a miss) when corrupt or of another format."""
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != CACHE_FORMAT:
            return None
        fetched_at = datetime.fromisoformat(doc["fetched_at"])
        if fetched_at.tzinfo is None:
            return None
        rows = doc["rows"]
        if not isinstance(rows, list) or not rows:
            return None
        names, vcpus, mem, gpus, models, prices = zip(*rows, strict=True)
        provider, region, price_type = str(doc["provider"]), str(doc["region"]), PriceType(doc["price_type"])
        as_of = fetched_at.astimezone(UTC).date()
        count = len(names)
        columns = OfferTable(
            provider=provider,
            region=region,
            price_type=price_type,
            instance_types=tuple(str(n) for n in names),
            vcpus=np.array([np.nan if v is None else v for v in vcpus], dtype=np.float64),
            memory_gib=np.array([np.nan if m is None else m for m in mem], dtype=np.float64),
            gpu_count=np.array(gpus, dtype=np.int64),
            gpu_models=tuple(None if m is None else str(m) for m in models),
            price_usd_per_hour=np.array(prices, dtype=np.float64),
            as_of=(as_of,) * count,
            sources=(price_label("cache", as_of),) * count,
            fetched_at=fetched_at,
        )
        return CachedEntry(provider, region, price_type, fetched_at, columns)
    except (ValueError, KeyError, TypeError):
        return None


def merge_missing(main: OfferTable, extra: OfferTable | None) -> OfferTable:
    """`main` plus the rows of `extra` whose instance type `main` does not list (columns only)."""
    if extra is None or not len(extra):
        return main
    have = set(main.instance_types)
    keep = [i for i, name in enumerate(extra.instance_types) if name not in have]
    if not keep:
        return main
    take = np.array(keep, dtype=np.int64)
    return dataclasses.replace(
        main,
        instance_types=main.instance_types + tuple(extra.instance_types[i] for i in keep),
        vcpus=np.concatenate((main.vcpus, extra.vcpus[take])),
        memory_gib=np.concatenate((main.memory_gib, extra.memory_gib[take])),
        gpu_count=np.concatenate((main.gpu_count, extra.gpu_count[take])),
        gpu_models=main.gpu_models + tuple(extra.gpu_models[i] for i in keep),
        price_usd_per_hour=np.concatenate((main.price_usd_per_hour, extra.price_usd_per_hour[take])),
        as_of=main.as_of + tuple(extra.as_of[i] for i in keep),
        sources=main.sources + tuple(extra.sources[i] for i in keep),
    )


def fill_specs(main: OfferTable, extra: OfferTable | None) -> OfferTable:
    """`main` with unknown sizes filled from `extra` rows of the same instance type (columns only)."""
    if extra is None or not len(extra):
        return main
    unknown = np.flatnonzero(np.isnan(main.vcpus))
    if not len(unknown):
        return main
    index = {name: i for i, name in enumerate(extra.instance_types)}
    names = main.instance_types
    pairs = [(r, index[names[r]]) for r in unknown.tolist() if names[r] in index]
    if not pairs:
        return main
    rows = np.array([r for r, _ in pairs], dtype=np.int64)
    src = np.array([j for _, j in pairs], dtype=np.int64)
    vcpus = main.vcpus.copy()
    memory = main.memory_gib.copy()
    gpus = main.gpu_count.copy()
    vcpus[rows] = extra.vcpus[src]
    memory[rows] = np.where(np.isnan(memory[rows]), extra.memory_gib[src], memory[rows])
    gpus[rows] = np.where(gpus[rows] == 0, extra.gpu_count[src], gpus[rows])
    models = list(main.gpu_models)
    for r, j in pairs:
        models[r] = models[r] or extra.gpu_models[j]
    return dataclasses.replace(main, vcpus=vcpus, memory_gib=memory, gpu_count=gpus, gpu_models=tuple(models))


_NEWEST_CACHE: dict[int, tuple[OfferTable, date | None]] = {}
_NEWEST_CACHE_SIZE = 2048


def _newest_as_of(table: OfferTable) -> date | None:
    """Newest `as_of` of a table; memoised per (immutable) table, since it runs on every lookup."""
    hit = _NEWEST_CACHE.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1]
    dated = [d for d in table.as_of if d is not None]
    newest = max(dated) if dated else None
    if len(_NEWEST_CACHE) >= _NEWEST_CACHE_SIZE:
        _NEWEST_CACHE.pop(next(iter(_NEWEST_CACHE)))
    _NEWEST_CACHE[id(table)] = (table, newest)
    return newest


@dataclass(slots=True)
class _Local:
    loaded: float  # monotonic
    fetched_at: datetime | None  # None: a bundled answer
    table: OfferTable | None


_AGE_RESOLUTION = timedelta(seconds=1)
_SHAPE_MEMO_SIZE = 256


@dataclass(slots=True)
class _PriceShape:
    """One request's tables (pairs × price type) and until when they stay the local tier's answer.

    Valid while no local entry was put or dropped (`generation`), before the first local entry's
    end (`loaded_until`, monotonic) and before the first fresh table turns stale (`fresh_until`).
    Only shapes whose every table is fresh, or has no live source to ask, are kept: a stale table
    under a cool-down stops being a hit when the cool-down ends, so it takes the per-pair lane.
    """

    generation: int
    loaded_until: float
    fresh_until: datetime | None
    tables: tuple[tuple[OfferTable | None], ...]
    events: tuple[tuple[str, int], ...]  # local-tier result → count (as `_local_hit` counts)
    ages: tuple[tuple[str, OfferTable | None, datetime | None], ...]  # `_report_age` calls to replay


def _local_key(provider: str, region: str, price_type: PriceType) -> str:
    """The in-process tier's key of a table (the store's key plus the region as asked)."""
    return f"{cache_key(provider, region, price_type)}@{region}"


def _local_event(fresh: bool, fetched_at: datetime | None) -> str:
    """The cache-event label of a local answer: a local copy of a bundled table is a miss."""
    return "hit" if fresh else "miss" if fetched_at is None else "stale"


class CachedPriceProvider:
    """`PriceProvider` chaining cache → live → bundled, with provenance on every row."""

    name = "prices"

    def __init__(
        self,
        *,
        bundled: PriceProvider,
        store: KeyValueStore | None,
        live: Mapping[str, LivePriceSource] | None = None,
        policy: CachePolicy | None = None,
        statuses: Mapping[str, SourceStatus] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._bundled = bundled
        self._store = store
        self._live = dict(live or {})
        self.policy = policy or CachePolicy()
        self.statuses: dict[str, SourceStatus] = dict(statuses or {})
        for provider in LIVE_PROVIDERS:
            self.statuses.setdefault(provider, SourceStatus(enabled=provider in self._live))
        self._clock = clock
        self._local: dict[str, _Local] = {}
        self._flights: SingleFlight[str, OfferTable | None] = SingleFlight()
        self._age_reported: dict[str, tuple[OfferTable | None, datetime | None, datetime]] = {}
        self._local_generation = 0  # bumped on every put/drop of `_local` (the shape memo's check)
        self._shapes: dict[tuple[tuple[tuple[str, str], ...], PriceType], _PriceShape] = {}

    # ----- reading -----

    def _live_source(self, provider: str, price_type: PriceType) -> LivePriceSource | None:
        source = self._live.get(provider)
        if source is None or not source.supports(price_type):
            return None
        return source

    def _remember(self, key: str, fetched_at: datetime | None, table: OfferTable | None) -> None:
        if len(self._local) >= self.policy.local_max_entries:
            self._local.pop(next(iter(self._local)))
        self._local[key] = _Local(time.monotonic(), fetched_at, table)
        self._local_generation += 1

    async def _read_store(self, key: str) -> CachedEntry | None:
        if self._store is None:
            return None
        raw = await self._store.get(key)
        return decode_table(raw) if raw is not None else None

    def _saw(self, provider: str, fetched_at: datetime) -> None:
        self.statuses[provider].saw_data(fetched_at)
        child(PRICE_DATA_FETCHED, provider).set(fetched_at.timestamp())

    def _report_age(self, provider: str, table: OfferTable | None, fetched_at: datetime | None) -> None:
        now = self._clock()
        # Every lookup reports, so a 150-region request would set the gauge 150 times: skip while the
        # provider was reported less than a second ago from data fetched at the same time (the gauge
        # is then at most 1 s behind). Regions' tables differ, so the table itself is not compared:
        # a bundled table's age is that of the first table looked up in the second.
        last = self._age_reported.get(provider)
        if last is not None and last[1] == fetched_at and now - last[2] < _AGE_RESOLUTION:
            return
        self._age_reported[provider] = (table, fetched_at, now)
        if fetched_at is not None:
            child(DATA_AGE, "price", provider).set(max(0.0, (now - fetched_at).total_seconds()))
        elif table is not None and (newest := _newest_as_of(table)) is not None:
            as_of = datetime(newest.year, newest.month, newest.day, tzinfo=UTC)
            child(DATA_AGE, "price", provider).set(max(0.0, (now - as_of).total_seconds()))

    async def _bundled_table(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        return await self._bundled.offers(provider, region, price_type)

    async def _finish(
        self, provider: str, region: str, price_type: PriceType, table: OfferTable
    ) -> OfferTable:
        needs_specs = bool(np.isnan(table.vcpus).any())
        if provider not in _PARTIAL_PROVIDERS and not needs_specs:
            return table
        bundled = await self._bundled_table(provider, region, price_type)
        specs = bundled
        if needs_specs and price_type is PriceType.SPOT:  # sizes do not depend on the price type
            specs = await self._bundled_table(provider, region, PriceType.ON_DEMAND)
        table = fill_specs(table, specs)
        if provider in _PARTIAL_PROVIDERS:
            table = merge_missing(table, bundled)
        return table

    def _fresh(self, fetched_at: datetime | None, price_type: PriceType, now: datetime) -> bool:
        """The one freshness rule of a fetched table (every lane and the shape memo use it)."""
        return fetched_at is not None and (now - fetched_at).total_seconds() < self.policy.ttl_s(price_type)

    def _local_hit(
        self, provider: str, region: str, price_type: PriceType
    ) -> tuple[OfferTable | None] | None:
        """`(table,)` from the in-process tier when it may answer (fresh, or nothing live to ask)."""
        local = self._local.get(_local_key(provider, region, price_type))
        if local is None or time.monotonic() - local.loaded >= self.policy.local_ttl_s:
            return None
        fetched_at = local.fetched_at
        fresh = self._fresh(fetched_at, price_type, self._clock())
        if not fresh:
            source = self._live_source(provider, price_type)
            if source is not None and not self.statuses[provider].in_cooldown():
                return None  # stale and a live source may be asked: not a hit
        child(CACHE_EVENTS, "prices", "local", _local_event(fresh, fetched_at)).inc()
        self._report_age(provider, local.table, fetched_at)
        return (local.table,)

    def offers_cached(
        self, provider: str, region: str, price_type: PriceType
    ) -> tuple[OfferTable | None] | None:
        """What `offers` would return, synchronously, on an in-process-tier hit; None otherwise.

        The hot path's fast lane (no task, no await per location); a miss takes `offers`.
        """
        try:
            check_region(provider, region)
        except CarbonOptimizerError:
            return None
        return self._local_hit(provider, region, price_type)

    def offers_many(
        self, places: Sequence[tuple[str, str]], price_type: PriceType
    ) -> list[tuple[OfferTable | None] | None]:
        """`offers_cached` for every (provider, region) of a request, memoised per request shape.

        Why: 20–150 locations each build a key, read the clock twice and count a metric, although
        the answers change only when the local tier does or an entry ages out. A shape whose every
        pair hit is kept with the earliest of those ends (`_PriceShape`), so a later request of the
        same shape checks three numbers; metrics move as the per-pair lane moves them.
        """
        key = (tuple(places), price_type)
        shape = self._shapes.get(key)
        if shape is not None:
            if (
                shape.generation == self._local_generation
                and time.monotonic() < shape.loaded_until
                and (shape.fresh_until is None or self._clock() < shape.fresh_until)
            ):
                for result, count in shape.events:
                    child(CACHE_EVENTS, "prices", "local", result).inc(count)
                for provider, table, fetched_at in shape.ages:
                    self._report_age(provider, table, fetched_at)
                return list(shape.tables)
            del self._shapes[key]
        generation = self._local_generation
        out = [self.offers_cached(provider, region, price_type) for provider, region in places]
        self._remember_shape(key, generation, out)
        return out

    def _remember_shape(
        self,
        key: tuple[tuple[tuple[str, str], ...], PriceType],
        generation: int,
        out: list[tuple[OfferTable | None] | None],
    ) -> None:
        if generation != self._local_generation or any(hit is None for hit in out):
            return
        places, price_type = key
        ttl = timedelta(seconds=self.policy.ttl_s(price_type))
        loaded_until = math.inf
        fresh_until: datetime | None = None
        events: dict[str, int] = {}
        ages: list[tuple[str, OfferTable | None, datetime | None]] = []
        last_age: dict[str, datetime | None] = {}
        now = self._clock()
        for provider, region in places:
            local = self._local.get(_local_key(provider, region, price_type))
            if local is None:
                return
            loaded_until = min(loaded_until, local.loaded + self.policy.local_ttl_s)
            fetched_at = local.fetched_at
            fresh = self._fresh(fetched_at, price_type, now)
            if fresh:
                assert fetched_at is not None
                ends = fetched_at + ttl
                fresh_until = ends if fresh_until is None else min(fresh_until, ends)
            elif self._live_source(provider, price_type) is not None:
                return  # a hit only while its cool-down lasts: not kept
            result = _local_event(fresh, fetched_at)
            events[result] = events.get(result, 0) + 1
            if provider not in last_age or last_age[provider] != fetched_at:
                ages.append((provider, local.table, fetched_at))  # the calls `_report_age` would act on
                last_age[provider] = fetched_at
        self._shapes[key] = _PriceShape(
            generation,
            loaded_until,
            fresh_until,
            tuple(hit for hit in out if hit is not None),
            tuple(events.items()),
            tuple(ages),
        )
        if len(self._shapes) > _SHAPE_MEMO_SIZE:
            self._shapes.pop(next(iter(self._shapes)))

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """The freshest trustworthy table: fresh cache, else live, else stale cache, else bundled."""
        try:
            check_region(provider, region)
        except CarbonOptimizerError:
            return await self._bundled_table(provider, region, price_type)
        hit = self._local_hit(provider, region, price_type)
        if hit is not None:
            return hit[0]
        key = _local_key(provider, region, price_type)
        store_key = cache_key(provider, region, price_type)
        source = self._live_source(provider, price_type)
        can_go_live = source is not None and not self.statuses[provider].in_cooldown()

        def fresh(fetched_at: datetime | None) -> bool:
            return self._fresh(fetched_at, price_type, self._clock())

        entry = await self._read_store(store_key)
        if entry is None:
            child(CACHE_EVENTS, "prices", "store", "miss").inc()
        else:
            self._saw(provider, entry.fetched_at)
            if fresh(entry.fetched_at):
                child(CACHE_EVENTS, "prices", "store", "hit").inc()
                table = await self._finish(provider, region, price_type, entry.table(region))
                self._remember(key, entry.fetched_at, table)
                self._report_age(provider, table, entry.fetched_at)
                return table
            child(CACHE_EVENTS, "prices", "store", "stale").inc()
        if source is not None and can_go_live:
            live_table = await self._await_live(source, provider, region, price_type, store_key, key)
            if live_table is not None:
                self._report_age(provider, live_table, live_table.fetched_at)
                return live_table
        return await self._fallback(provider, region, price_type, entry, key, live=source is not None)

    async def _fallback(
        self,
        provider: str,
        region: str,
        price_type: PriceType,
        entry: CachedEntry | None,
        key: str,
        *,
        live: bool,
    ) -> OfferTable | None:
        bundled = await self._bundled_table(provider, region, price_type)
        if entry is not None:
            newest_bundled = None if bundled is None else _newest_as_of(bundled)
            if newest_bundled is None or newest_bundled <= entry.as_of:
                table = await self._finish(provider, region, price_type, entry.table(region))
                if live:
                    child(FALLBACKS, "price", "cache").inc()
                self._remember(key, entry.fetched_at, table)
                self._report_age(provider, table, entry.fetched_at)
                return table
        if live:
            child(FALLBACKS, "price", "bundled").inc()
        self._remember(key, None, bundled)
        self._report_age(provider, bundled, None)
        return bundled

    # ----- live fetch -----

    async def _await_live(
        self,
        source: LivePriceSource,
        provider: str,
        region: str,
        price_type: PriceType,
        store_key: str,
        key: str,
    ) -> OfferTable | None:
        task = self._flights.running(store_key)
        # Only the request that starts a fetch waits for it; while it runs, others answer at once.
        wait_s = 0.0
        if task is None:
            task = self._flights.start(
                store_key,
                lambda: self._fetch_and_store(source, provider, region, price_type, store_key),
                name=f"price-refresh {store_key}",
            )
            wait_s = self.policy.live_wait_s
        try:
            fetched = await asyncio.wait_for(asyncio.shield(task), timeout=wait_s) if wait_s else None
        except TimeoutError:
            log.info("%s: live price fetch still running; answering from older data", store_key)
            return None
        if fetched is None:
            if not task.done():
                log.info("%s: live price fetch still running; answering from older data", store_key)
            return None
        table = fetched if fetched.region == region else dataclasses.replace(fetched, region=region)
        table = await self._finish(provider, region, price_type, table)
        # Later reads within the local TTL get the cached labelling, like any other process would.
        return table

    async def _fetch_and_store(
        self, source: LivePriceSource, provider: str, region: str, price_type: PriceType, store_key: str
    ) -> OfferTable | None:
        """One live fetch; on success write the store. Never raises (except cancellation)."""
        cregion = cache_region(provider, region)
        status = self.statuses[provider]
        try:
            table = await source.offers(provider, cregion, price_type)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is recorded, none is cached
            cooldown = self.policy.failure_cooldown_s
            if isinstance(exc, ProviderAuthError):
                cooldown = self.policy.auth_failure_cooldown_s
            elif isinstance(exc, ProviderRateLimited) and exc.retry_after_s:
                cooldown = max(cooldown, exc.retry_after_s)
            status.record_failure(self._clock(), exc, cooldown)
            log.warning("live %s prices failed for %s: %s", provider, region, safe_message(exc))
            return None
        if table is None or not len(table):
            status.record_failure(
                self._clock(), _EmptyAnswerError(provider, region), self.policy.failure_cooldown_s
            )
            log.warning("live %s prices: empty answer for %s; keeping older data", provider, region)
            return None
        fetched_at = table.fetched_at or self._clock()
        await self.write(table, fetched_at)
        status.record_success(fetched_at)
        self._saw(provider, fetched_at)
        return table

    async def write(self, table: OfferTable, fetched_at: datetime) -> None:
        """Store a successful live table (also used by the refresh job through `store_table`)."""
        if self._store is not None:
            await store_table(self._store, table, fetched_at, self.policy)
        prefix = cache_key(table.provider, table.region, table.price_type) + "@"
        for key in [k for k in self._local if k.startswith(prefix)]:
            del self._local[key]
            self._local_generation += 1

    # ----- conveniences for the API layer -----

    async def lookup(
        self, provider: str, region: str, instance_type: str, price_type: PriceType = PriceType.ON_DEMAND
    ) -> InstanceOffer | None:
        """One instance type's offer from the chain, else from the bundled table (e.g. Lambda labels)."""
        table = await self.offers(provider, region, price_type)
        index = None if table is None else table.find(instance_type)
        if table is not None and index is not None:
            return table.offer(index)
        bundled = await self._bundled_table(provider, region, price_type)
        index = None if bundled is None else bundled.find(instance_type)
        return None if bundled is None or index is None else bundled.offer(index)

    def health(self) -> dict[str, object]:
        """Per live source: enabled, last success/failure, last error, as_of and age of its data."""
        now = self._clock()
        store_down = self._store is not None and not self._store.healthy
        return {
            "status": ComponentStatus.DEGRADED
            if store_down
            else (ComponentStatus.OK if self._live else ComponentStatus.EMBEDDED),
            "live_enabled": bool(self._live),
            "store": None
            if self._store is None
            else {"name": self._store.name, "healthy": bool(self._store.healthy)},
            "ttl_s": {
                "on_demand": self.policy.ttl_s(PriceType.ON_DEMAND),
                "spot": self.policy.ttl_s(PriceType.SPOT),
            },
            "sources": {provider: status.as_dict(now) for provider, status in sorted(self.statuses.items())},
            "refreshing": sorted(self._flights.keys()),
        }

    async def aclose(self) -> None:
        """Cancel background fetches and close the live clients."""
        await self._flights.aclose()
        for source in self._live.values():
            await source.aclose()


class _EmptyAnswerError(CarbonOptimizerError):
    def __init__(self, provider: str, region: str) -> None:
        super().__init__(f"{provider} returned no prices for {region}")
        self.message = f"{provider} returned no prices for {region}"


async def store_table(
    store: KeyValueStore, table: OfferTable, fetched_at: datetime, policy: CachePolicy
) -> None:
    """Write a successful live table under its cache key, kept for the retention period."""
    key = cache_key(table.provider, table.region, table.price_type)
    await store.set(key, encode_table(table, fetched_at), policy.retention_s)
