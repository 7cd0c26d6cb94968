"""What every carbon source speaks: signals, kinds of series, requests, fetched answers, the protocol.

Why a module of its own: the cache (`cache.py`), the priority chain (`chain.py`) and every adapter
(`electricitymaps.py`, and any new source) meet here, so none of them is typed on another's
module. A live source is anything with a `name`, the `signals` it offers, `covers(zone)` and
`fetch(SeriesRequest) -> Fetched`; the chain asks the sources of a zone in priority order and
paints each point from the first that has it (see `chain.py` and docs/architecture-data.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from carbon_optimizer.domain.models import CarbonSeries
from carbon_optimizer.errors import UnknownZone

HOUR = timedelta(hours=1)
_ZONE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Signal(StrEnum):
    """Which carbon intensity: the grid's average mix, or the marginal generator's emissions."""

    AVERAGE = "average"
    MARGINAL = "marginal"


class SeriesKind(StrEnum):
    """The kinds of series a source can be asked for; also the cache's key kinds."""

    FORECAST = "forecast"
    HISTORY = "history"
    LATEST = "latest"
    PAST_RANGE = "past-range"

    def label_for(self, source: str) -> str:
        """Provenance label of data of this kind from `source` (past-range is measured history)."""
        kind = "history" if self is SeriesKind.PAST_RANGE else self.value
        return f"{source}:{kind}"


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """One cacheable question to a source. `start`/`end` are used by past-range only."""

    kind: SeriesKind
    zone: str
    start: datetime | None = None
    end: datetime | None = None
    signal: Signal = Signal.AVERAGE


@dataclass(frozen=True, slots=True)
class Fetched:
    """A series plus its provenance: when we got it, when upstream issued it, whether it is stale."""

    series: CarbonSeries
    fetched_at: datetime
    issued_at: datetime | None = None  # upstream's own issue/update time when given
    stale: bool = False
    error: str | None = None  # why a stale value was served


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """A series plus the warnings its assembly produced (for the response's `warnings`)."""

    series: CarbonSeries
    warnings: tuple[str, ...] = ()


@runtime_checkable
class SeriesSource(Protocol):
    """Fetches raw per-kind series (an adapter, and the cache that wraps it)."""

    name: str

    async def fetch(self, request: SeriesRequest) -> Fetched:
        """Return the series for `request` or raise a `ProviderError` subclass."""
        ...


@runtime_checkable
class CarbonSource(SeriesSource, Protocol):
    """A live carbon source as the chain sees it (an adapter, or the cache around one)."""

    @property
    def signals(self) -> frozenset[Signal]:
        """The signals this source can answer (`average`, `marginal`)."""
        ...

    def covers(self, zone: str) -> bool:
        """Whether this source can answer `zone` at all (a national source covers its own zones)."""
        ...


@runtime_checkable
class BundledSeries(Protocol):
    """The chain's last resort: bundled data for any catalogued zone (never a network call)."""

    name: str

    async def series(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """A series covering [start, end), or `UnknownZone`."""
        ...

    def series_sync(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """`series` without the coroutine, for the chain's synchronous painting.

        Bundled data is in memory: a zone only the bundled data answers needs no task.
        """
        ...


def validate_zone(zone: str) -> str:
    """Return `zone` if it is a plausible zone key (safe in URLs and cache keys), else UnknownZone."""
    if not _ZONE_RE.match(zone):
        raise UnknownZone(f"invalid zone key {zone[:64]!r}", loc=("zone",))
    return zone
