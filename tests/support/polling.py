"""Waiting in tests for what a background task reaches (it signals nothing a test could await)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], object], within_s: float, interval_s: float = 0.01) -> None:
    """Return once `predicate()` holds; fail with TimeoutError after `within_s` (no fixed sleep)."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval_s)
