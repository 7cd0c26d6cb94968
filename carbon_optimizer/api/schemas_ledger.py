"""Response bodies of the savings-ledger routes (/v1/placements, /v1/reports/savings), for OpenAPI.

Why a module of its own: the routes serialise plain dicts with orjson (as /v1/optimize does); these
models only document the shape, every field described, so a client generator gets typed answers.
Kept apart from `api/schemas.py` so the ledger can evolve without touching the optimiser's
contract. Datetimes are RFC 3339 UTC strings with a `Z` suffix.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PlacementOut(BaseModel):
    """One recorded placement: the decision, its baseline, the outcome and the realised figures."""

    id: str = Field(description="Placement id (uuid).")
    client_id: str = Field(description="Client (API-key id) that recorded it.")
    created_at: str = Field(description="When it was recorded, UTC.")
    request_id: str | None = Field(description="The request that produced the decision.")
    origin: str = Field(
        description="`optimize` (recorded by /v1/optimize) or `caller` (POST /v1/placements)."
    )
    idempotency_key: str | None = Field(description="The Idempotency-Key it was recorded with, if any.")
    workload: dict[str, Any] = Field(description="The workload as requested.")
    signal: str = Field(description="Which carbon intensity the figures are in.")
    location: str = Field(description="Chosen location key: `provider/region` or `zone/<zone>`.")
    zone: str = Field(description="Carbon zone of the chosen location.")
    provider: str | None = Field(description="Cloud provider of the chosen location.")
    region: str | None = Field(description="Cloud region of the chosen location.")
    instance_type: str | None = Field(description="Instance type of the chosen option.")
    start_at: str = Field(description="Planned start, UTC.")
    end_at: str = Field(description="Planned end, UTC.")
    energy_kwh: float = Field(description="Forecast energy, kWh.")
    intensity_g_per_kwh: float = Field(description="Forecast mean carbon intensity, gCO2e/kWh.")
    emissions_g: float = Field(description="Forecast emissions, gCO2e.")
    cost_usd: float | None = Field(description="Forecast cost, USD.")
    carbon_source: str | None = Field(description="Where the forecast intensity came from.")
    price_source: str | None = Field(description="Where the price came from.")
    baseline_name: str | None = Field(description="What the baseline is, in words.")
    baseline_location: str | None = Field(description="Baseline location key.")
    baseline_zone: str | None = Field(description="Carbon zone of the baseline.")
    baseline_start_at: str | None = Field(description="Baseline start, UTC.")
    baseline_end_at: str | None = Field(description="Baseline end, UTC.")
    baseline_energy_kwh: float | None = Field(description="Baseline forecast energy, kWh.")
    baseline_intensity_g_per_kwh: float | None = Field(description="Baseline forecast intensity, gCO2e/kWh.")
    baseline_emissions_g: float | None = Field(description="Baseline forecast emissions, gCO2e.")
    baseline_cost_usd: float | None = Field(description="Baseline forecast cost, USD.")
    baseline_carbon_source: str | None = Field(
        description="Where the baseline's forecast intensity came from."
    )
    quality: dict[str, Any] = Field(description="Warnings and provenance at decision time.")
    actual_location: str | None = Field(description="Where it really ran (outcome), if not as planned.")
    actual_zone: str | None = Field(description="Carbon zone of `actual_location`.")
    actual_start_at: str | None = Field(description="Reported real start, UTC.")
    actual_end_at: str | None = Field(description="Reported real end, UTC.")
    measured_energy_kwh: float | None = Field(description="Reported metered energy, kWh.")
    outcome_at: str | None = Field(description="When the outcome was reported, UTC.")
    status: str = Field(description="`recorded`, `reconciled` or `failed` (unreconcilable).")
    due_at: str = Field(description="When it is (next) due for reconciliation, UTC.")
    attempts: int = Field(description="Reconciliation attempts so far.")
    reconcile_error: str | None = Field(description="Why the last reconciliation attempt failed.")
    reconciled_at: str | None = Field(description="When it was reconciled, UTC.")
    realised_energy_kwh: float | None = Field(description="Energy used for the realised figures, kWh.")
    realised_intensity_g_per_kwh: float | None = Field(
        description="Measured mean intensity over what ran, gCO2e/kWh."
    )
    realised_emissions_g: float | None = Field(description="Realised emissions, gCO2e.")
    realised_baseline_intensity_g_per_kwh: float | None = Field(
        description="Measured mean intensity over the baseline window, gCO2e/kWh."
    )
    realised_baseline_emissions_g: float | None = Field(description="Realised baseline emissions, gCO2e.")
    realised_source: str | None = Field(
        description="Sources of the realised intensity (`fallback:` = bundled)."
    )
    realised_baseline_source: str | None = Field(description="Sources of the realised baseline intensity.")


class ReportForecastOut(BaseModel):
    """Forecast figures of a group: chosen vs baseline over placements that have a baseline."""

    emissions_all_g: float = Field(description="Forecast emissions of every placement, gCO2e.")
    emissions_g: float = Field(description="Forecast emissions of placements with a baseline, gCO2e.")
    baseline_emissions_g: float = Field(description="Their baselines' forecast emissions, gCO2e.")
    savings_g: float = Field(description="Baseline minus chosen, gCO2e.")
    savings_pct: float | None = Field(description="Savings as % of the baseline (null: no baseline).")


class ReportRealisedOut(BaseModel):
    """Realised figures of a group (reconciled placements only)."""

    energy_kwh: float = Field(description="Realised energy, kWh.")
    emissions_all_g: float = Field(description="Realised emissions of every reconciled placement, gCO2e.")
    emissions_g: float = Field(description="Realised emissions of reconciled placements with a baseline.")
    baseline_emissions_g: float = Field(description="Their baselines' realised emissions, gCO2e.")
    savings_g: float = Field(description="Baseline minus chosen, gCO2e.")
    savings_pct: float | None = Field(description="Savings as % of the baseline (null: nothing reconciled).")


class ReportErrorOut(BaseModel):
    """Forecast error over reconciled placements."""

    emissions_g: float = Field(description="Realised minus forecast emissions, gCO2e.")
    pct: float | None = Field(description="That error as % of the forecast.")
    abs_emissions_g: float = Field(description="Sum of absolute per-placement errors, gCO2e.")


class ReportCostOut(BaseModel):
    """Cost of a group, over placements priced on both sides."""

    priced_placements: int = Field(description="Placements with a cost and a baseline cost.")
    cost_usd: float = Field(description="Forecast cost of the chosen options, USD.")
    baseline_cost_usd: float = Field(description="Forecast cost of their baselines, USD.")
    delta_usd: float = Field(description="Chosen minus baseline, USD (positive: paid more).")


class ReportFiguresOut(BaseModel):
    """The figures of one group, or of the total."""

    placements: int = Field(description="Placements whose planned start lies in the range.")
    with_baseline: int = Field(description="Of which with a baseline.")
    reconciled: int = Field(description="Of which reconciled.")
    reconciled_with_bundled_data: int = Field(
        description="Of which reconciled on bundled (not measured) data."
    )
    energy_kwh: float = Field(description="Forecast energy, kWh.")
    forecast: ReportForecastOut = Field(description="Forecast emissions and savings.")
    realised: ReportRealisedOut = Field(description="Realised emissions and savings.")
    forecast_error: ReportErrorOut = Field(description="How far the forecast was off.")
    cost: ReportCostOut = Field(description="Cost against the baseline.")


class ReportGroupOut(ReportFiguresOut):
    """One group of the report."""

    key: str = Field(description="The group: client id, location key, day, ISO week start or month.")


class SavingsReportOut(BaseModel):
    """GET /v1/reports/savings (JSON; `Accept: text/csv` gives one row per group)."""

    from_: str = Field(alias="from", description="Range start (inclusive, planned start), UTC.")
    to: str = Field(description="Range end (exclusive), UTC.")
    group_by: str = Field(description="client, location, day, week or month.")
    scope: str = Field(description="Whose placements: one client, or all clients (admin).")
    units: dict[str, str] = Field(description="Units of emissions, energy and cost.")
    signal: str = Field(description="Which carbon intensity the figures are in.")
    groups: list[ReportGroupOut] = Field(description="One entry per group, in key order.")
    total: ReportFiguresOut = Field(description="The whole range.")
