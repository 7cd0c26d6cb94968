"""Live serverless rates: parsers on wire-shape fixtures, fetchers on httpx.MockTransport, the chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from carbon_optimizer.domain.serverless import Option
from carbon_optimizer.providers.prices.serverless_live import (
    ServerlessLiveSources,
    build_serverless_chain,
    fetch_aws_lambda,
    fetch_azure_functions,
    fetch_gcp_cloud_run,
    parse_aws_get_products,
    parse_aws_lambda_offer,
    parse_azure_functions,
    parse_gcp_cloud_run,
)
from carbon_optimizer.providers.serverless_prices import LiveRates, ServerlessPriceChain, bundled_prices
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "serverless"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# ----- parsers -----


def test_aws_offer_parser_reads_tiers_and_requests_per_architecture() -> None:
    rates = parse_aws_lambda_offer(load("aws_lambda_offer_us-east-1.json"), "us-east-1")
    x86, arm = rates[Option.LAMBDA_X86], rates[Option.LAMBDA_ARM]
    assert x86.compute["gb_s"] == [(6e9, 0.0000166667), (15e9, 0.000015), (None, 0.0000133334)]
    # Dimensions arrive in any order: sorted by beginRange.
    assert arm.compute["gb_s"] == [(7.5e9, 0.0000133334), (18.75e9, 0.0000120001), (None, 0.0000106667)]
    assert x86.request_price == pytest.approx(2e-7)
    assert arm.request_price == pytest.approx(2e-7)


def test_aws_offer_parser_skips_provisioned_edge_and_other_regions() -> None:
    ohio = parse_aws_lambda_offer(load("aws_lambda_offer_us-east-1.json"), "us-east-2")
    assert ohio[Option.LAMBDA_X86].compute["gb_s"] == [(None, 0.0000199999)]
    assert Option.LAMBDA_ARM not in ohio
    assert parse_aws_lambda_offer(load("aws_lambda_offer_us-east-1.json"), "eu-west-1") == {}


def test_aws_get_products_items_are_json_strings() -> None:
    page = load("aws_lambda_get_products.json")
    assert all(isinstance(item, str) for item in page["PriceList"])
    rates = parse_aws_get_products(page["PriceList"], "us-east-1")
    assert rates[Option.LAMBDA_X86].compute["gb_s"][0] == (6e9, 0.0000166667)
    assert Option.LAMBDA_ARM not in rates


def test_azure_parser_reads_free_grants_from_tier_minimums() -> None:
    items = (
        load("azure_functions_eastus_page1.json")["Items"]
        + load("azure_functions_eastus_page2.json")["Items"]
    )
    rates = parse_azure_functions(items, "eastus")
    consumption, flex = rates[Option.AZURE_CONSUMPTION], rates[Option.AZURE_FLEX]
    assert consumption.compute["gb_s"] == [(None, 0.000016)]  # DevTestConsumption item ignored
    assert consumption.free_compute["gb_s"] == 400_000
    assert consumption.request_price == pytest.approx(0.2 / 1e6)  # $0.000002 per unit of "10"
    assert consumption.free_requests == 1_000_000  # 100,000 units of 10
    assert flex.compute["gb_s"] == [(None, 0.000026)]
    assert flex.free_compute["gb_s"] == 100_000
    assert flex.request_price == pytest.approx(0.4 / 1e6)
    assert flex.free_requests == 250_000
    west = parse_azure_functions(items, "westus")
    assert west[Option.AZURE_CONSUMPTION].compute["gb_s"] == [(None, 0.000018)]


def test_gcp_parser_picks_request_based_skus_of_the_region() -> None:
    skus = load("gcp_cloud_run_skus_page1.json")["skus"] + load("gcp_cloud_run_skus_page2.json")["skus"]
    central = parse_gcp_cloud_run(skus, "us-central1")[Option.CLOUD_RUN]
    assert central.compute["vcpu_s"][0][1] == pytest.approx(0.000024)
    assert central.compute["gib_s"][0][1] == pytest.approx(0.0000025)
    assert [bound for bound, _ in central.compute["vcpu_s"]] == [None]
    assert central.free_compute == {"vcpu_s": 180_000, "gib_s": 360_000}
    assert central.request_price == pytest.approx(4e-7)
    assert central.free_requests == 2_000_000
    london = parse_gcp_cloud_run(skus, "europe-west2")[Option.CLOUD_RUN]
    assert london.compute["vcpu_s"][0][1] == pytest.approx(0.0000336)
    assert parse_gcp_cloud_run(skus, "asia-east1") == {}


# ----- fetchers (network boundary mocked) -----


def _transport(routes: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        for needle, body in routes.items():
            if needle in str(request.url):
                return httpx.Response(200, json=body) if not isinstance(body, int) else httpx.Response(body)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


async def test_fetch_aws_gets_the_regional_offer_file() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "/offers/v1.0/aws/AWSLambda/current/us-east-1/index.json": load("aws_lambda_offer_us-east-1.json")
    }
    async with httpx.AsyncClient(transport=_transport(routes, seen)) as http:
        rates = await fetch_aws_lambda(http, "us-east-1")
    assert rates[Option.LAMBDA_X86].compute["gb_s"][0][1] == 0.0000166667
    assert seen[0].url.host == "pricing.us-east-1.amazonaws.com"


async def test_fetch_azure_follows_next_page_link_with_the_functions_filter() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "skip=1000": load("azure_functions_eastus_page2.json"),
        "prices": load("azure_functions_eastus_page1.json"),
    }
    async with httpx.AsyncClient(transport=_transport(routes, seen)) as http:
        rates = await fetch_azure_functions(http, "eastus")
    assert len(seen) == 2
    assert "serviceName eq 'Functions'" in seen[0].url.params["$filter"]
    assert "armRegionName eq 'eastus'" in seen[0].url.params["$filter"]
    assert set(rates) == {Option.AZURE_CONSUMPTION, Option.AZURE_FLEX}


async def test_fetch_gcp_pages_with_the_api_key_header() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "pageToken=page-2": load("gcp_cloud_run_skus_page2.json"),
        "/skus": load("gcp_cloud_run_skus_page1.json"),
    }
    async with httpx.AsyncClient(transport=_transport(routes, seen)) as http:
        rates = await fetch_gcp_cloud_run(http, "k-123", "us-central1")
    assert len(seen) == 2
    assert all(r.headers["x-goog-api-key"] == "k-123" for r in seen)
    assert "key" not in seen[0].url.params  # the key travels in a header, never in the URL
    assert rates[Option.CLOUD_RUN].request_price == pytest.approx(4e-7)


# ----- the chain: cache → live → bundled -----


async def test_chain_overlays_live_rates_then_serves_them_from_cache() -> None:
    calls: list[tuple[Option, str]] = []

    async def fetcher(option: Option, region: str) -> LiveRates | None:
        calls.append((option, region))
        return LiveRates(
            option, region, compute={"gb_s": [(None, 0.00002)]}, request_price=3e-7, reference="fake"
        )

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    store = MemoryStore()
    chain = ServerlessPriceChain(store=store, fetchers={"aws": fetcher}, clock=lambda: now)
    prices, warnings = await chain.prices(Option.LAMBDA_X86, "us-east-1")
    assert warnings == []
    assert prices.source == "live:aws"
    assert prices.compute["gb_s"].first == 0.00002
    assert prices.request_price == 3e-7
    assert prices.free_compute == bundled_prices(Option.LAMBDA_X86, "us-east-1").free_compute  # kept
    assert any(i.source == "live:aws" and i.usd == 0.00002 for i in prices.items)
    again, _ = await chain.prices(Option.LAMBDA_X86, "us-east-1")
    assert again.source == "cache:2026-11-30"
    assert again.compute["gb_s"].first == 0.00002
    assert len(calls) == 1


async def test_chain_failure_falls_back_to_bundled_with_a_warning_and_cools_down() -> None:
    calls = 0

    async def broken(option: Option, region: str) -> LiveRates | None:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("down")

    chain = ServerlessPriceChain(fetchers={"azure": broken})
    prices, warnings = await chain.prices(Option.AZURE_FLEX, "eastus")
    assert prices.source.startswith("bundled:")
    assert warnings == ["azure serverless price API failed; bundled prices used"]
    _, warnings = await chain.prices(Option.AZURE_CONSUMPTION, "eastus")
    assert "cooling down" in warnings[0]
    assert calls == 1


async def test_live_sources_share_one_document_per_region() -> None:
    seen: list[httpx.Request] = []
    routes = {"AWSLambda": load("aws_lambda_offer_us-east-1.json")}
    async with httpx.AsyncClient(transport=_transport(routes, seen)) as http:
        sources = ServerlessLiveSources(http, azure=False)
        x86 = await sources.fetchers["aws"](Option.LAMBDA_X86, "us-east-1")
        arm = await sources.fetchers["aws"](Option.LAMBDA_ARM, "us-east-1")
    assert x86 is not None
    assert arm is not None
    assert len(seen) == 1
    assert set(sources.fetchers) == {"aws"}  # no GCP key → no GCP fetcher


async def test_build_chain_is_bundled_only_unless_live() -> None:
    async with httpx.AsyncClient() as http:
        off = build_serverless_chain(Settings(_env_file=None), http=http, store=None)
        on = build_serverless_chain(
            Settings(_env_file=None, pricing={"live": True, "gcp_api_key": "k"}), http=http, store=None
        )
    assert off.fetchers == {}
    assert set(on.fetchers) == {"aws", "azure", "gcp"}
