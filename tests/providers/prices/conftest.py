"""Fakes and fixtures for the price tests: respx routers at the network boundary, nothing patched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECRET = "sk-test-DO-NOT-LEAK-1234567890"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Clock:
    """A settable clock (aware UTC)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class MemoryKV:
    """In-memory KeyValueStore fake that records writes (TTL kept, not enforced)."""

    name = "memory-fake"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttls: dict[str, float] = {}
        self.sets: list[str] = []
        self.gets = 0
        self.healthy = True

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = value
        self.ttls[key] = ttl_s
        self.sets.append(key)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


def offer(
    provider: str,
    region: str,
    name: str,
    price: float,
    *,
    vcpus: int | None = 2,
    memory: float | None = 8.0,
    gpus: int = 0,
    model: str | None = None,
    price_type: PriceType = PriceType.ON_DEMAND,
    as_of: date | None = date(2026, 7, 20),
    source: str | None = None,
) -> InstanceOffer:
    return InstanceOffer(
        provider=provider,
        region=region,
        instance_type=name,
        vcpus=vcpus,
        memory_gib=memory,
        gpu_count=gpus,
        gpu_model=model,
        price_usd_per_hour=price,
        price_type=price_type,
        as_of=as_of,
        source=source or (f"bundled:{as_of.isoformat()}" if as_of else "bundled:undated"),
    )


class FakeBundled:
    """A bundled-catalog fake: fixed offers per (provider, region, price type); records calls."""

    name = "bundled"

    def __init__(self, offers: list[InstanceOffer]) -> None:
        self.rows = offers
        self.calls: list[tuple[str, str, PriceType]] = []

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        self.calls.append((provider, region, price_type))
        rows = [
            o
            for o in self.rows
            if o.provider == provider and o.region in (region, "*") and o.price_type is price_type
        ]
        if not rows:
            return None
        return OfferTable.from_offers(provider, region, price_type, rows)


class FakeLive:
    """A LivePriceSource fake: answers from a table factory, or raises; counts calls."""

    def __init__(
        self,
        name: str,
        answer: Callable[[str, PriceType], OfferTable | None] | None = None,
        *,
        error: Exception | None = None,
        regions: list[str] | None = None,
        price_types: tuple[PriceType, ...] = (PriceType.ON_DEMAND, PriceType.SPOT),
    ) -> None:
        self.name = name
        self.answer = answer
        self.error = error
        self._regions = regions or []
        self.price_types = price_types
        self.calls: list[tuple[str, PriceType]] = []
        self.closed = False
        self.gate: Any = None  # an asyncio.Event to hold answers back

    def supports(self, price_type: PriceType) -> bool:
        return price_type in self.price_types

    async def regions(self) -> list[str]:
        return list(self._regions)

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        self.calls.append((region, price_type))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return None if self.answer is None else self.answer(region, price_type)

    async def aclose(self) -> None:
        self.closed = True


def live_table(
    provider: str,
    region: str,
    prices: dict[str, float],
    price_type: PriceType = PriceType.ON_DEMAND,
    **kw: Any,
) -> OfferTable:
    fetched_at = kw.pop("fetched_at", NOW)
    rows = [
        offer(
            provider,
            region,
            name,
            price,
            price_type=price_type,
            as_of=fetched_at.date(),
            source=f"live:{provider}",
            **kw,
        )
        for name, price in prices.items()
    ]
    return OfferTable.from_offers(provider, region, price_type, rows, fetched_at=fetched_at)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


@pytest.fixture
async def http(router: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kv() -> MemoryKV:
    return MemoryKV()
