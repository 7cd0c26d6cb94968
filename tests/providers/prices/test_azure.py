"""Azure Retail Prices client against respx fixtures in the documented page shape."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import MalformedUpstreamResponse, ProviderRateLimited, ProviderUnavailable
from carbon_optimizer.providers.prices._common import HttpPolicy
from carbon_optimizer.providers.prices._specs import SpecIndex
from carbon_optimizer.providers.prices.azure import AzureRetailPrices, classify, select_prices

from .conftest import Clock, FakeBundled, load, offer

BASE = "https://prices.azure.com/api/retail/prices"
FAST = HttpPolicy(timeout_s=1.0, max_retries=1, backoff_base_s=0.0)


def _two_pages(router: respx.Router) -> respx.Route:
    page2 = router.get(url__regex=r".*\$skip=1000.*").mock(
        return_value=httpx.Response(200, json=load("azure_page2.json"))
    )
    router.get(BASE).mock(return_value=httpx.Response(200, json=load("azure_page1.json")))
    return page2


def _bundled() -> FakeBundled:
    return FakeBundled(
        [
            offer("azure", "eastus", "Standard_D8s_v5", 0.3, vcpus=8, memory=32.0),
            offer(
                "azure",
                "eastus",
                "Standard_NC24ads_A100_v4",
                3.0,
                vcpus=24,
                memory=220.0,
                gpus=1,
                model="A100-80GB",
            ),
        ]
    )


async def test_two_pages_linux_on_demand_newest_date_and_spot(
    router: respx.Router, http: httpx.AsyncClient, clock: Clock
) -> None:
    page2 = _two_pages(router)
    azure = AzureRetailPrices(http, specs=SpecIndex(_bundled()), policy=FAST, clock=clock)

    on_demand = await azure.offers("azure", "eastus", PriceType.ON_DEMAND)
    spot = await azure.offers("azure", "eastus", PriceType.SPOT)

    assert on_demand is not None
    assert spot is not None
    assert page2.call_count == 1
    # Windows, Low Priority, Spot, reservation, 1/Month, future-dated, zero-priced and dedicated-host
    # items are all dropped; of two Linux items for one SKU the newer (2024-05-01) wins.
    assert on_demand.instance_types == ("Standard_D8s_v5", "Standard_E8s_v5", "Standard_NC24ads_A100_v4")
    assert on_demand.offer(on_demand.find("Standard_D8s_v5") or 0).price_usd_per_hour == 0.384
    nc = on_demand.offer(on_demand.find("Standard_NC24ads_A100_v4") or 0)
    assert (nc.price_usd_per_hour, nc.vcpus, nc.memory_gib, nc.gpu_count, nc.gpu_model) == (
        3.673,
        24,
        220.0,
        1,
        "A100-80GB",
    )
    assert nc.source == "live:azure"
    assert nc.as_of == clock.now.date()
    assert nc.currency == "USD"
    e8 = on_demand.offer(on_demand.find("Standard_E8s_v5") or 0)
    assert e8.vcpus is None  # not in the bundled catalog: size unknown, never guessed
    assert spot.instance_types == ("Standard_D8s_v5",)
    assert spot.offer(0).price_usd_per_hour == 0.0768
    assert spot.offer(0).vcpus == 8  # joined from the on-demand bundled row


async def test_query_carries_api_version_and_region_filter(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    _two_pages(router)
    azure = AzureRetailPrices(http, policy=FAST)
    await azure.offers("azure", "eastus", PriceType.ON_DEMAND)
    first = router.calls[0].request
    assert first.url.params["api-version"] == "2023-01-01-preview"
    odata = first.url.params["$filter"]
    assert "priceType eq 'Consumption'" in odata
    assert "serviceName eq 'Virtual Machines'" in odata
    assert "armRegionName eq 'eastus'" in odata


async def test_region_names_cannot_inject_into_the_filter(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    azure = AzureRetailPrices(http, policy=FAST)
    with pytest.raises(Exception, match="valid azure region"):
        await azure.offers("azure", "eastus' or priceType eq 'Reservation", PriceType.ON_DEMAND)
    assert not router.calls


async def test_next_page_link_to_another_host_is_refused(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    page = load("azure_page1.json")
    page["NextPageLink"] = "https://evil.example/api/retail/prices?$skip=1000"
    router.get(BASE).mock(return_value=httpx.Response(200, json=page))
    with pytest.raises(MalformedUpstreamResponse):
        await AzureRetailPrices(http, policy=FAST).offers("azure", "eastus", PriceType.ON_DEMAND)


async def test_regions_are_discovered_from_linux_items(router: respx.Router, http: httpx.AsyncClient) -> None:
    route = router.get(BASE).mock(return_value=httpx.Response(200, json=load("azure_regions.json")))
    regions = await AzureRetailPrices(http, policy=FAST).regions()
    assert regions == ["eastus", "swedencentral", "westeurope"]
    assert "armSkuName eq 'Standard_D2s_v5'" in route.calls[0].request.url.params["$filter"]


async def test_429_is_retried_then_5xx_becomes_unavailable(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    router.get(BASE).mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after": "0"}),
            httpx.Response(200, json={"Items": [], "NextPageLink": None}),
        ]
    )
    azure = AzureRetailPrices(http, policy=FAST)
    assert await azure.offers("azure", "eastus", PriceType.ON_DEMAND) is None  # empty: nothing to offer

    router.routes.clear()
    router.get(BASE).mock(return_value=httpx.Response(503))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await AzureRetailPrices(http, policy=FAST).offers("azure", "westeurope", PriceType.ON_DEMAND)


async def test_long_retry_after_is_not_slept_on(router: respx.Router, http: httpx.AsyncClient) -> None:
    router.get(BASE).mock(return_value=httpx.Response(429, headers={"retry-after": "3600"}))
    with pytest.raises(ProviderRateLimited) as caught:
        await AzureRetailPrices(http, policy=FAST).offers("azure", "eastus", PriceType.ON_DEMAND)
    assert caught.value.retry_after_s == 3600
    assert len(router.calls) == 1


def test_classify_rules() -> None:
    base = {"type": "Consumption", "unitOfMeasure": "1 Hour", "productName": "Virtual Machines Dsv5 Series"}
    assert classify({**base, "skuName": "D8s v5", "meterName": "D8s v5"}) is PriceType.ON_DEMAND
    assert classify({**base, "skuName": "D8s v5 Spot", "meterName": "D8s v5 Spot"}) is PriceType.SPOT
    assert classify({**base, "skuName": "D8s v5 Low Priority", "meterName": "D8s v5 Low Priority"}) is None
    assert (
        classify({**base, "productName": "Virtual Machines Dsv5 Series Windows", "skuName": "D8s v5"}) is None
    )
    assert classify({**base, "type": "Reservation", "skuName": "D8s v5"}) is None
    assert classify({**base, "unitOfMeasure": "1/Month", "skuName": "D8s v5"}) is None


@settings(max_examples=60, deadline=None)
@given(
    dates=st.lists(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)), min_size=1, max_size=6),
    seed=st.randoms(use_true_random=False),
)
def test_newest_effective_item_wins_in_any_order(dates: list[date], seed: random.Random) -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    items = [
        {
            "type": "Consumption",
            "unitOfMeasure": "1 Hour",
            "productName": "Virtual Machines Dsv5 Series",
            "skuName": "D8s v5",
            "meterName": "D8s v5",
            "armSkuName": "Standard_D8s_v5",
            "retailPrice": 1.0 + i,
            "effectiveStartDate": f"{d.isoformat()}T00:00:00Z",
        }
        for i, d in enumerate(dates)
    ]
    past = [(d, 1.0 + i) for i, d in enumerate(dates) if d <= now.date()]
    shuffled = list(items)
    seed.shuffle(shuffled)
    chosen = select_prices(shuffled, now)[PriceType.ON_DEMAND]
    if not past:
        assert chosen == {}
        return
    newest = max(d for d, _ in past)
    # The newest item wins; on a date tie the higher price: the same answer in every order.
    assert chosen == {"Standard_D8s_v5": max(price for d, price in past if d == newest)}
