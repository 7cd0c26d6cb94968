"""Presentation of the engine's `Plan`: the JSON shape and the rounding, shared by API and CLI.

Why one module: the HTTP response and `carbon-optimizer plan` print the same document, and the
rounding rules (3 decimals for grams and g/kWh, 6 for kWh, dollars and scores, 2 for percentages)
belong to the wire format, not to the engine, which keeps exact numbers.
"""

from __future__ import annotations

from typing import Any

from carbon_optimizer.domain.energy import PowerEstimate
from carbon_optimizer.domain.models import Location, Objective, ObjectiveMode, format_utc
from carbon_optimizer.domain.plan import Option, Plan, Savings


def plan_json(plan: Plan) -> dict[str, Any]:
    """The `/v1/optimize` response body (see `api/schemas.OptimizeResponse`)."""
    options = [option_json(o) for o in plan.options]
    return {
        "request_id": plan.request_id,
        "generated_at": format_utc(plan.generated_at),
        "objective": objective_json(plan.objective),
        "window": {"earliest_start": format_utc(plan.window_start), "deadline": format_utc(plan.window_end)},
        "best": options[0],
        "options": options,
        "baseline": None if plan.baseline is None else option_json(plan.baseline),
        "savings": None if plan.savings is None else savings_json(plan.savings),
        "candidates_evaluated": plan.candidates_evaluated,
        "infeasible": [{"location": location_json(loc), "reason": reason} for loc, reason in plan.infeasible],
        "energy_model": energy_model_json(plan.energy_model),
        "warnings": list(plan.warnings),
    }


def option_json(option: Option) -> dict[str, Any]:
    """One option (or the baseline)."""
    cost = option.cost_usd
    return {
        "rank": option.rank,
        "location": location_json(option.location),
        "instance_type": option.instance_type,
        "start": format_utc(option.start),
        "end": format_utc(option.end),
        "avg_carbon_intensity_g_per_kwh": round(option.avg_intensity_g_per_kwh, 3),
        "energy_kwh": round(option.energy_kwh, 6),
        "emissions_g": round(option.emissions_g, 3),
        "power_watts": round(option.power.watts, 3),
        "pue": option.power.pue,
        "price_usd_per_hour": option.price_usd_per_hour,
        "cost_usd": None if cost is None else round(cost, 6),
        "score": None if option.score is None else round(option.score, 6),
        "carbon_source": option.carbon_source,
        "price_source": option.price_source,
    }


def savings_json(savings: Savings) -> dict[str, Any]:
    """Savings against the baseline."""
    return {
        "emissions_g": round(savings.emissions_g, 3),
        "emissions_pct": None if savings.emissions_pct is None else round(savings.emissions_pct, 2),
        "cost_usd": None if savings.cost_usd is None else round(savings.cost_usd, 6),
        "cost_pct": None if savings.cost_pct is None else round(savings.cost_pct, 2),
    }


def location_json(location: Location) -> dict[str, Any]:
    """A location as the client named it (cloud region and its zone, or a bare zone)."""
    if location.is_cloud:
        return {"provider": location.provider, "region": location.region, "zone": location.zone}
    return {"zone": location.zone}


def objective_json(objective: Objective) -> dict[str, Any]:
    """The objective, with only the parameter its mode uses."""
    out: dict[str, Any] = {"mode": objective.mode.value}
    if objective.mode is ObjectiveMode.BALANCED:
        out["carbon_weight"] = objective.carbon_weight
    elif objective.mode is ObjectiveMode.CARBON_WITHIN_BUDGET:
        out["max_cost_increase_pct"] = objective.max_cost_increase_pct
    elif objective.mode is ObjectiveMode.MONETIZED:
        out["carbon_price_usd_per_tonne"] = objective.carbon_price_usd_per_tonne
    return out


def energy_model_json(power: PowerEstimate) -> dict[str, Any]:
    """Which energy model produced the watts, and its parts."""
    return {
        "name": power.model,
        "source": power.source,
        "watts": round(power.watts, 3),
        "pue": power.pue,
        "utilization_pct": round(power.utilization * 100, 1),
        "cpu_watts": round(power.cpu_watts, 3),
        "memory_watts": round(power.memory_watts, 3),
        "gpu_watts": round(power.gpu_watts, 3),
        "gpu_model": power.gpu_model,
    }
