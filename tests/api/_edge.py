"""A small app with the production edge layers, in the order `create_app` lists them.

The security and rate-limit tests exercise those layers without the data stacks behind them;
`tiny_edge(app, settings)` gives a bare FastAPI app the same auth, CORS, headers and limiter.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from carbon_optimizer.api.middleware import BodyReadMiddleware
from carbon_optimizer.api.ratelimit import RateLimiting
from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyMiddleware,
    ApiKeyStore,
    SecurityHeadersMiddleware,
    configure_docs,
    cors_middleware,
    document_security,
)
from carbon_optimizer.settings import Settings


def tiny_edge(app: FastAPI, settings: Settings, *, outer: list[Middleware] | None = None) -> FastAPI:
    """Install the edge layers on `app` (`outer` goes outside them, e.g. the access log)."""
    store = ApiKeyStore.from_settings(settings)
    rate = RateLimiting.from_settings(settings)
    app.state.api_key_store = store
    app.state.rate_counter = rate.counter
    docs = configure_docs(app, settings)
    app.user_middleware[:] = [
        *(outer or []),
        Middleware(SecurityHeadersMiddleware, hsts=settings.environment == "production", docs_paths=docs),
        *cors_middleware(settings),
        rate.middleware(store),
        Middleware(ApiKeyMiddleware, store=store, exempt_paths=PROBE_PATHS | docs),
        Middleware(
            BodyReadMiddleware, max_body_bytes=settings.max_body_bytes, timeout_s=settings.edge.body_timeout_s
        ),
    ]
    document_security(app, store, PROBE_PATHS | docs)
    rate.document(app)
    return app
