"""Response models of the catalog and probe routes: documentation and a contract the tests check.

The routes serialise with orjson straight from the service (no response validation on the hot
path), so these models exist for the OpenAPI document — generated clients get types instead of
`{}` — and schemathesis checks every served body against them (tests/api/test_schemathesis.py).
Extra keys are allowed so a new field is an addition, not a break.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from carbon_optimizer.api.schemas import EnergyModelOut


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class RegionOut(_Out):
    """One catalogued cloud region and the grid zone its carbon data comes from."""

    provider: str = Field(description="aws, azure, gcp or lambda")
    region: str
    display_name: str | None
    location: str | None = Field(description="City or area, as the provider names it")
    zone: str = Field(description="Electricity Maps zone whose grid the region draws from")
    latitude: float | None
    longitude: float | None
    zone_confidence: str = Field(description="How sure the region → zone mapping is: high, medium or low")


class RegionsOut(_Out):
    """GET /v1/regions answer."""

    count: int
    regions: list[RegionOut]


class ZoneOut(_Out):
    """One grid zone and the offline data the service has for it."""

    zone: str
    name: str | None
    offline_data: str = Field(description="replay-2023 (hourly 2023 curve) or annual-<year> (one flat value)")
    annual_intensity_g_per_kwh: float | None = Field(description="Latest yearly average, gCO2e/kWh")
    annual_year: int | None


class ZonesOut(_Out):
    """GET /v1/zones answer."""

    count: int
    zones: list[ZoneOut]


class SeriesPointOut(_Out):
    """One interval of a carbon-intensity series (it holds until the next point)."""

    datetime: str = Field(description="Interval start, UTC ISO 8601")
    carbon_intensity_g_per_kwh: float = Field(description="gCO2e per kWh")
    source: str = Field(description="Where this point came from, e.g. electricitymaps:forecast")


class ZoneSeriesOut(_Out):
    """GET /v1/zones/{zone}/carbon-intensity answer: the series the engine would use."""

    zone: str
    zone_name: str | None
    start: str
    end: str
    step_minutes: int
    unit: str = Field(description="Always gCO2e/kWh")
    emission_factor_type: str = Field(description="lifecycle or direct")
    sources: list[str]
    points: list[SeriesPointOut]
    warnings: list[str]


class PriceOut(_Out):
    """One instance price with its provenance."""

    provider: str
    region: str
    instance_type: str
    vcpus: int
    memory_gib: float
    gpu_count: int
    gpu_model: str | None
    price_type: str = Field(description="on_demand or spot")
    price_usd_per_hour: float
    currency: str
    source: str = Field(description="live:<provider>, cache:<provider> or bundled:<date>")
    as_of: str | None = Field(description="Date the price was published or fetched")


class PricesOut(_Out):
    """GET /v1/prices answer; `truncated` says whether `limit` cut the list."""

    count: int
    truncated: bool
    prices: list[PriceOut]


class EstimateOut(_Out):
    """POST /v1/estimate answer: list cost, energy and emissions of one instance for some hours."""

    provider: str
    region: str
    zone: str
    instance_type: str
    vcpus: int
    memory_gib: float
    gpu_count: int
    gpu_model: str | None
    hours: float
    price_type: str
    price_usd_per_hour: float
    cost_usd: float
    currency: str
    price_source: str
    as_of: str | None
    start: str
    end: str
    energy_kwh: float
    avg_carbon_intensity_g_per_kwh: float
    emissions_g: float
    carbon_source: str
    energy_model: EnergyModelOut
    warnings: list[str]


class LivenessOut(_Out):
    """GET /healthz answer."""

    status: str = Field(description="Always ok while the process serves")


class ReadinessOut(_Out):
    """GET /readyz answer (200 ready; 503 not ready, with Retry-After)."""

    status: str = Field(description="ready or not ready")


class HealthOut(_Out):
    """GET /health answer: every component's status; 200 while the service can answer."""

    status: str = Field(description="ok, or degraded when any component is degraded (answers still come)")
    version: str
    uptime_s: float
    environment: str
    components: dict[str, Any] = Field(description="One report per component: carbon, cache, prices, …")
