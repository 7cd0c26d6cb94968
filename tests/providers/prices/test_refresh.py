"""The refresh job: per-item report, progress, skips, and failures that leave the cache alone."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import InvalidInput, ProviderUnavailable
from carbon_optimizer.providers.prices import refresh_prices
from carbon_optimizer.providers.prices.chain import cache_key, decode_table, encode_table
from carbon_optimizer.settings import Settings

from .conftest import NOW, SECRET, Clock, FakeBundled, FakeLive, MemoryKV, live_table, load, offer


def stored(key: str) -> str:
    """Keys in the store carry the `redis.key_prefix` namespace."""
    return "co:v1:" + key


def _settings(**pricing: object) -> Settings:
    return Settings(_env_file=None, pricing=pricing)


def _azure(fail_in: str) -> FakeLive:
    def answer(region: str, price_type: PriceType) -> object:
        if region == fail_in:
            raise ProviderUnavailable("azure retail_prices: HTTP 503", source="azure")
        return live_table("azure", region, {"Standard_D8s_v5": 0.384}, price_type)

    return FakeLive("azure", answer, regions=["eastus", "westeurope"])  # type: ignore[arg-type]


async def test_report_progress_and_partial_failure(
    kv: MemoryKV, clock: Clock, http: httpx.AsyncClient
) -> None:
    progress: list[tuple[str, int, int]] = []
    report = await refresh_prices(
        _settings(),
        http=http,
        store=kv,
        providers=["azure"],
        progress=lambda name, done, total: progress.append((name, done, total)),
        sources={"azure": _azure("westeurope")},
        clock=clock,
    )
    assert (report.ok_count, report.failed_count) == (2, 2)
    assert sorted(kv.data) == [
        stored(cache_key("azure", "eastus", PriceType.ON_DEMAND)),
        stored(cache_key("azure", "eastus", PriceType.SPOT)),
    ]
    assert progress[0] == ("azure", 0, 4)
    assert progress[-1] == ("azure", 4, 4)
    failed = [i for i in report.items if not i.ok]
    assert {i.region for i in failed} == {"westeurope"}
    assert failed[0].error == "azure retail_prices: HTTP 503"
    assert "azure: 2/4 tables" in report.summary()
    assert report.as_dict()["failed"] == 2


async def test_a_failed_refresh_keeps_the_cached_price(
    kv: MemoryKV, clock: Clock, http: httpx.AsyncClient
) -> None:
    key = stored(cache_key("azure", "westeurope", PriceType.ON_DEMAND))
    good = encode_table(live_table("azure", "westeurope", {"Standard_D8s_v5": 0.41}), NOW)
    await kv.set(key, good, 3600)
    await refresh_prices(
        _settings(),
        http=http,
        store=kv,
        providers=["azure"],
        sources={"azure": _azure("westeurope")},
        clock=clock,
    )
    assert kv.data[key] == good


async def test_sources_from_settings_skip_what_has_no_credentials(
    router: respx.Router,
    http: httpx.AsyncClient,
    kv: MemoryKV,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router.get("https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus").mock(
        return_value=httpx.Response(200, json=load("gcp_skus_us_central1.json"))
    )
    router.get("https://cloud.lambda.ai/api/v1/instance-types").mock(
        return_value=httpx.Response(200, json=load("lambda_instance_types.json"))
    )
    bundled = FakeBundled([offer("gcp", "us-central1", "n2-standard-8", 0.388472, vcpus=8, memory=32.0)])
    settings = _settings(gcp_api_key=SECRET, lambda_api_key=SECRET, aws_enabled=False, azure_enabled=False)
    caplog.set_level(logging.DEBUG)

    report = await refresh_prices(
        settings,
        http=http,
        store=kv,
        providers=None,
        regions={"gcp": ["us-central1"]},
        bundled=bundled,
        clock=clock,
    )

    assert report.skipped == {
        "aws": "disabled (CARBON_OPTIMIZER_PRICING__AWS_ENABLED=false)",
        "azure": "disabled (CARBON_OPTIMIZER_PRICING__AZURE_ENABLED=false)",
    }
    assert report.failed_count == 0
    assert report.ok_count == 3
    entry = decode_table(kv.data[stored(cache_key("gcp", "us-central1", PriceType.ON_DEMAND))])
    assert entry is not None
    assert entry.fetched_at == NOW
    n2 = entry.table("us-central1").offer(entry.table("us-central1").find("n2-standard-8") or 0)
    assert (n2.vcpus, n2.memory_gib, n2.price_usd_per_hour, n2.source) == (
        8,
        32.0,
        0.388472,
        "cache:2026-11-24",
    )
    assert "co:v1:prices:lambda:*:on_demand" in kv.data
    assert SECRET not in caplog.text
    assert SECRET not in repr(report.as_dict())


async def test_unknown_provider_is_invalid_input(kv: MemoryKV, http: httpx.AsyncClient) -> None:
    with pytest.raises(InvalidInput, match="oracle"):
        await refresh_prices(_settings(), http=http, store=kv, providers=["oracle"])


async def test_region_discovery_failure_is_reported(kv: MemoryKV, http: httpx.AsyncClient) -> None:
    class NoRegions(FakeLive):
        async def regions(self) -> list[str]:
            raise ProviderUnavailable("azure regions: timed out", source="azure")

    report = await refresh_prices(
        _settings(), http=http, store=kv, providers=["azure"], sources={"azure": NoRegions("azure")}
    )
    assert [(i.region, i.error) for i in report.items] == [("*", "azure regions: timed out")]
    assert not kv.data
