"""The two role interfaces every data source (and every cache around one) satisfies."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from carbon_optimizer.domain.models import CarbonSeries, OfferTable, PriceType


@runtime_checkable
class CarbonIntensityProvider(Protocol):
    """Gives the carbon intensity series of a zone over a time range."""

    name: str

    async def series(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Return a series covering at least [start, end) for `zone`.

        Raises `UnknownZone` for a zone it can never answer, a `ProviderError` subclass when a
        source fails (callers may fall back), and never returns a partial range silently: a
        layered provider fills gaps from its fallback and labels them in `CarbonSeries.runs`.
        """
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
