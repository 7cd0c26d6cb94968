"""Azure Retail Prices API client (no auth): Linux pay-as-you-go and spot VM prices per region.

Why these rules (docs/data-sources.md §2.2): the API returns every meter of a SKU — Windows,
Low Priority, Spot and Linux items, sometimes several Linux items with different
`effectiveStartDate` — so the Linux on-demand price is what is left after dropping Windows and
Low Priority items, an item whose `skuName`/`meterName` ends " Spot" is the spot price, and among
several items the newest `effectiveStartDate` not in the future wins (Karpenter keeps whichever
came last, which our data README shows can be stale). Only "1 Hour" units are hourly prices.
One query per region returns both price types, so it is memoised briefly and shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import MalformedUpstreamResponse

from ._common import (
    HttpPolicy,
    Memo,
    as_of_today,
    check_region,
    expect_list,
    expect_mapping,
    get_json,
    log,
    utc_now,
)
from ._specs import UNKNOWN, SpecIndex

API_VERSION = "2023-01-01-preview"
UPSTREAM = "azure"
MAX_PAGES = 200  # a region is ~4K items (5 pages of 1,000); a runaway NextPageLink loop stops here
_BASE_FILTER = (
    "priceType eq 'Consumption' and currencyCode eq 'USD' and serviceFamily eq 'Compute' "
    "and serviceName eq 'Virtual Machines'"
)
# A cheap, ubiquitous SKU whose items list every public region (used to discover regions).
_DISCOVERY_SKU = "Standard_D2s_v5"


@dataclass(frozen=True, slots=True)
class _Candidate:
    price: float
    effective: datetime
    primary: bool


def classify(item: Mapping[str, object]) -> PriceType | None:
    """Which hourly Linux price an item is (None: Windows, Low Priority, reservation or not hourly)."""
    if item.get("type", item.get("priceType")) != "Consumption":
        return None
    if item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD":
        return None
    product = str(item.get("productName", ""))
    sku = str(item.get("skuName", ""))
    meter = str(item.get("meterName", ""))
    if "Windows" in product or sku.endswith("Low Priority") or meter.endswith("Low Priority"):
        return None
    if sku.endswith(" Spot") or meter.endswith(" Spot"):
        return PriceType.SPOT
    return PriceType.ON_DEMAND


def _parse_time(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Azure writes "2024-03-01T00:00:00Z"; a time without offset is UTC as well.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def select_prices(items: Sequence[Mapping[str, object]], now: datetime) -> dict[PriceType, dict[str, float]]:
    """Per price type, the price of each `armSkuName`: newest effective item, primary meter first."""
    best: dict[PriceType, dict[str, _Candidate]] = {PriceType.ON_DEMAND: {}, PriceType.SPOT: {}}
    for item in items:
        kind = classify(item)
        if kind is None:
            continue
        name = item.get("armSkuName")
        price = item.get("retailPrice", item.get("unitPrice"))
        if not isinstance(name, str) or not name.startswith("Standard_"):
            continue  # dedicated hosts and Basic_* meters are not VM sizes one can place on
        if not isinstance(price, int | float) or isinstance(price, bool) or price <= 0:
            continue  # zero-priced placeholder meters
        tier = item.get("tierMinimumUnits", 0)
        if isinstance(tier, int | float) and tier != 0:
            continue  # volume tiers are not the list price
        effective = _parse_time(item.get("effectiveStartDate"))
        if effective is None or effective > now:
            continue
        candidate = _Candidate(float(price), effective, bool(item.get("isPrimaryMeterRegion", True)))
        current = best[kind].get(name)
        # Newest effective date, then the primary meter region, then (a tie the API should not
        # produce) the higher price: deterministic whatever the item order, and never optimistic.
        rank = (candidate.effective, candidate.primary, candidate.price)
        if current is None or rank > (current.effective, current.primary, current.price):
            best[kind][name] = candidate
    return {kind: {name: c.price for name, c in by_name.items()} for kind, by_name in best.items()}


class AzureRetailPrices:
    """`PriceProvider` over the Azure Retail Prices API."""

    name = UPSTREAM

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str = "https://prices.azure.com/api/retail/prices",
        specs: SpecIndex | None = None,
        policy: HttpPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        memo_ttl_s: float = 120.0,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._host = urlsplit(base_url).hostname
        self._specs = specs or SpecIndex(None)
        self._policy = policy or HttpPolicy()
        self._clock = clock
        self._memo: Memo[str, tuple[datetime, dict[PriceType, dict[str, float]]]] = Memo(memo_ttl_s)

    def supports(self, price_type: PriceType) -> bool:
        """Azure publishes on-demand and spot prices."""
        return price_type in (PriceType.ON_DEMAND, PriceType.SPOT)

    async def _items(self, odata_filter: str, endpoint: str) -> list[Mapping[str, object]]:
        """Every item of a filtered query, following NextPageLink on the API's own host."""
        url: str | None = self._base_url
        params: dict[str, str | int] | None = {"api-version": API_VERSION, "$filter": odata_filter}
        items: list[Mapping[str, object]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return items
            page = expect_mapping(
                await get_json(
                    self._http, url, upstream=UPSTREAM, endpoint=endpoint, policy=self._policy, params=params
                ),
                UPSTREAM,
                "page",
            )
            for raw in expect_list(page.get("Items", []), UPSTREAM, "Items"):
                items.append(expect_mapping(raw, UPSTREAM, "item"))
            nxt = page.get("NextPageLink")
            if not nxt:
                return items
            if not isinstance(nxt, str) or urlsplit(nxt).hostname != self._host:  # ":443" is fine
                raise MalformedUpstreamResponse(
                    "azure: NextPageLink points off the API host", source=UPSTREAM
                )
            url, params = nxt, None  # the link carries the filter and $skip
        raise MalformedUpstreamResponse(f"azure: more than {MAX_PAGES} pages", source=UPSTREAM)

    async def _fetch_region(self, region: str) -> tuple[datetime, dict[PriceType, dict[str, float]]]:
        items = await self._items(f"{_BASE_FILTER} and armRegionName eq '{region}'", "retail_prices")
        now = self._clock()
        prices = select_prices(items, now)
        log.info(
            "azure %s: %d items -> %d on-demand, %d spot prices",
            region,
            len(items),
            len(prices[PriceType.ON_DEMAND]),
            len(prices[PriceType.SPOT]),
        )
        return now, prices

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Live Linux prices of one Azure region (sizes joined from the bundled catalog)."""
        if provider != UPSTREAM or not self.supports(price_type):
            return None
        check_region(UPSTREAM, region)
        fetched_at, prices = await self._memo.get(region, lambda: self._fetch_region(region))
        by_name = prices[price_type]
        if not by_name:
            return None
        specs = await self._specs.for_region(UPSTREAM, region)
        as_of = as_of_today(fetched_at)
        offers = []
        for name in sorted(by_name):
            spec = specs.get(name) or UNKNOWN
            offers.append(spec.live_offer(UPSTREAM, region, name, by_name[name], price_type, as_of))
        return OfferTable.from_offers(UPSTREAM, region, price_type, offers, fetched_at=fetched_at)

    async def regions(self) -> list[str]:
        """Every region with a Linux price for a ubiquitous SKU (one small query)."""
        items = await self._items(f"{_BASE_FILTER} and armSkuName eq '{_DISCOVERY_SKU}'", "regions")
        found = {
            str(item["armRegionName"])
            for item in items
            if isinstance(item.get("armRegionName"), str) and classify(item) is not None
        }
        return sorted(r for r in found if r)

    async def aclose(self) -> None:
        """Nothing to close: the shared httpx client belongs to the caller."""
        self._memo.clear()
