"""App factory: the single composition root.

`create_app()` builds a FastAPI app; its lifespan builds the per-worker clients (one
`httpx.AsyncClient`, the cache store, the data stacks) and closes them in reverse order. Nothing
connects at import time, so gunicorn can fork safely. Tests pass `settings` and `overrides`
(hand-written fakes for providers, a fixed clock) instead of patching.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.middleware import Middleware

from carbon_optimizer import __version__, kth_form
from carbon_optimizer.api.docs import OPENAPI_URL, document_edge_responses, install_docs, operation_id
from carbon_optimizer.api.edge import EdgeMiddleware, edge_middleware_options
from carbon_optimizer.api.errors import install_error_handlers, problem_response, use_problem_media_type
from carbon_optimizer.api.json_route import DirectRoutes
from carbon_optimizer.api.ratelimit import RateLimiting
from carbon_optimizer.api.result_cache import ResultCache
from carbon_optimizer.api.routes import admin, carbon_aware_sdk, catalog, compare, health, optimize
from carbon_optimizer.api.routes import ledger as ledger_routes
from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyStore,
    configure_docs,
    document_security,
    extend_openapi,
)
from carbon_optimizer.api.state import AppState
from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.forecast_data import load_error_model
from carbon_optimizer.health import ComponentStatus
from carbon_optimizer.ledger.ledger import Ledger, catalog_resolver, open_ledger
from carbon_optimizer.providers.base import CarbonIntensityProvider, PriceProvider
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import ForecastSource, build_carbon_stack
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.prices import build_serverless_chain
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.prices.stack import build_price_stack
from carbon_optimizer.providers.store import CacheStore, FileStore, KeyValueStore, build_store
from carbon_optimizer.service import OptimizerService, utc_now
from carbon_optimizer.settings import Settings, load_settings
from carbon_optimizer.uncertainty_step import UncertaintyStep

log = logging.getLogger(__name__)

_NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@dataclass(frozen=True)
class AppOverrides:
    """Test seams: replace a data source, the HTTP client, the store or the clock.

    `http` is the one client every adapter uses (tests pass `httpx.AsyncClient(transport=
    httpx.MockTransport(...))`, so nothing patches httpx globally); `store` replaces the shared
    key-value store (e.g. a `MemoryStore`, or a store that fails on cue). Neither is closed by
    the runtime: whoever made them closes them.
    """

    carbon: CarbonIntensityProvider | None = None
    prices: PriceProvider | None = None
    clock: Callable[[], datetime] | None = None
    http: httpx.AsyncClient | None = None
    store: CacheStore | None = None
    ledger: Ledger | None = None  # replaces the savings ledger (not opened, not closed)


def _http_client(settings: Settings) -> httpx.AsyncClient:
    em = settings.electricitymaps
    return httpx.AsyncClient(
        timeout=httpx.Timeout(em.read_timeout_s, connect=em.connect_timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"user-agent": f"carbon-optimizer/{__version__}"},
    )


@asynccontextmanager
async def runtime(
    settings: Settings, overrides: AppOverrides | None = None, *, ledger: bool = False
) -> AsyncIterator[AppState]:
    """Build every per-process component (clients, caches, data stacks, service); close in reverse.

    The only place that builds the HTTP client, the store and the two stacks. Used by the app
    lifespan (once per worker) and by the CLI (`plan`, `estimate`, `prices refresh`), so all of
    them run the very same stack. `ledger=True` (the server) also opens the savings ledger when
    `database.enabled`; the CLI's one-shot commands never touch the ledger database.
    """
    overrides = overrides or AppOverrides()
    kth_form.choose()  # which np.partition form this CPU runs faster (domain/order_stats.py)
    async with AsyncExitStack() as stack:
        started = time.monotonic()
        http = overrides.http
        if http is None:
            http = await stack.enter_async_context(_http_client(settings))
        # One shared store per process (Redis when configured), for the carbon and the price cache.
        shared_store: CacheStore | None = overrides.store
        if shared_store is None:
            shared_store = build_store(settings.redis)
            if shared_store is not None:
                stack.push_async_callback(shared_store.aclose)
        catalog = load_region_catalog()
        offline = OfflineCarbonProvider()
        bundled = BundledPriceProvider()
        health_reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        readiness: list[Callable[[], Awaitable[bool]]] = []
        # Carbon: Electricity Maps through the two-tier cache when a key is set, else bundled data.
        clock = overrides.clock or utc_now
        carbon_stack = await build_carbon_stack(
            settings, http=http, offline=offline, store=shared_store, clock=clock
        )
        stack.push_async_callback(carbon_stack.aclose)
        carbon: CarbonIntensityProvider = overrides.carbon or carbon_stack.provider
        health_reporters["carbon"] = carbon_stack.health
        # Readiness deliberately does not follow Redis: every replica shares it, so failing readiness
        # on a Redis outage would take the whole fleet out of rotation while each pod still answers
        # from its in-process tier and bundled data. /health reports the degraded cache instead.

        # Prices: cache → live APIs (when enabled and credentialed) → bundled tables. They share the
        # store; without one (embedded) the local file cache that `prices refresh` writes.
        price_backend: KeyValueStore = (
            shared_store if shared_store is not None else FileStore(settings.pricing.file_cache_dir)
        )
        price_stack = await build_price_stack(settings, http=http, bundled=bundled, store=price_backend)
        health_reporters["cache"] = _cache_health(carbon_stack.health, shared_store)
        health_reporters["bundled_data"] = _bundled_data_health(bundled)
        stack.push_async_callback(price_stack.aclose)
        prices: PriceProvider = overrides.prices or price_stack.provider
        health_reporters["prices"] = price_stack.health

        service = OptimizerService(
            catalog=catalog,
            carbon=carbon,
            prices=prices,
            fallback_prices=bundled,
            max_window=timedelta(days=settings.max_window_days),
            onprem_pue=settings.onprem_pue,
            clock=clock,
            uncertainty=UncertaintyStep(
                load_error_model(), carbon_stack.forecast.band if carbon_stack.forecast else None
            ),
            fitted_on=_fitted_on(carbon_stack.forecast),
        )
        # The savings ledger (issue 15): engine, repository, write queue and reconciler, entered
        # last so it closes first (its queue flushes while the carbon stack still answers).
        savings_ledger = overrides.ledger
        if savings_ledger is None and ledger and settings.database.enabled:
            savings_ledger = await stack.enter_async_context(
                _open_ledger(settings, service, wait_for_live=bool(carbon_stack.caches))
            )
        if savings_ledger is not None:
            health_reporters["ledger"] = savings_ledger.health
        state = AppState(
            settings=settings,
            http=http,
            price_store=price_backend,
            service=service,
            catalog=catalog,
            bundled_prices=bundled,
            started_at=started,
            health_reporters=health_reporters,
            readiness_checks=readiness,
            result_cache=ResultCache(
                max_entries=settings.result_cache_entries if settings.result_cache_ttl_s > 0 else 0,
                ttl_s=settings.result_cache_ttl_s,
                max_bytes=settings.edge.result_cache_max_bytes,
            ),
            # Serverless prices share the one HTTP client and the one store.
            serverless_prices=build_serverless_chain(settings, http=http, store=shared_store),
            ledger=savings_ledger,
        )
        health_reporters.setdefault(
            "carbon", lambda: {"status": ComponentStatus.EMBEDDED, "source": "bundled"}
        )
        # Warm the bundled data now so the first request and /readyz see it loaded.
        now = service.clock()
        await offline.series("DE", now, now + timedelta(hours=1))
        await bundled.offers("aws", "us-east-1", PriceType.ON_DEMAND)
        state.readiness.ready = True
        log.info("carbon-optimizer ready in %.2f s", time.monotonic() - started)
        try:
            yield state
        finally:
            state.readiness.ready = False


def _open_ledger(
    settings: Settings, service: OptimizerService, *, wait_for_live: bool
) -> AbstractAsyncContextManager[Ledger]:
    """The savings ledger over the carbon provider the service ranks with.

    The reconciler reads realised intensity through the same `CarbonIntensityProvider` (the
    carbon chain: live history through the cache when a source is configured, the bundled data
    otherwise). With a live source configured, a window the chain could only paint from bundled
    data is retried until the last attempt (`wait_for_live`), so an outage delays a placement
    instead of settling it on climatology.
    """
    return open_ledger(
        settings.database,
        settings.ledger,
        carbon=service.carbon,
        fallback=None,
        resolver=catalog_resolver(service.catalog),
        clock=service.clock,
        signal=f"location-based average, {settings.electricitymaps.emission_factor_type}",
        wait_for_live=wait_for_live,
    )


def _fitted_on(forecast: ForecastSource | None) -> Callable[[str], str | None] | None:
    """Zone → the history our forecaster's current fit used (`live`, `mixed`, `replay`)."""
    if forecast is None:
        return None

    def fitted_on(zone: str) -> str | None:
        band = forecast.band(zone)
        return band.history if band is not None else None

    return fitted_on


def _cache_health(
    carbon_health: Callable[[], dict[str, Any]], shared: KeyValueStore | None
) -> Callable[[], dict[str, Any]]:
    """Reporter for the shared cache: the carbon cache's view, else the price store's, else embedded."""

    def report() -> dict[str, Any]:
        cache = carbon_health().get("cache")
        if isinstance(cache, dict) and cache.get("backend") not in (None, "none"):
            return cache
        if shared is not None:
            status = ComponentStatus.OK if shared.healthy else ComponentStatus.DEGRADED
            return {"backend": shared.name, "status": status}
        return {"backend": "memory", "status": ComponentStatus.EMBEDDED}

    return report


def _bundled_data_health(bundled: BundledPriceProvider) -> Callable[[], dict[str, Any]]:
    """Reporter for the bundled fallback data: what it is and how old the price tables are."""
    summary: dict[str, Any] = {}

    def report() -> dict[str, Any]:
        if not summary:  # computed once, on the first /health call, never on the request path
            today = datetime.now(UTC).date()
            prices: dict[str, Any] = {}
            for provider in ("aws", "azure", "gcp", "lambda"):
                newest = bundled.newest_as_of(provider)
                prices[provider] = {
                    "newest_as_of": newest.isoformat() if newest else None,
                    "age_days": (today - newest).days if newest else None,
                }
            summary.update(
                status=ComponentStatus.OK,
                carbon="Electricity Maps hourly 2023 (19 zones, replayed) + yearly averages (ODbL)",
                prices=prices,
            )
        return summary

    return report


def _lifespan(
    settings: Settings, overrides: AppOverrides
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # Starlette copies the yielded mapping into every request's `request.state`.
        async with runtime(settings, overrides, ledger=True) as state:
            # Everything built at start-up (catalogs, price tables, bundled series, fits) lives as
            # long as the worker: move it out of the collector's reach, so the old-generation
            # collections a busy worker triggers scan only what requests left behind (they took
            # ~0.1 s each over the whole heap and set the p99 under load).
            gc.collect()
            gc.freeze()
            try:
                yield {"co": state}
            finally:
                gc.unfreeze()  # collectable again once the app stops (tests start many apps)

    return lifespan


def create_app(settings: Settings | None = None, overrides: AppOverrides | None = None) -> FastAPI:
    """Build the ASGI app (gunicorn/uvicorn call this as a factory)."""
    settings = settings or load_settings()
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
        docs_url=None,  # served from the package by install_docs (no CDN)
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        generate_unique_id_function=operation_id,
        # FastAPI's native OpenTelemetry export needs an OTel SDK provider, which this service
        # never installs (only `opentelemetry-api` is in the lock): off, so FastAPI stops asking
        # the global providers whether one appeared on every request (~5 µs each, issue 12).
        telemetry=_NO_FASTAPI_TELEMETRY,
    )
    # First, so POST /v1/optimize matches at the first route after FastAPI's /openapi.json
    # (api/routes/optimize.py); the docs routes are not in the schema, so its order is unchanged.
    optimize.install(app)
    if settings.docs_enabled:
        install_docs(app)
    install_error_handlers(app)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.include_router(catalog.router)
    app.include_router(health.router)
    ledger_routes.install(app)
    app.include_router(carbon_aware_sdk.router)
    app.include_router(compare.router)
    app.include_router(admin.router)
    extend_openapi(app, document_edge_responses)
    extend_openapi(app, use_problem_media_type)

    # The request edge (issues 6, 11 and 12): ONE pure-ASGI layer, `EdgeMiddleware` (api/edge.py),
    # doing in one `send` wrapper what nine middleware classes did, in the same order: request id
    # and access log see every response; header-only bounds (414/431/415/413-by-length) come
    # before anything costs work; metrics count 401/429 too; CORS wraps the checks so preflights
    # (no credentials) are answered and 401/429 carry CORS headers; the rate limit wraps the key
    # check so floods of bad keys are throttled; the body is read only after the key was checked.
    # See docs/edge.md.
    key_store = ApiKeyStore.from_settings(settings)
    rate = RateLimiting.from_settings(settings)
    app.state.api_key_store = key_store
    app.state.limiter = rate.limiter
    app.state.rate_counter = rate.counter
    docs_paths = configure_docs(app, settings)
    # Only the /metrics endpoint (multiprocess-aware); the HTTP series are the edge's own.
    Instrumentator().expose(app, endpoint="/metrics", include_in_schema=False)
    app.user_middleware[:] = [
        Middleware(
            EdgeMiddleware,
            **edge_middleware_options(settings, key_store, rate, docs_paths, direct=DirectRoutes(app)),
        )
    ]
    document_security(app, key_store, PROBE_PATHS | docs_paths)
    rate.document(app)
    return app


async def _out_of_range(request: Request, exc: Exception) -> Response:
    """Last line of defence: arithmetic past the calendar's ends is bad input, never a 500."""
    return problem_response(422, "A date or number in the request is outside the supported range.")
