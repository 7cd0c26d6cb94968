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
    region: str = Field(description="Provider's region name.")
    display_name: str | None = Field(description="The provider's display name.")
    location: str | None = Field(description="City or area, as the provider names it")
    zone: str = Field(description="Electricity Maps zone whose grid the region draws from")
    latitude: float | None = Field(description="Data-centre latitude (approximate).")
    longitude: float | None = Field(description="Data-centre longitude (approximate).")
    zone_confidence: str = Field(description="How sure the region → zone mapping is: high, medium or low")


class RegionsOut(_Out):
    """GET /v1/regions answer."""

    count: int = Field(description="Number of regions listed.")
    regions: list[RegionOut] = Field(description="The regions.")


class ZoneOut(_Out):
    """One grid zone and the offline data the service has for it."""

    zone: str = Field(description="Electricity Maps zone.")
    name: str | None = Field(description="Zone name.")
    offline_data: str = Field(description="replay-2023 (hourly 2023 curve) or annual-<year> (one flat value)")
    annual_intensity_g_per_kwh: float | None = Field(description="Latest yearly average, gCO2e/kWh")
    annual_year: int | None = Field(description="Year of the annual average.")


class ZonesOut(_Out):
    """GET /v1/zones answer."""

    count: int = Field(description="Number of zones listed.")
    zones: list[ZoneOut] = Field(description="The zones.")


class SeriesPointOut(_Out):
    """One interval of a carbon-intensity series (it holds until the next point)."""

    datetime: str = Field(description="Interval start, UTC ISO 8601")
    carbon_intensity_g_per_kwh: float = Field(description="gCO2e per kWh")
    source: str = Field(description="Where this point came from, e.g. electricitymaps:forecast")


class ZoneSeriesOut(_Out):
    """GET /v1/zones/{zone}/carbon-intensity answer: the series the engine would use."""

    zone: str = Field(description="Electricity Maps zone.")
    zone_name: str | None = Field(description="Zone name.")
    start: str = Field(description="Start, UTC ISO 8601.")
    end: str = Field(description="End, UTC ISO 8601.")
    step_minutes: int = Field(description="Spacing of the series, minutes.")
    unit: str = Field(description="Always gCO2e/kWh")
    emission_factor_type: str = Field(description="lifecycle or direct")
    sources: list[str] = Field(description="Every source the points came from.")
    points: list[SeriesPointOut] = Field(description="The series, in time order.")
    warnings: list[str] = Field(description="Anything the answer rests on that a caller should know.")


class PriceOut(_Out):
    """One instance price with its provenance."""

    provider: str = Field(description="Cloud provider.")
    region: str = Field(description="Provider's region name.")
    instance_type: str = Field(description="Instance type.")
    vcpus: int | None = Field(description="vCPUs of the instance; null when the catalog lacks its size.")
    memory_gib: float | None = Field(description="Memory of the instance, GiB; null when unknown.")
    gpu_count: int = Field(description="GPUs per instance.")
    gpu_model: str | None = Field(description="GPU model, if any.")
    price_type: str = Field(description="on_demand or spot")
    price_usd_per_hour: float = Field(description="List price, USD per hour.")
    currency: str = Field(description="Always USD.")
    source: str = Field(description="live:<provider>, cache:<provider> or bundled:<date>")
    as_of: str | None = Field(description="Date the price was published or fetched")


class PricesOut(_Out):
    """GET /v1/prices answer; `truncated` says whether `limit` cut the list."""

    count: int = Field(description="Number of prices listed.")
    truncated: bool = Field(
        description="True when more rows follow this page (fetch them with `next_cursor`)."
    )
    next_cursor: str | None = Field(
        default=None,
        description="Opaque; send it back as `cursor` (same filters) for the next page; null on the last.",
    )
    prices: list[PriceOut] = Field(description="The prices.")


class EstimateOut(_Out):
    """POST /v1/estimate answer: list cost, energy and emissions of one instance for some hours."""

    provider: str = Field(description="Cloud provider.")
    region: str = Field(description="Provider's region name.")
    zone: str = Field(description="Electricity Maps zone.")
    instance_type: str = Field(description="Instance type.")
    vcpus: int | None = Field(description="vCPUs of the instance; null when the catalog lacks its size.")
    memory_gib: float | None = Field(description="Memory of the instance, GiB; null when unknown.")
    gpu_count: int = Field(description="GPUs per instance.")
    gpu_model: str | None = Field(description="GPU model, if any.")
    hours: float = Field(description="Run time, hours.")
    price_type: str = Field(description="on_demand or spot.")
    price_usd_per_hour: float = Field(description="List price, USD per hour.")
    cost_usd: float = Field(description="price × hours, USD.")
    currency: str = Field(description="Always USD.")
    price_source: str = Field(
        description="Where the price came from: live:<provider>, cache:<provider>, bundled:<date>."
    )
    as_of: str | None = Field(description="Date the price was published or fetched.")
    start: str = Field(description="Start, UTC ISO 8601.")
    end: str = Field(description="End, UTC ISO 8601.")
    energy_kwh: float = Field(description="Energy of the run incl. PUE, kWh.")
    avg_carbon_intensity_g_per_kwh: float = Field(
        description="Time-weighted mean intensity over the run, gCO2e/kWh."
    )
    emissions_g: float = Field(description="energy_kwh × avg intensity, gCO2e.")
    carbon_source: str = Field(description="Where the intensity came from.")
    energy_model: EnergyModelOut = Field(description="The energy model and its numbers.")
    warnings: list[str] = Field(description="Anything the answer rests on that a caller should know.")


class LivenessOut(_Out):
    """GET /healthz answer."""

    status: str = Field(description="Always ok while the process serves")


class ReadinessOut(_Out):
    """GET /readyz answer (200 ready; 503 not ready, with Retry-After)."""

    status: str = Field(description="ready or not ready")


class HealthOut(_Out):
    """GET /health answer: every component's status; 200 while the service can answer."""

    status: str = Field(description="ok, or degraded when any component is degraded (answers still come)")
    version: str = Field(description="Service version.")
    uptime_s: float = Field(description="Seconds since this worker started.")
    environment: str = Field(description="development or production.")
    components: dict[str, Any] = Field(description="One report per component: carbon, cache, prices, …")
