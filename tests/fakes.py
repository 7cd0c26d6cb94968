"""Hand-written fakes of the data-source protocols (they record calls; no patching anywhere)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import ProviderUnavailable
from carbon_optimizer.providers.carbon.base import SeriesResult, Signal

FIXED_NOW = datetime(2026, 6, 3, 10, 0, tzinfo=UTC)  # a Wednesday


def fixed_clock(now: datetime = FIXED_NOW) -> Callable[[], datetime]:
    return lambda: now


def _flat(hour: int) -> float:
    return 300.0


class FakeCarbon:
    """Serves programmable hourly series: `profiles[zone](hour_index_from_epoch) -> g/kWh`."""

    name = "fake"

    def __init__(self, profiles: dict[str, Callable[[int], float]], label: str = "fake:test") -> None:
        self.profiles = profiles
        self.label = label
        self.calls: list[tuple[str, datetime, datetime]] = []

    def signals(self, zone: str) -> frozenset[Signal]:
        return frozenset({Signal.AVERAGE})

    async def series(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult:
        self.calls.append((zone, start, end))
        first = start.replace(minute=0, second=0, microsecond=0)
        hours = int(-(-(end - first).total_seconds() // 3600))
        base = int(first.timestamp() // 3600)
        profile = self.profiles.get(zone, _flat)
        values = np.array([profile(base + i) for i in range(hours)], dtype=np.float64)
        return SeriesResult(
            CarbonSeries(
                zone=zone,
                start=first,
                step=timedelta(hours=1),
                values=values,
                runs=(SourceRun(0, hours, self.label),),
            )
        )


class FailingCarbon:
    """Always unavailable, like Electricity Maps during an outage without a fallback layer."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def signals(self, zone: str) -> frozenset[Signal]:
        return frozenset({Signal.AVERAGE})

    async def series(
        self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
    ) -> SeriesResult:
        self.calls += 1
        raise ProviderUnavailable("upstream timed out", source="electricitymaps")


def hour_of(when: datetime) -> int:
    """The epoch-hour index FakeCarbon profiles receive for `when`."""
    return int(when.timestamp() // 3600)
