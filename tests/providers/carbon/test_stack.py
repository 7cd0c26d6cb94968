"""Composition of the carbon stack: registered sources, per-zone routes, the runtime's store."""

from __future__ import annotations

import httpx

from carbon_optimizer.providers.carbon.stack import SOURCE_BUILDERS, build_carbon_stack
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import CarbonChainSettings, ElectricityMapsSettings, Settings
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
