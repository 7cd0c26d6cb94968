"""Composition of the carbon stack: registered sources, per-zone routes, the runtime's store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
from pydantic import SecretStr

from carbon_optimizer.providers.carbon.base import SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.stack import SOURCE_BUILDERS, build_carbon_stack
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import (
    CarbonChainSettings,
    ElectricityMapsSettings,
    GBIntensitySettings,
    Settings,
    WattTimeSettings,
)
from tests.providers.carbon.test_gb_intensity import Emulator
from tests.support.stub_upstream import FlatOffline


async def test_routes_from_settings_decide_which_sources_a_zone_asks() -> None:
    settings = Settings(
        _env_file=None,
        electricitymaps=ElectricityMapsSettings(api_key="k"),
        carbon_chain=CarbonChainSettings(routes={"DE": [], "*": ["electricitymaps"]}),
    )
    async with httpx.AsyncClient() as http:
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline())
        try:
            assert [s.name for s in stack.provider.route("FR")] == ["electricitymaps"]
            assert stack.provider.route("DE") == ()  # bundled data only for DE
        finally:
            await stack.aclose()


async def test_the_stack_uses_the_store_it_is_given() -> None:
    store = MemoryStore()
    settings = Settings(_env_file=None, electricitymaps=ElectricityMapsSettings(api_key="k"))
    async with httpx.AsyncClient() as http:
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline(), store=store)
        try:
            assert stack.store is store
            assert stack.cache is not None
            assert stack.cache.store is store
        finally:
            await stack.aclose()


async def test_without_credentials_no_source_is_built() -> None:
    settings = Settings(_env_file=None)
    async with httpx.AsyncClient() as http:
        assert all(builder(settings, http) is None for builder in SOURCE_BUILDERS)
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline())
    assert stack.provider.sources == ()
    assert stack.store is None


async def test_watttime_and_gb_are_registered_with_their_own_cache_variants() -> None:
    settings = Settings(
        _env_file=None,
        watttime=WattTimeSettings(username="u", password=SecretStr("p-secret")),
        gb_intensity=GBIntensitySettings(enabled=True),
    )
    async with httpx.AsyncClient() as http:
        built = [b for b in (builder(settings, http) for builder in SOURCE_BUILDERS) if b is not None]
        assert [source.name for source, _ in built] == ["watttime", "carbonintensity-uk"]
        assert all(variant.startswith(source.name) for source, variant in built)
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline())
        try:
            chain = stack.provider
            assert Signal.MARGINAL in chain.signals("US-CAL-CISO")  # WattTime's
            assert chain.signals("GB") == frozenset({Signal.AVERAGE})
            assert [s.name for s in chain.route("GB")] == ["carbonintensity-uk"]
            assert [s.name for s in chain.route("US-CAL-CISO", Signal.MARGINAL)] == ["watttime"]
            request = SeriesRequest(SeriesKind.FORECAST, "GB")
            keys = {cache.key_for(request) for cache in stack.caches}
            assert len(keys) == 2  # the two sources' keys never meet
        finally:
            await stack.aclose()


async def test_the_chain_answers_gb_from_the_gb_source_through_the_seam() -> None:
    now = datetime.now(UTC)
    settings = Settings(_env_file=None, gb_intensity=GBIntensitySettings(enabled=True, max_retries=0))
    async with httpx.AsyncClient(transport=httpx.MockTransport(Emulator(now))) as http:
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline())
        try:
            start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            result = await stack.provider.series("GB", start, start + timedelta(hours=6))
        finally:
            await stack.aclose()
    labels = {run.label for run in result.series.runs}
    assert labels == {"carbonintensity-uk:forecast"}, labels
    assert not np.isnan(result.series.values).any()


async def test_health_reports_every_configured_live_source() -> None:
    settings = Settings(
        _env_file=None,
        watttime=WattTimeSettings(username="u", password=SecretStr("p-secret")),
        gb_intensity=GBIntensitySettings(enabled=True),
    )
    async with httpx.AsyncClient() as http:
        stack = await build_carbon_stack(settings, http=http, offline=FlatOffline())
        try:
            health = stack.health()
        finally:
            await stack.aclose()
    assert health["mode"] == "live"
    assert health["circuit"] == {"watttime": "closed", "carbonintensity-uk": "closed"}
    sources = health["sources"]
    assert isinstance(sources, dict)
    assert sources["electricitymaps"] == {"configured": False}
    assert sources["watttime"]["configured"] is True
    assert "p-secret" not in str(health)
