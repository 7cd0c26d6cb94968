"""Domain optimize queries for service-level tests: a workload, listed locations, a 24 h window."""

from __future__ import annotations

from datetime import datetime, timedelta

from carbon_optimizer.domain.models import Objective, ObjectiveMode, Workload
from carbon_optimizer.service import LocationQuery, OptimizeQuery


def places(*items: tuple[str | None, str | None, str | None]) -> list[LocationQuery]:
    """(provider, region, zone) triples as the request's locations, in order."""
    return [LocationQuery(p, r, z, None, ("body", "locations", i)) for i, (p, r, z) in enumerate(items)]


def query(start: datetime, locations: list[LocationQuery], minutes: int = 120) -> OptimizeQuery:
    """A carbon-mode query for an 8 vCPU / 32 GiB job of `minutes`, hourly starts over 24 h."""
    return OptimizeQuery(
        workload=Workload(duration=timedelta(minutes=minutes), vcpus=8, memory_gib=32.0),
        locations=locations,
        providers=None,
        earliest_start=start,
        deadline=start + timedelta(hours=24),
        objective=Objective(mode=ObjectiveMode.CARBON),
        time_step=timedelta(minutes=60),
        max_results=5,
    )
