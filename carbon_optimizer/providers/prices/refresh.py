"""The refresh job behind `carbon-optimizer prices refresh`: fetch whole catalogs into the cache.

Why a job besides the lazy refresh: a server fetches a region only when someone asks for it, and
the embedded mode never calls price APIs at all; an operator (or a cron job) runs this to fill the
cache — Redis, or the local file cache the embedded server reads — for every region at once. It
runs whatever `pricing.live` says (running it *is* the opt-in), skips providers without
credentials, reports per (provider, region, price type), and writes only successful, non-empty
tables, so a failed run leaves every previously cached price in place.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.metrics import PRICE_DATA_FETCHED
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.store import KeyValueStore
from carbon_optimizer.settings import Settings

from ._common import LivePriceSource, log, safe_message, utc_now
from ._specs import SpecIndex
from .chain import LIVE_PROVIDERS, store_table
from .stack import build_live_sources, policy_from_settings, store_for

Progress = Callable[[str, int, int], None]  # (provider, done, total)


@dataclass(frozen=True, slots=True)
class RefreshItem:
    """Outcome of one (provider, region, price type) fetch."""

    provider: str
    region: str
    price_type: str
    offers: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when a table was fetched and written."""
        return self.error is None


@dataclass(slots=True)
class RefreshReport:
    """What a refresh did: per-item outcomes and the providers it skipped (with why)."""

    started_at: datetime
    finished_at: datetime | None = None
    items: list[RefreshItem] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok_count(self) -> int:
        """Tables fetched and written."""
        return sum(1 for item in self.items if item.ok)

    @property
    def failed_count(self) -> int:
        """Fetches that failed (nothing was written for them)."""
        return sum(1 for item in self.items if not item.ok)

    def summary(self) -> str:
        """One line per provider: written / failed / skipped."""
        lines = []
        for provider in sorted({i.provider for i in self.items} | set(self.skipped)):
            if provider in self.skipped:
                lines.append(f"{provider}: skipped: {self.skipped[provider]}")
                continue
            mine = [i for i in self.items if i.provider == provider]
            ok = [i for i in mine if i.ok]
            line = f"{provider}: {len(ok)}/{len(mine)} tables, {sum(i.offers for i in ok)} prices"
            failed = [i for i in mine if not i.ok]
            if failed:
                first = failed[0]
                line += f"; {len(failed)} failed (e.g. {first.region} {first.price_type}: {first.error})"
            lines.append(line)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (for `--json` output and logs)."""
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "ok": self.ok_count,
            "failed": self.failed_count,
            "skipped": dict(self.skipped),
            "items": [
                {
                    "provider": i.provider,
                    "region": i.region,
                    "price_type": i.price_type,
                    "offers": i.offers,
                    "error": i.error,
                }
                for i in self.items
            ],
        }


def _default_bundled() -> PriceProvider | None:
    """The bundled catalog, for joining sizes into live rows (None if it cannot be loaded)."""
    try:
        module = importlib.import_module("carbon_optimizer.providers.prices.bundled")
        provider: PriceProvider = module.BundledPriceProvider()
    except (ImportError, AttributeError, OSError) as exc:
        log.warning(
            "bundled price catalog unavailable (%s): live rows keep unknown sizes", type(exc).__name__
        )
        return None
    return provider


async def _refresh_provider(
    name: str,
    source: LivePriceSource,
    *,
    store: KeyValueStore,
    settings: Settings,
    regions: Sequence[str] | None,
    report: RefreshReport,
    progress: Progress | None,
    concurrency: int,
    clock: Callable[[], datetime],
) -> None:
    policy = policy_from_settings(settings.pricing)
    try:
        wanted = list(regions) if regions else await source.regions()
    except Exception as exc:  # discovery failed: report it, the other providers carry on
        report.items.append(RefreshItem(name, "*", "-", error=safe_message(exc)))
        log.warning("%s: region discovery failed: %s", name, safe_message(exc))
        return
    units = [(r, t) for r in wanted for t in (PriceType.ON_DEMAND, PriceType.SPOT) if source.supports(t)]
    done = 0
    if progress:
        progress(name, 0, len(units))
    gate = asyncio.Semaphore(concurrency)

    async def one(region: str, price_type: PriceType) -> None:
        nonlocal done
        async with gate:
            try:
                table = await source.offers(name, region, price_type)
            except Exception as exc:  # recorded per item; nothing is written for it
                item = RefreshItem(name, region, price_type.value, error=safe_message(exc))
            else:
                if table is None or not len(table):
                    item = RefreshItem(name, region, price_type.value, error="no prices in the answer")
                else:
                    fetched_at = table.fetched_at or clock()
                    await store_table(store, table, fetched_at, policy)
                    PRICE_DATA_FETCHED.labels(name).set(fetched_at.timestamp())
                    item = RefreshItem(name, region, price_type.value, offers=len(table))
        report.items.append(item)
        done += 1
        if progress:
            progress(name, done, len(units))

    await asyncio.gather(*(one(region, price_type) for region, price_type in units))


async def refresh_prices(
    settings: Settings,
    *,
    http: httpx.AsyncClient,
    store: KeyValueStore,
    providers: Sequence[str] | None,
    progress: Progress | None = None,
    regions: Mapping[str, Sequence[str]] | None = None,
    bundled: PriceProvider | None = None,
    sources: Mapping[str, LivePriceSource] | None = None,
    concurrency: int = 4,
    clock: Callable[[], datetime] = utc_now,
) -> RefreshReport:
    """Fetch the live catalogs of `providers` (default: all) into `store`; never raises for upstreams.

    `regions` limits a provider to some regions (default: every region its API lists); `sources`
    replaces the live clients (tests, or a caller that already built them).
    """
    wanted = tuple(providers) if providers else LIVE_PROVIDERS
    unknown = [p for p in wanted if p not in LIVE_PROVIDERS]
    if unknown:
        raise InvalidInput(
            f"unknown price provider(s): {', '.join(unknown)}; use {', '.join(LIVE_PROVIDERS)}"
        )
    store = store_for(settings, store)  # the same key namespace the server reads
    report = RefreshReport(started_at=clock())
    owned: dict[str, LivePriceSource] = {}
    if sources is None:
        specs = SpecIndex(bundled if bundled is not None else _default_bundled())
        owned, statuses = await build_live_sources(
            settings, http=http, specs=specs, providers=wanted, clock=clock
        )
        active: Mapping[str, LivePriceSource] = owned
        report.skipped = {n: s.skipped_reason or "skipped" for n, s in statuses.items() if not s.enabled}
    else:
        active = {n: s for n, s in sources.items() if n in wanted}
        report.skipped = {n: "no source given" for n in wanted if n not in active}
    try:
        await asyncio.gather(
            *(
                _refresh_provider(
                    name,
                    source,
                    store=store,
                    settings=settings,
                    regions=(regions or {}).get(name),
                    report=report,
                    progress=progress,
                    concurrency=concurrency,
                    clock=clock,
                )
                for name, source in sorted(active.items())
            )
        )
    finally:
        for source in owned.values():
            await source.aclose()
    report.items.sort(key=lambda i: (i.provider, i.region, i.price_type))
    report.finished_at = clock()
    log.info("price refresh: %d tables written, %d failed", report.ok_count, report.failed_count)
    return report
