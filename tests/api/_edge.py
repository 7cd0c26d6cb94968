"""A small app with the production edge, exactly as `create_app` installs it.

The security and rate-limit tests exercise the edge without the data stacks behind it;
`tiny_edge(app, settings)` gives a bare FastAPI app the same `EdgeMiddleware` (request id, access
log, metrics, auth, CORS, headers, limiter, budget, body read) built by the same function.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.middleware import Middleware

from carbon_optimizer.api.edge import EdgeMiddleware, edge_middleware_options
from carbon_optimizer.api.ratelimit import RateLimiting
from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyStore,
    configure_docs,
    document_security,
)
from carbon_optimizer.settings import Settings


def tiny_edge(app: FastAPI, settings: Settings) -> FastAPI:
    """Install the production edge on `app`."""
    store = ApiKeyStore.from_settings(settings)
    rate = RateLimiting.from_settings(settings)
    app.state.api_key_store = store
    app.state.rate_counter = rate.counter
    docs = configure_docs(app, settings)
    app.user_middleware[:] = [
        Middleware(EdgeMiddleware, **edge_middleware_options(settings, store, rate, docs))
    ]
    document_security(app, store, PROBE_PATHS | docs)
    rate.document(app)
    return app


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on `app` in process (real ASGI, no network)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
