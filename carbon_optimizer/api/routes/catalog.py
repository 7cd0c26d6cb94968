"""Catalog lookups: regions, zones, a zone's carbon series, prices and cost estimates."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from carbon_optimizer.api.schemas import EstimateRequest, ProblemOut, ProviderName
from carbon_optimizer.api.schemas_out import EstimateOut, PricesOut, RegionsOut, ZoneSeriesOut, ZonesOut
from carbon_optimizer.api.state import get_state
from carbon_optimizer.api.timebounds import ApiDatetime
from carbon_optimizer.domain.models import InstanceOffer, PriceType
from carbon_optimizer.errors import InvalidInput, UnknownRegion

router = APIRouter(prefix="/v1", tags=["catalog"])
PRICE_PROVIDERS: tuple[str, ...] = get_args(ProviderName)
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


def _region_owners(request: Request, region: str) -> list[str]:
    """Providers that know `region`: in the region catalog or with bundled prices for it."""
    state = get_state(request)
    folded = region.lower()
    return [
        p
        for p in PRICE_PROVIDERS
        if state.catalog.get(p, region) is not None
        or folded in {r.lower() for r in state.bundled_prices.regions_with_prices(p)}
    ]


def _check_region(request: Request, provider: str | None, region: str) -> None:
    """422 on `query.region` for a region no provider (or not the given one) has, as optimize does."""
    owners = _region_owners(request, region)
    if provider is None and not owners:
        raise UnknownRegion(f"unknown region '{region}'", loc=("query", "region"))
    if provider is not None and provider not in owners:
        also = f"; {', '.join(owners)} {'has' if len(owners) == 1 else 'have'} it" if owners else ""
        raise UnknownRegion(
            f"unknown region '{region}' for provider '{provider}'{also}", loc=("query", "region")
        )


def _filters_tag(*filters: str | None) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def _encode_cursor(offset: int, tag: str) -> str:
    raw = orjson.dumps({"o": offset, "f": tag})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, tag: str) -> int:
    """The offset a cursor stands for; 422 on `query.cursor` if it is not one of ours for these filters."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = data["o"]
        valid = isinstance(offset, int) and offset >= 0 and data["f"] == tag
    except (ValueError, TypeError, KeyError, binascii.Error):
        valid = False
    if not valid:
        raise InvalidInput(
            "invalid cursor: pass back the next_cursor of the previous page, with the same filters",
            loc=("query", "cursor"),
        )
    return int(offset)


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
    cursor: Annotated[
        str | None, Query(max_length=256, description="`next_cursor` of the previous page (same filters).")
    ] = None,
) -> Response:
    """Filter the price catalog, a page at a time.

    Rows come in a stable order (provider, region, price type, instance type); `next_cursor` is
    an opaque offset into that order, tied to the filters so it cannot be replayed on another
    query. An unknown region is a 422 on `query.region`, as in /v1/optimize.
    """
    state = get_state(request)
    if region is not None:
        _check_region(request, provider, region)
    tag = _filters_tag(provider, region, instance_type, price_type)
    offset = _decode_cursor(cursor, tag) if cursor is not None else 0
    kind = PriceType(price_type) if price_type else None
    offers: list[InstanceOffer] = []
    # A live or cached table for a single region supersedes the bundled rows of that region.
    if provider and region and state.service.prices is not state.bundled_prices:
        for each in [kind] if kind else list(PriceType):
            table = await state.service.prices.offers(provider, region, each)
            if table is not None:
                offers.extend(
                    sorted(
                        (
                            table.offer(i)
                            for i in range(len(table))
                            if instance_type is None or table.instance_types[i] == instance_type
                        ),
                        key=lambda o: o.instance_type,
                    )
                )
    if not offers:
        # One row past the page tells whether more follow, without materialising the rest.
        offers = state.bundled_prices.list_offers(
            provider, region, instance_type, kind, limit=offset + limit + 1
        )
    page = offers[offset : offset + limit]
    more = len(offers) > offset + limit
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
        for o in page
    ]
    return _json(
        {
            "count": len(items),
            "truncated": more,
            "next_cursor": _encode_cursor(offset + limit, tag) if more else None,
            "prices": items,
        }
    )


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
