"""A mocked upstream at the network boundary, handed to the code under test as its HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import respx


def mock_client(router: respx.Router) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose every request is answered by `router` (no global patching)."""
    return httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))


@asynccontextmanager
async def mocked_upstream(
    *, assert_all_called: bool = False
) -> AsyncIterator[tuple[respx.Router, httpx.AsyncClient]]:
    """A fresh router and a client over it, closed at the end: `AppOverrides(http=client)`."""
    router = respx.Router(assert_all_called=assert_all_called)
    async with mock_client(router) as client:
        yield router, client
