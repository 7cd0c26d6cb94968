"""Orchestration of POST /v1/compare/deployment: resolve regions, fetch prices, call the domain maths.

Nothing here knows HTTP. The API layer (and the CLI) build a `DeploymentQuery`; `compare` returns
the response body as plain data. Prices: serverless tables from `ServerlessPriceChain` (bundled →
cache → live), VM instance tables from the same `PriceProvider` chain /v1/optimize uses, with the
bundled tables as fallback. Carbon: the bundled latest annual average of each region's grid zone
(what /v1/estimate and the offline provider use when no live data is asked for), because a monthly
bill is compared with a monthly (not hourly) footprint.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from carbon_optimizer.domain.energy import AVERAGE_UTILIZATION, MEMORY_WATTS_PER_GIB
from carbon_optimizer.domain.instances import ARM, instance_traits
from carbon_optimizer.domain.models import FloatArray, OfferTable, PriceType, Region, format_utc
from carbon_optimizer.domain.serverless import (
    ENERGY_METHOD,
    HOURS_PER_MONTH,
    OPTION_LABEL,
    OPTION_PROVIDER,
    SERVERLESS_OPTIONS,
    BreakEven,
    CostCurve,
    DeploymentWorkload,
    EgressPrices,
    Option,
    PriceItem,
    ServerlessPrices,
    VmCurve,
    allocation,
    check,
    find_break_even,
    limit_violation,
    serverless_coefficients,
    serverless_curve,
    vm_coefficients,
    vm_curve,
)
from carbon_optimizer.errors import InvalidInput, ProviderError, UnknownRegion
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.catalog import RegionCatalog
from carbon_optimizer.providers.serverless_prices import ServerlessPriceChain, bundled_egress, bundled_prices


@dataclass(frozen=True, slots=True)
class DeploymentLocation:
    """A requested cloud region and its position in the request (for error messages)."""

    provider: str
    region: str
    loc: tuple[str | int, ...] = ()


@dataclass(frozen=True, slots=True)
class DeploymentQuery:
    """Domain form of a comparison request."""

    workload: DeploymentWorkload
    locations: Sequence[DeploymentLocation]
    options: tuple[Option, ...] | None = None  # None = every option each region's cloud offers
    gcp_egress: str = "source_destination"
    curve_points: int = 41
    request_id: str = "-"


@dataclass
class _Row:
    region: Region
    option: Option
    intensity: float
    intensity_source: str
    prices: ServerlessPrices | None = None
    table: OfferTable | None = None
    egress: EgressPrices | None = None
    reason: str | None = None
    total: float = math.inf
    emissions_kg: float = math.inf
    out: dict[str, Any] = field(default_factory=dict)


def _r(value: float, digits: int = 6) -> float | None:
    return None if not math.isfinite(value) else round(float(value), digits) + 0.0  # no "-0.0"


def _item_out(item: PriceItem) -> dict[str, Any]:
    return {
        "item": item.item,
        "usd": item.usd,
        "unit": item.unit,
        "source": item.source,
        "reference": item.reference,
        "as_of": item.as_of.isoformat() if item.as_of else None,
        "uncertain": item.uncertain,
    }


class DeploymentComparer:
    """Application service behind the deployment comparison."""

    def __init__(
        self,
        *,
        catalog: RegionCatalog,
        prices: PriceProvider,
        fallback_prices: PriceProvider | None = None,
        serverless: ServerlessPriceChain | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        self.catalog = catalog
        self.prices = prices
        self.fallback_prices = fallback_prices
        self.serverless = serverless or ServerlessPriceChain()
        self.clock = clock

    def _resolve(self, query: DeploymentQuery) -> list[Region]:
        regions: list[Region] = []
        seen: set[tuple[str, str]] = set()
        for item in query.locations:
            region = self.catalog.get(item.provider, item.region)
            if region is None:
                raise UnknownRegion(
                    f"unknown region '{item.region}' for provider '{item.provider}'",
                    loc=(*item.loc, "region"),
                )
            key = (region.provider, region.region)
            if key not in seen:
                seen.add(key)
                regions.append(region)
        return regions

    def _validate_explicit(self, query: DeploymentQuery) -> None:
        """An option asked for by name whose hard limit the input breaks is a 422 naming the field."""
        for option in query.options or ():
            if option is Option.VM:
                continue
            violation = limit_violation(bundled_prices(option, "_"), query.workload)
            if violation is not None:
                raise InvalidInput(violation[1], loc=("body", violation[0]))

    async def _table(self, region: Region, warnings: list[str]) -> OfferTable | None:
        try:
            return await self.prices.offers(region.provider, region.region, PriceType.ON_DEMAND)
        except ProviderError:
            if self.fallback_prices is None:
                warnings.append(f"no VM price source answered for {region.provider}/{region.region}")
                return None
            warnings.append(
                f"VM price source unavailable for {region.provider}/{region.region}; used bundled prices"
            )
            return await self.fallback_prices.offers(region.provider, region.region, PriceType.ON_DEMAND)

    def _intensity(self, region: Region) -> tuple[float, str]:
        info = self.catalog.zone(region.zone)
        if info is None:  # every catalogued region maps to a known zone (bundled data invariant)
            return math.nan, f"no carbon data for zone {region.zone}"
        return (
            info.latest_intensity_g_per_kwh,
            f"bundled:annual-{info.latest_year} ({info.zone}, Electricity Maps yearly average, "
            "lifecycle, ODbL)",
        )

    async def compare(self, query: DeploymentQuery) -> dict[str, Any]:
        """Compare every (region, option); returns the response body as plain data."""
        w = query.workload
        self._validate_explicit(query)
        regions = self._resolve(query)
        wanted = set(query.options) if query.options else None
        warnings: list[str] = []
        rows: list[_Row] = []
        tables = await asyncio.gather(
            *(self._table(r, warnings) if wanted is None or Option.VM in wanted else _none() for r in regions)
        )
        for region, table in zip(regions, tables, strict=True):
            intensity, source = self._intensity(region)
            for option in SERVERLESS_OPTIONS:
                if OPTION_PROVIDER[option] != region.provider or (
                    wanted is not None and option not in wanted
                ):
                    continue
                prices, notes = await self.serverless.prices(
                    option, region.region, gcp_egress=query.gcp_egress
                )
                warnings.extend(n for n in notes if n not in warnings)
                rows.append(_Row(region, option, intensity, source, prices=prices, reason=check(prices, w)))
            if wanted is None or Option.VM in wanted:
                egress = bundled_egress(region.provider, region.region, gcp_egress=query.gcp_egress)
                row = _Row(region, Option.VM, intensity, source, table=table, egress=egress)
                if table is None or len(table) == 0:
                    row.reason = f"no VM prices for {region.provider}/{region.region}"
                rows.append(row)
            if region.provider == "lambda" and (wanted is None or any(o is not Option.VM for o in wanted)):
                warnings.append("Lambda Cloud offers no serverless product: only its VMs are compared")
        if not rows:
            raise InvalidInput(
                "none of the requested options is offered in the requested regions", loc=("body", "options")
            )
        volume = np.array([w.invocations_per_month])
        for row in rows:
            self._evaluate(row, w, volume)
        return self._answer(query, rows, warnings)

    def _evaluate(self, row: _Row, w: DeploymentWorkload, volume: FloatArray) -> None:
        base: dict[str, Any] = {
            "provider": row.region.provider,
            "region": row.region.region,
            "zone": row.region.zone,
            "option": row.option.value,
            "label": OPTION_LABEL[row.option],
            "carbon_intensity": {"g_per_kwh": _r(row.intensity, 3), "source": row.intensity_source},
        }
        if row.reason is None and row.prices is not None:
            curve = serverless_curve(row.prices, w, volume)
            row.total = float(curve.total[0])
            row.emissions_kg = float(curve.energy_kwh[0]) * row.intensity / 1000.0
            alloc = allocation(row.prices, w)
            coeff = serverless_coefficients(row.option)
            base.update(
                feasible=True,
                infeasible_reason=None,
                cost_usd_per_month=_cost_out(
                    curve.compute[0], curve.requests[0], curve.free_tier[0], curve.egress[0]
                ),
                usage=_usage_out(curve),
                energy_kwh_per_month=_r(float(curve.energy_kwh[0])),
                emissions_kg_per_month=_r(row.emissions_kg),
                energy_model={
                    "billed_seconds_per_invocation": _r(alloc.billed_s),
                    "vcpus_allocated": _r(alloc.vcpus),
                    "memory_gib": _r(alloc.memory_gib),
                    "watts_per_vcpu": _r(coeff.watts_per_vcpu(AVERAGE_UTILIZATION)),
                    "utilization": AVERAGE_UTILIZATION,
                    "memory_watts_per_gib": MEMORY_WATTS_PER_GIB,
                    "pue": coeff.pue,
                    "source": coeff.source,
                },
                price_source=row.prices.source,
                prices=[_item_out(i) for i in row.prices.items],
                notes=[*alloc.notes, *row.prices.notes],
            )
        elif row.reason is None and row.table is not None and row.egress is not None:
            vm = vm_curve(row.table, w, volume, row.egress)
            if not vm.feasible[0]:
                row.reason = _vm_infeasible(vm, row.table, w)
            else:
                row.total = float(vm.total[0])
                row.emissions_kg = float(vm.energy_kwh[0]) * row.intensity / 1000.0
                base.update(self._vm_out(row, vm, w))
        if row.reason is not None:
            base.update(feasible=False, infeasible_reason=row.reason)
        row.out = base

    def _vm_out(self, row: _Row, vm: VmCurve, w: DeploymentWorkload) -> dict[str, Any]:
        assert row.table is not None
        assert row.egress is not None
        offer = row.table.offer(int(vm.row[0]))
        count = int(vm.count[0])
        arm = ARM in instance_traits(offer.provider, offer.instance_type)
        coeff = vm_coefficients(offer.provider, arm)
        peak, basis = w.peak()
        price = PriceItem(
            f"instance {offer.instance_type}",
            offer.price_usd_per_hour,
            "USD/hour (on-demand, Linux)",
            offer.source,
            "instance price catalog (cache → live → bundled tables)",
            offer.as_of,
        )
        return {
            "feasible": True,
            "infeasible_reason": None,
            "cost_usd_per_month": _cost_out(vm.compute[0], 0.0, vm.free_tier[0], vm.egress[0]),
            "usage": {"instance_hours": count * HOURS_PER_MONTH, "egress_gb": _r(w.egress_gb)},
            "energy_kwh_per_month": _r(float(vm.energy_kwh[0])),
            "emissions_kg_per_month": _r(row.emissions_kg),
            "energy_model": {
                "vcpus": _r(float(offer.vcpus or 0) * count),
                "memory_gib": _r(float(offer.memory_gib or 0) * count),
                "utilization": _r(float(vm.utilization[0])),
                "hours": HOURS_PER_MONTH,
                "pue": coeff.pue,
                "source": coeff.source,
            },
            "vm": {
                "instance_type": offer.instance_type,
                "count": count,
                "vcpus": offer.vcpus,
                "memory_gib": offer.memory_gib,
                "price_usd_per_hour": offer.price_usd_per_hour,
                "target_utilization": w.vm_target_utilization,
                "peak_concurrency": _r(peak),
                "peak_basis": basis,
                "vcpus_needed": _r(float(vm.vcpus_needed[0])),
                "memory_gib_needed": _r(float(vm.memory_gib_needed[0])),
            },
            "price_source": offer.source,
            "prices": [_item_out(price), *(_item_out(i) for i in row.egress.items)],
            "notes": [
                f"{count} × {offer.instance_type} billed {HOURS_PER_MONTH:g} h/month whatever the load",
                "no load balancer, OS licence or VM free tier included",
                *([row.egress.note] if row.egress.note else []),
            ],
        }

    def _answer(self, query: DeploymentQuery, rows: list[_Row], warnings: list[str]) -> dict[str, Any]:
        w = query.workload
        feasible = [r for r in rows if r.reason is None and math.isfinite(r.total)]
        best_s = min((r for r in feasible if r.option is not Option.VM), key=lambda r: r.total, default=None)
        best_vm = min((r for r in feasible if r.option is Option.VM), key=lambda r: r.total, default=None)
        greenest = min(feasible, key=lambda r: r.emissions_kg, default=None)
        cheapest = min(feasible, key=lambda r: r.total, default=None)
        peak, basis = w.peak()
        answer: dict[str, Any] = {
            "request_id": query.request_id,
            "generated_at": format_utc(self.clock()),
            "workload": {
                "invocations_per_month": _r(w.invocations_per_month, 3),
                "duration_ms": w.duration_ms,
                "memory_mb": w.memory_mb,
                "cpu_architecture": w.cpu_architecture,
                "peak_concurrency": _r(peak),
                "peak_basis": basis,
                "egress_gb_per_month": _r(w.egress_gb),
                "vcpu_per_invocation": _r(w.cpu_share),
                "free_tier": w.free_tier,
                "per_instance_concurrency": w.per_instance_concurrency,
            },
            "options": [r.out for r in rows],
            "best": {
                "serverless": _ref(best_s),
                "vm": _ref(best_vm),
                "cheapest": _ref(cheapest),
                "lowest_emissions": _ref(greenest),
            },
            "break_even": None,
            "curve": None,
            "methodology": {
                "energy": ENERGY_METHOD,
                "carbon_intensity": "bundled latest annual average of each region's grid zone (lifecycle)",
                "hours_per_month": HOURS_PER_MONTH,
                "free_tier": "applied once per account-month to this workload"
                if w.free_tier
                else "not applied (the account's free tier is used elsewhere)",
                "vm_sizing": (
                    "identical instances holding peak concurrency × vCPU per invocation / target utilisation "
                    "and peak × memory; cheapest fleet from the instance price catalog"
                ),
            },
            "warnings": warnings,
        }
        if best_s is not None and best_vm is not None:
            answer.update(self._curves(query, best_s, best_vm))
        return answer

    def _curves(self, query: DeploymentQuery, best_s: _Row, best_vm: _Row) -> dict[str, Any]:
        w = query.workload
        assert best_s.prices is not None
        assert best_vm.table is not None
        assert best_vm.egress is not None
        s_prices, table, egress = best_s.prices, best_vm.table, best_vm.egress
        base = w.invocations_per_month
        probe = w if base > 0 else _with_volume(w, 1e6)  # volume scaling needs a positive base

        def f_s(v: FloatArray) -> FloatArray:
            return serverless_curve(s_prices, probe, v).total

        def f_vm(v: FloatArray) -> FloatArray:
            return vm_curve(table, probe, v, egress).total

        be = find_break_even(f_s, f_vm)
        centre = base if base > 0 else 1e6
        lo, hi = centre / 1000.0, centre * 1000.0
        if be is not None:
            lo, hi = min(lo, be.volume / 10.0), max(hi, be.volume * 10.0)
        volumes = np.geomspace(max(lo, 1.0), hi, query.curve_points)
        s_curve: CostCurve = serverless_curve(s_prices, probe, volumes)
        v_curve: VmCurve = vm_curve(table, probe, volumes, egress)
        types = table.instance_types
        columns = zip(
            _rounded(volumes, 1),
            _rounded(s_curve.total, 4),
            _rounded(v_curve.total, 4),
            _rounded(s_curve.energy_kwh * best_s.intensity / 1000.0, 6),
            _rounded(v_curve.energy_kwh * best_vm.intensity / 1000.0, 6),
            v_curve.row.tolist(),
            v_curve.count.tolist(),
            strict=True,
        )
        points = [
            {
                "invocations_per_month": volume,
                "serverless_usd": s_usd,
                "vm_usd": vm_usd,
                "serverless_kg": s_kg,
                "vm_kg": vm_kg,
                "vm_instance_type": types[row] if row >= 0 else None,
                "vm_count": int(count),
            }
            for volume, s_usd, vm_usd, s_kg, vm_kg, row, count in columns
        ]
        return {
            "break_even": _break_even_out(be, best_s, best_vm),
            "curve": {
                "serverless": _ref(best_s),
                "vm": _ref(best_vm),
                "note": "peak concurrency (and so the VM fleet) and egress scale with volume",
                "points": points,
            },
        }


def _with_volume(w: DeploymentWorkload, volume: float) -> DeploymentWorkload:
    return replace(w, invocations_per_month=volume, peak_concurrency=None, hourly_profile=None)


def _rounded(values: FloatArray, digits: int) -> list[float | None]:
    """Vectorised `_r`: rounded floats, None where not finite (JSON has no inf)."""
    rounded = np.round(values, digits) + 0.0
    return [v if math.isfinite(v) else None for v in rounded.tolist()]


def _break_even_out(be: BreakEven | None, s: _Row, vm: _Row) -> dict[str, Any] | None:
    if be is None:
        return None
    return {
        "invocations_per_month": _r(be.volume, 1),
        "cheaper_below": be.cheaper_below,
        "serverless": _ref(s),
        "vm": _ref(vm),
        "serverless_usd": _r(be.serverless_usd, 4),
        "vm_usd": _r(be.vm_usd, 4),
    }


def _ref(row: _Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {
        "provider": row.region.provider,
        "region": row.region.region,
        "option": row.option.value,
        "label": OPTION_LABEL[row.option],
        "total_usd_per_month": _r(row.total, 4),
        "emissions_kg_per_month": _r(row.emissions_kg),
    }
    if row.option is Option.VM and "vm" in row.out:
        out["instance_type"] = row.out["vm"]["instance_type"]
        out["count"] = row.out["vm"]["count"]
    return out


def _cost_out(compute: float, requests: float, free: float, egress: float) -> dict[str, Any]:
    return {
        "compute": _r(float(compute)),
        "requests": _r(float(requests)),
        "free_tier": _r(float(free)),
        "egress": _r(float(egress)),
        "total": _r(float(compute + requests + free + egress)),
    }


def _usage_out(curve: CostCurve) -> dict[str, Any]:
    u = curve.usage
    return {
        "requests": _r(float(u["requests"][0]), 1),
        "billed_seconds": _r(float(u["billed_seconds"][0]), 3),
        "gb_seconds": _r(float(u["gb_s"][0]), 3),
        "vcpu_seconds": _r(float(u["vcpu_s"][0]), 3),
        "egress_gb": _r(float(u["egress_gb"][0])),
    }


def _vm_infeasible(vm: VmCurve, table: OfferTable, w: DeploymentWorkload) -> str:
    arch = {"x86_64": "x86-64 ", "arm64": "Arm "}.get(w.cpu_architecture, "")
    burst = "" if w.vm_allow_burstable else " non-burstable"
    return (
        f"no{burst} CPU-only {arch}instance type with known specs and room for one invocation "
        f"({w.memory_mb:,.0f} MB) is priced in {table.provider}/{table.region} "
        "(GPU types are not considered for this workload)"
    )


async def _none() -> None:
    return None
