"""Request schemas → domain query objects (the only place that knows both).

Request times are floored to the whole second here, once, for the window and the baseline alike:
responses speak in whole seconds, and a baseline and its candidates must start on the same
instant or a request would report savings against itself (and sub-second offsets would make equal
windows differ in the last bits, deciding ties by noise instead of by the earlier start).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from carbon_optimizer.api.schemas import LocationSpec, OptimizeRequest
from carbon_optimizer.domain.gpu import expand_gpu_models
from carbon_optimizer.domain.models import GpuRequirement, Objective, ObjectiveMode, PriceType, Workload
from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.providers.carbon.base import Signal
from carbon_optimizer.service import QUERY_FIELDS, LocationQuery, OptimizeQuery


def whole_second(when: datetime | None) -> datetime | None:
    """`when` floored to the second (offset kept: the service converts to UTC)."""
    return None if when is None else when.replace(microsecond=0)


def location_query(spec: LocationSpec, loc: tuple[str | int, ...]) -> LocationQuery:
    """Carry a location spec and its position (for error messages) into the service."""
    return LocationQuery(
        provider=spec.provider,
        region=spec.region,
        zone=spec.zone,
        price_usd_per_hour=spec.price_usd_per_hour,
        loc=loc,
    )


# What a location spec carries into the service (`QUERY_FIELDS`, in `LocationQuery`'s field order).
_SpecKey = tuple[tuple[str | None, str | None, str | None, float | None], ...]


@lru_cache(maxsize=1024)
def _location_queries(specs: _SpecKey) -> tuple[LocationQuery, ...]:
    """The body's location list as queries, memoised on what the specs say.

    Why: schedulers send the same few location lists over and over, and building 20 frozen
    dataclasses cost ~15 µs of a fresh answer; the queries are immutable, so equal lists share
    them (the position in `loc` is the index in the list, part of the key by its place).
    """
    return tuple(
        LocationQuery(provider=p, region=r, zone=z, price_usd_per_hour=price, loc=("body", "locations", i))
        for i, (p, r, z, price) in enumerate(specs)
    )


def to_query(body: OptimizeRequest, request_id: str) -> OptimizeQuery:
    """Translate a validated request into the domain query."""
    w = body.workload
    gpu = None
    if w.gpu is not None:
        models = None
        if w.gpu.model is not None:
            try:
                models = expand_gpu_models(w.gpu.model)
            except ValueError as exc:
                raise InvalidInput(str(exc), loc=("body", "workload", "gpu", "model")) from exc
        gpu = GpuRequirement(count=w.gpu.count, models=models)
    workload = Workload(
        duration=timedelta(minutes=w.duration_minutes),
        vcpus=w.vcpus,
        memory_gib=w.memory_gib,
        gpu=gpu,
        instance_types={str(k): v for k, v in (w.instance_types or {}).items()},
        power_watts=w.power_watts,
        price_type=PriceType(w.price_type),
        cpu_architecture=w.cpu_architecture,
        allow_burstable=w.allow_burstable,
    )
    o = body.objective
    objective = Objective(
        mode=ObjectiveMode(o.mode),
        carbon_weight=o.carbon_weight,
        max_cost_increase_pct=o.max_cost_increase_pct,
        carbon_price_usd_per_tonne=o.carbon_price_usd_per_tonne,
    )
    locations = (
        _location_queries(tuple(map(QUERY_FIELDS, body.locations))) if body.locations is not None else None
    )
    window = body.window
    return OptimizeQuery(
        workload=workload,
        locations=locations,
        providers=list(body.providers) if body.providers is not None else None,
        earliest_start=whole_second(window.earliest_start) if window else None,
        deadline=whole_second(window.deadline) if window else None,
        objective=objective,
        time_step=timedelta(minutes=body.time_step_minutes),
        max_results=body.max_results,
        max_per_location=body.max_per_location,
        baseline_location=(
            location_query(body.baseline.location, ("body", "baseline", "location"))
            if body.baseline
            else None
        ),
        baseline_start=whole_second(body.baseline.start) if body.baseline else None,
        request_id=request_id,
        signal=Signal(body.signal),
        risk=o.risk,
    )
