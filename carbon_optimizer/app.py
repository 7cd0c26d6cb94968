"""App factory: the single composition root.

`create_app()` builds a FastAPI app; its lifespan builds the per-worker clients (one
`httpx.AsyncClient`, the cache store, the data stacks) and closes them in reverse order. Nothing
connects at import time, so gunicorn can fork safely. Tests pass `settings` and `overrides`
(hand-written fakes for providers, a fixed clock) instead of patching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

from carbon_optimizer import __version__
from carbon_optimizer.api.errors import install_error_handlers
from carbon_optimizer.api.middleware import RequestEdgeMiddleware
from carbon_optimizer.api.ratelimit import install_rate_limit
from carbon_optimizer.api.routes import catalog, health, optimize
from carbon_optimizer.api.security import PROBE_PATHS, install_security
from carbon_optimizer.api.state import AppState
from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.logging_config import AccessLogMiddleware
from carbon_optimizer.providers.base import CarbonIntensityProvider, PriceProvider
from carbon_optimizer.providers.bundled import load_region_catalog
from carbon_optimizer.providers.offline_carbon import OfflineCarbonProvider
from carbon_optimizer.providers.price_catalog import BundledPriceProvider
from carbon_optimizer.providers.prices.stack import build_price_stack
from carbon_optimizer.service import OptimizerService, utc_now
from carbon_optimizer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppOverrides:
    """Test seams: replace a data source or the clock without touching the network."""

    carbon: CarbonIntensityProvider | None = None
    prices: PriceProvider | None = None
    clock: Callable[[], datetime] | None = None


def _http_client(settings: Settings) -> httpx.AsyncClient:
    em = settings.electricitymaps
    return httpx.AsyncClient(
        timeout=httpx.Timeout(em.read_timeout_s, connect=em.connect_timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"user-agent": f"carbon-optimizer/{__version__}"},
    )


@asynccontextmanager
async def runtime(settings: Settings, overrides: AppOverrides | None = None) -> AsyncIterator[AppState]:
    """Build every per-process component (clients, caches, data stacks, service); close in reverse.

    Used by the app lifespan (once per worker) and by the CLI's in-process `plan`, so both run the
    very same stack.
    """
    overrides = overrides or AppOverrides()
    async with AsyncExitStack() as stack:
        started = time.monotonic()
        http = await stack.enter_async_context(_http_client(settings))
        catalog = load_region_catalog()
        offline = OfflineCarbonProvider()
        bundled = BundledPriceProvider()
        health_reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        readiness: list[Callable[[], Awaitable[bool]]] = []
        carbon: CarbonIntensityProvider = overrides.carbon or offline

        # Prices: cache → live APIs (when enabled and credentialed) → bundled tables.
        # store=None in embedded mode means the local file cache `prices refresh` writes.
        price_stack = await build_price_stack(settings, http=http, bundled=bundled, store=None)
        stack.push_async_callback(price_stack.aclose)
        prices: PriceProvider = overrides.prices or price_stack.provider
        health_reporters["prices"] = price_stack.health

        service = OptimizerService(
            catalog=catalog,
            carbon=carbon,
            prices=prices,
            fallback_carbon=offline,
            fallback_prices=bundled,
            max_window=timedelta(days=settings.max_window_days),
            onprem_pue=settings.onprem_pue,
            clock=overrides.clock or utc_now,
        )
        state = AppState(
            settings=settings,
            service=service,
            catalog=catalog,
            bundled_prices=bundled,
            started_at=started,
            health_reporters=health_reporters,
            readiness_checks=readiness,
        )
        health_reporters.setdefault("carbon", lambda: {"status": "embedded", "source": "bundled"})
        health_reporters.setdefault("cache", lambda: {"status": "embedded", "backend": "memory"})
        # Warm the bundled data now so the first request and /readyz see it loaded.
        now = service.clock()
        await offline.series("DE", now, now + timedelta(hours=1))
        await bundled.offers("aws", "us-east-1", PriceType.ON_DEMAND)
        state.ready = True
        log.info("carbon-optimizer ready in %.2f s", time.monotonic() - started)
        try:
            yield state
        finally:
            state.ready = False


def _lifespan(settings: Settings, overrides: AppOverrides) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime(settings, overrides) as state:
            app.state.co = state
            yield

    return lifespan


def create_app(settings: Settings | None = None, overrides: AppOverrides | None = None) -> FastAPI:
    """Build the ASGI app (gunicorn/uvicorn call this as a factory)."""
    settings = settings or Settings()
    overrides = overrides or AppOverrides()
    app = FastAPI(
        title="carbon-optimizer",
        version=__version__,
        description=(
            "Ranks (location, start time) placements of a compute workload by carbon and price, "
            "explains its answer and keeps answering when data sources fail. Carbon intensity data: "
            "Electricity Maps (electricitymaps.com), 2023 hourly datasets, ODbL."
        ),
        lifespan=_lifespan(settings, overrides),
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    install_error_handlers(app)
    app.include_router(optimize.router)
    app.include_router(catalog.router)
    app.include_router(health.router)
    # Security layer (issue 6), installed before the instrumentator so 401/429 are counted too.
    # Resulting order, outermost first: access log → request edge → metrics → security headers →
    # CORS → rate limit → API-key auth → routes (see api/security.py).
    install_security(app, settings)
    install_rate_limit(app, settings)
    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=False
    )
    app.add_middleware(RequestEdgeMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, skip_paths=PROBE_PATHS)
    return app
