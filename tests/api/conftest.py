from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.settings import Settings
from tests.fakes import fixed_clock

ClientFactory = Callable[..., Any]


@asynccontextmanager
async def make_client(
    settings: Settings | None = None, overrides: AppOverrides | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings or Settings(_env_file=None), overrides or AppOverrides(clock=fixed_clock()))
    # Shutdown may wait for the ledger's start-up migration to finish (up to 10 s, docs/ledger.md);
    # asgi-lifespan's default 5 s would cut that short on a loaded machine.
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The embedded default (bundled data) with a fixed clock."""
    async with make_client() as c:
        yield c


@pytest.fixture
def client_factory() -> ClientFactory:
    return make_client
