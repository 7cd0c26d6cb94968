"""Composition of the price chain for the app lifespan and the CLI.

Why a separate module: the app factory (the one composition root) should call one function and
get one object to serve, report on and close; which live sources exist depends on settings and
credentials, and that decision belongs here, next to the clients. With `pricing.live` off (the
embedded default) no live client is even built, so the chain makes zero network calls: cache (if
`prices refresh` filled it) → bundled tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from carbon_optimizer.domain.models import InstanceOffer, PriceType
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.store import FileStore, KeyValueStore, PrefixedStore
from carbon_optimizer.settings import PricingSettings, Settings

from ._common import HttpPolicy, LivePriceSource, SourceStatus, log, utc_now
from ._specs import SpecIndex
from .aws import AwsPriceList, boto3_unavailable_reason, default_client_factory
from .azure import AzureRetailPrices
from .chain import LIVE_PROVIDERS, CachedPriceProvider, CachePolicy
from .gcp import GcpCatalogPrices
from .lambda_cloud import LambdaCloudPrices

ENV = "CARBON_OPTIMIZER_PRICING__"


def policy_from_settings(pricing: PricingSettings) -> CachePolicy:
    """The chain's cache policy from `PricingSettings`."""
    return CachePolicy(
        on_demand_ttl_s=float(pricing.on_demand_ttl_s),
        spot_ttl_s=float(pricing.spot_ttl_s),
        retention_s=float(pricing.cache_retention_s),
        live_wait_s=pricing.live_wait_s,
        failure_cooldown_s=pricing.failure_cooldown_s,
    )


def store_for(settings: Settings, store: KeyValueStore | None) -> KeyValueStore:
    """The given store (Redis), else the local file cache that `prices refresh` writes.

    Keys are namespaced with `redis.key_prefix` (`co:v1:prices:aws:us-east-1:on_demand`) so a
    shared Redis keeps the price tables apart from other data, as the carbon cache does.
    """
    inner = store if store is not None else FileStore(settings.pricing.file_cache_dir)
    return PrefixedStore(inner, settings.redis.key_prefix)


async def build_live_sources(
    settings: Settings,
    *,
    http: httpx.AsyncClient,
    specs: SpecIndex,
    providers: tuple[str, ...] = LIVE_PROVIDERS,
    clock: Callable[[], datetime] = utc_now,
) -> tuple[dict[str, LivePriceSource], dict[str, SourceStatus]]:
    """Live clients for every provider with what it needs; the others get a skip reason."""
    pricing = settings.pricing
    policy = HttpPolicy(timeout_s=pricing.request_timeout_s)
    sources: dict[str, LivePriceSource] = {}
    skipped: dict[str, str] = {}
    if "azure" in providers:
        if pricing.azure_enabled:
            sources["azure"] = AzureRetailPrices(
                http, base_url=pricing.azure_base_url, specs=specs, policy=policy, clock=clock
            )
        else:
            skipped["azure"] = f"disabled ({ENV}AZURE_ENABLED=false)"
    if "lambda" in providers:
        if pricing.lambda_api_key is not None and pricing.lambda_api_key.get_secret_value():
            sources["lambda"] = LambdaCloudPrices(
                http, pricing.lambda_api_key, base_url=pricing.lambda_base_url, policy=policy, clock=clock
            )
        else:
            skipped["lambda"] = f"no API key ({ENV}LAMBDA_API_KEY)"
    if "gcp" in providers:
        if pricing.gcp_api_key is not None and pricing.gcp_api_key.get_secret_value():
            sources["gcp"] = GcpCatalogPrices(
                http,
                pricing.gcp_api_key,
                base_url=pricing.gcp_base_url,
                policy=policy,
                availability=lambda region: specs.listed_types("gcp", region),
                clock=clock,
            )
        else:
            skipped["gcp"] = f"no API key ({ENV}GCP_API_KEY)"
    if "aws" in providers:
        reason = None if pricing.aws_enabled else f"disabled ({ENV}AWS_ENABLED=false)"
        if reason is None:
            reason = await asyncio.to_thread(boto3_unavailable_reason)  # may probe instance metadata
        if reason is None:
            factory = default_client_factory(min(pricing.request_timeout_s, 5.0), pricing.request_timeout_s)
            sources["aws"] = AwsPriceList(client_factory=factory, specs=specs, clock=clock)
        else:
            skipped["aws"] = reason
    statuses = {name: SourceStatus(enabled=True) for name in sources}
    statuses.update({name: SourceStatus(enabled=False, skipped_reason=why) for name, why in skipped.items()})
    return sources, statuses


@dataclass
class PriceStack:
    """What the app serves prices from: the chain, plus health and shutdown."""

    provider: CachedPriceProvider  # a PriceProvider: cache → live (when enabled) → bundled
    store: KeyValueStore | None = None
    sources: dict[str, LivePriceSource] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Cancel background refreshes and close the live clients (not the shared httpx client)."""
        await self.provider.aclose()

    def health(self) -> dict[str, object]:
        """Per source: enabled/skipped, last_success, last_failure, last_error, as_of, age_s."""
        return self.provider.health()

    async def lookup(
        self, provider: str, region: str, instance_type: str, price_type: PriceType = PriceType.ON_DEMAND
    ) -> InstanceOffer | None:
        """One type's offer (chain first, then the bundled table), or None."""
        return await self.provider.lookup(provider, region, instance_type, price_type)


async def build_price_stack(
    settings: Settings,
    *,
    http: httpx.AsyncClient,
    bundled: PriceProvider,
    store: KeyValueStore | None,
    clock: Callable[[], datetime] = utc_now,
) -> PriceStack:
    """Build the chain: cache → live (when `pricing.live` and configured) → bundled."""
    pricing = settings.pricing
    resolved_store = store_for(settings, store)
    if pricing.live:
        specs = SpecIndex(bundled)
        sources, statuses = await build_live_sources(settings, http=http, specs=specs, clock=clock)
    else:
        sources = {}
        reason = f"live prices off ({ENV}LIVE=false): cache and bundled tables only"
        statuses = {name: SourceStatus(enabled=False, skipped_reason=reason) for name in LIVE_PROVIDERS}
    chain = CachedPriceProvider(
        bundled=bundled,
        store=resolved_store,
        live=sources,
        policy=policy_from_settings(pricing),
        statuses=statuses,
        clock=clock,
    )
    log.info(
        "price sources: live=%s; skipped: %s; cache store: %s",
        ",".join(sorted(sources)) or "none",
        "; ".join(f"{n} ({s.skipped_reason})" for n, s in sorted(statuses.items()) if not s.enabled)
        or "none",
        resolved_store.name,
    )
    return PriceStack(provider=chain, store=resolved_store, sources=sources)
