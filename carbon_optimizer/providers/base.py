"""The two role interfaces every data source (and every cache around one) satisfies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.providers.carbon.base import SeriesResult, Signal


@runtime_checkable
class CarbonIntensityProvider(Protocol):
    """Gives the carbon intensity series of a zone over a time range."""

    name: str

    async def series(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult:
        """Return a series covering at least [start, end) for `zone`, plus its warnings.

        Raises `UnknownZone` for a zone it can never answer and `DataUnavailable` when not even
        the bundled data can; never returns a partial range silently: the chain fills gaps from
        the bundled data and labels every point in `CarbonSeries.runs`.
        """
        ...

    def signals(self, zone: str) -> frozenset[Signal]:
        """The signals answerable for `zone` (always `average`; `marginal` where a source has it)."""
        ...


@runtime_checkable
class PriceProvider(Protocol):
    """Gives the priced instance types of one cloud region."""

    name: str

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Return the region's offer table, or None when this source has nothing for it.

        Raises a `ProviderError` subclass when the source fails (callers fall back to the next).
        """
        ...


@runtime_checkable
class InMemoryCarbonLookup(Protocol):
    """Optional fast path of a carbon provider: an answer already in memory, without awaiting.

    Why: a request asks for up to 200 zones; most answers sit in the in-process tier, and an
    asyncio task per zone costs more than the lookup itself. The service tries this first and
    awaits `series` only for the zones it returns None for.
    """

    def series_cached(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult | None:
        """The very answer `series` would give, if it is in memory now; else None."""
        ...


@runtime_checkable
class InMemoryCarbonBatch(Protocol):
    """Optional batch form of `series_cached`: every zone of a request in one synchronous pass.

    Why: even as memo hits, 20–150 zones asked one by one each walk the provider's layers; a
    provider that can tell a whole request's answers are unchanged answers them at once.
    """

    def series_many(
        self, zones: Sequence[str], start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> list[SeriesResult | None]:
        """Per zone, in order: the very answer `series` would give if in memory now, else None."""
        ...


@runtime_checkable
class InMemoryPriceBatch(Protocol):
    """Optional batch form of `offers_cached` for a request's (provider, region) pairs."""

    def offers_many(
        self, places: Sequence[tuple[str, str]], price_type: PriceType
    ) -> list[tuple[OfferTable | None] | None]:
        """Per pair, in order: `(table,)` on an in-memory hit, else None."""
        ...


@runtime_checkable
class InMemoryPriceLookup(Protocol):
    """Optional fast path of a price provider: an in-process-tier hit, without awaiting."""

    def offers_cached(
        self, provider: str, region: str, price_type: PriceType
    ) -> tuple[OfferTable | None] | None:
        """`(table,)` — what `offers` would return — on an in-memory hit; None on a miss."""
        ...
