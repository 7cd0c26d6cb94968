"""Builders of data stacks for tests and benches that drive a stack without the whole app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx

from carbon_optimizer.providers.carbon.base import BundledSeries
from carbon_optimizer.providers.carbon.stack import CarbonStack, build_carbon_stack
from carbon_optimizer.providers.store import build_store
from carbon_optimizer.settings import Settings


@asynccontextmanager
async def carbon_stack(
    settings: Settings,
    offline: BundledSeries,
    *,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[CarbonStack]:
    """The carbon stack as `app.runtime` composes it (store from the settings), closed at the end.

    Each call is one worker: its own store client and (without `http`) its own HTTP pool.
    """
    store = build_store(settings.redis)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as own_http:
        stack = await build_carbon_stack(
            settings, http=http or own_http, offline=offline, store=store, clock=clock
        )
        try:
            yield stack
        finally:
            await stack.aclose()
            if store is not None:
                await store.aclose()
