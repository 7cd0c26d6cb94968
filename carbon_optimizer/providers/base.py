"""The two role interfaces every data source (and every cache around one) satisfies."""

from __future__ import annotations

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
