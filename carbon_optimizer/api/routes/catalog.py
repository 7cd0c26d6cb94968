"""Catalog lookups: regions, zones, a zone's carbon series, prices and cost estimates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from carbon_optimizer.api.schemas import EstimateRequest, ProblemOut
from carbon_optimizer.api.schemas_out import EstimateOut, PricesOut, RegionsOut, ZoneSeriesOut, ZonesOut
from carbon_optimizer.api.state import get_state
from carbon_optimizer.api.timebounds import ApiDatetime
from carbon_optimizer.domain.models import InstanceOffer, PriceType

router = APIRouter(prefix="/v1", tags=["catalog"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {422: {"model": ProblemOut, "description": "Invalid input"}}


def _ok(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """Document the 200 body (the route serialises it itself) beside the problem answers."""
    return {200: {"model": model, "description": "OK"}, **_PROBLEMS}


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@router.get(
    "/regions", summary="Catalogued cloud regions and their Electricity Maps zones", responses=_ok(RegionsOut)
)
async def regions(
    request: Request, provider: Literal["aws", "azure", "gcp", "lambda"] | None = None
) -> Response:
    """List regions, optionally for one provider."""
    catalog = get_state(request).catalog
    items = [
        {
            "provider": r.provider,
            "region": r.region,
            "display_name": r.display_name,
            "location": r.location,
            "zone": r.zone,
            "latitude": r.latitude,
            "longitude": r.longitude,
            "zone_confidence": r.confidence,
        }
        for r in catalog.regions(provider)
    ]
    return _json({"count": len(items), "regions": items})


@router.get(
    "/zones", summary="Known Electricity Maps zones and the offline data each has", responses=_ok(ZonesOut)
)
async def zones(request: Request) -> Response:
    """List every zone the service can answer for."""
    items = [
        {
            "zone": z.zone,
            "name": z.name,
            "offline_data": "replay-2023" if z.has_hourly else f"annual-{z.latest_year}",
            "annual_intensity_g_per_kwh": z.latest_intensity_g_per_kwh,
            "annual_year": z.latest_year,
        }
        for z in get_state(request).catalog.zones()
    ]
    return _json({"count": len(items), "zones": items})


@router.get(
    "/zones/{zone}/carbon-intensity",
    summary="The carbon intensity series the engine would use for a zone",
    responses=_ok(ZoneSeriesOut),
)
async def zone_carbon_intensity(
    request: Request,
    zone: Annotated[str, Path(min_length=1, max_length=64)],
    start: ApiDatetime | None = None,
    end: ApiDatetime | None = None,
) -> Response:
    """Series over [start, end) (default: the next 24 hours from the current hour)."""
    return _json(await get_state(request).service.zone_series(zone, start, end))


@router.get(
    "/prices", summary="List prices from the catalog (live, cached or bundled)", responses=_ok(PricesOut)
)
async def prices(
    request: Request,
    provider: Literal["aws", "azure", "gcp", "lambda"] | None = None,
    region: Annotated[str | None, Query(max_length=64)] = None,
    instance_type: Annotated[str | None, Query(max_length=128)] = None,
    price_type: Literal["on_demand", "spot"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 500,
) -> Response:
    """Filter the price catalog; `truncated` says when `limit` cut the list."""
    state = get_state(request)
    kind = PriceType(price_type) if price_type else None
    offers: list[InstanceOffer] = []
    # A live or cached table for a single region supersedes the bundled rows of that region.
    if provider and region and state.service.prices is not state.bundled_prices:
        for each in [kind] if kind else list(PriceType):
            table = await state.service.prices.offers(provider, region, each)
            if table is not None:
                offers.extend(
                    table.offer(i)
                    for i in range(len(table))
                    if instance_type is None or table.instance_types[i] == instance_type
                )
    if not offers:
        # One row past the limit tells whether the list was cut, without materialising the rest.
        offers = state.bundled_prices.list_offers(provider, region, instance_type, kind, limit=limit + 1)
    items = [
        {
            "provider": o.provider,
            "region": o.region,
            "instance_type": o.instance_type,
            "vcpus": o.vcpus,
            "memory_gib": o.memory_gib,
            "gpu_count": o.gpu_count,
            "gpu_model": o.gpu_model,
            "price_type": o.price_type.value,
            "price_usd_per_hour": o.price_usd_per_hour,
            "currency": o.currency,
            "source": o.source,
            "as_of": o.as_of.isoformat() if o.as_of else None,
        }
        for o in offers[:limit]
    ]
    return _json({"count": len(items), "truncated": len(offers) > limit, "prices": items})


@router.post(
    "/estimate",
    summary="Cost, energy and emissions of one instance type for some hours",
    responses=_ok(EstimateOut),
)
async def estimate(body: EstimateRequest, request: Request) -> Response:
    """The classic estimate_cost(instance_type, hours), with provenance and footprint."""
    result = await get_state(request).service.estimate(
        provider=body.provider,
        region=body.region,
        instance_type=body.instance_type,
        hours=body.hours,
        price_type=PriceType(body.price_type),
        start=body.start,
    )
    return _json(result)
