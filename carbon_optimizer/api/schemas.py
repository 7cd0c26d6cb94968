"""Request and response bodies (pydantic v2), exactly as the API contract names them.

Requests forbid unknown fields so typos fail loudly; datetimes must carry an offset (`AwareDatetime`).
Response models exist for the OpenAPI document and for tests that validate real responses against
it; routes serialise plain dicts with orjson on the hot path (measured: response-model validation
of a 5-option answer costs more than the scoring itself).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

ProviderName = Literal["aws", "azure", "gcp", "lambda"]
ModeName = Literal["carbon", "cost", "balanced", "carbon_within_budget", "monetized"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GpuSpec(_Strict):
    """GPUs the job needs; `model` is a normalised name or family (`A100` accepts both A100 sizes)."""

    count: int = Field(default=1, ge=1, le=64)
    model: str | None = Field(default=None, min_length=1, max_length=64, examples=["A100-80GB"])


class WorkloadSpec(_Strict):
    """The job: how long it runs and how big it is."""

    duration_minutes: int = Field(ge=1, le=10080, examples=[180])
    vcpus: int = Field(ge=1, le=4096, examples=[8])
    memory_gib: float = Field(gt=0, le=65536, examples=[32])
    gpu: GpuSpec | None = None
    instance_types: dict[ProviderName, Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, description="Pin the instance type per provider instead of letting the engine pick."
    )
    power_watts: float | None = Field(
        default=None, gt=0, le=1_000_000, description="Average IT power draw; overrides the energy model."
    )
    price_type: Literal["on_demand", "spot"] = "on_demand"
    cpu_architecture: Literal["x86_64", "arm64", "any"] = Field(
        default="x86_64", description="CPU architecture the job's image runs on (auto-selection only)."
    )
    allow_burstable: bool = Field(
        default=False, description="Allow burstable (CPU-credit) types such as AWS t3 or Azure B-series."
    )


class LocationSpec(_Strict):
    """A cloud region (`provider` + `region`) or a grid zone (`zone`), never both."""

    provider: ProviderName | None = None
    region: str | None = Field(default=None, min_length=1, max_length=64)
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    price_usd_per_hour: float | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Price for a grid zone, or an override of a region's list price.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> LocationSpec:
        if self.zone is not None:
            if self.provider is not None or self.region is not None:
                raise ValueError("give either 'zone' or 'provider' + 'region', not both")
        elif self.provider is None or self.region is None:
            raise ValueError("a location needs 'provider' and 'region', or 'zone'")
        return self


class WindowSpec(_Strict):
    """When the job may run: start no earlier than `earliest_start`, end no later than `deadline`."""

    earliest_start: AwareDatetime | None = None
    deadline: AwareDatetime | None = None


class ObjectiveSpec(_Strict):
    """Ranking mode and its parameters."""

    mode: ModeName = "balanced"
    carbon_weight: float = Field(default=0.5, ge=0, le=1)
    max_cost_increase_pct: float = Field(default=10.0, ge=0, le=10_000)
    carbon_price_usd_per_tonne: float | None = Field(default=None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _monetized_needs_price(self) -> ObjectiveSpec:
        if self.mode == "monetized" and self.carbon_price_usd_per_tonne is None:
            raise ValueError("mode 'monetized' requires carbon_price_usd_per_tonne")
        return self


class BaselineSpec(_Strict):
    """What the savings are measured against (default: first location at earliest_start)."""

    location: LocationSpec
    start: AwareDatetime | None = None


class OptimizeRequest(_Strict):
    """POST /v1/optimize body."""

    workload: WorkloadSpec
    locations: list[LocationSpec] | None = Field(default=None, min_length=1, max_length=200)
    providers: list[ProviderName] | None = Field(
        default=None, min_length=1, max_length=4, description="Every catalogued region of these providers."
    )
    window: WindowSpec | None = None
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    time_step_minutes: Literal[5, 15, 30, 60] = 60
    max_results: int = Field(default=5, ge=1, le=100)
    baseline: BaselineSpec | None = None
    record: bool | None = Field(
        default=None,
        description="Record the best option in the savings ledger (default: the client's configured "
        "default, usually off). Send an Idempotency-Key header so a retry never records twice.",
    )

    @model_validator(mode="after")
    def _locations_or_providers(self) -> OptimizeRequest:
        if (self.locations is None) == (self.providers is None):
            raise ValueError("give exactly one of 'locations' or 'providers'")
        return self


class EstimateRequest(_Strict):
    """POST /v1/estimate body: the list cost (and footprint) of one instance type for some hours."""

    provider: ProviderName
    region: str = Field(min_length=1, max_length=64)
    instance_type: str = Field(min_length=1, max_length=128)
    hours: float = Field(gt=0, le=8760)
    price_type: Literal["on_demand", "spot"] = "on_demand"
    start: AwareDatetime | None = Field(default=None, description="When the run starts (default now).")


# ----- responses (documentation + test validation) -----


class LocationOut(BaseModel):
    """Where an option runs; `zone` is the Electricity Maps zone used for its carbon data."""

    provider: str | None = None
    region: str | None = None
    zone: str


class OptionOut(BaseModel):
    """One ranked (location, start) option."""

    rank: int | None
    location: LocationOut
    instance_type: str | None
    start: str
    end: str
    avg_carbon_intensity_g_per_kwh: float
    energy_kwh: float
    emissions_g: float
    power_watts: float
    pue: float
    price_usd_per_hour: float | None
    cost_usd: float | None
    score: float | None
    carbon_source: str
    price_source: str | None


class SavingsOut(BaseModel):
    """Best vs baseline; positive means the best option is better."""

    emissions_g: float
    emissions_pct: float | None
    cost_usd: float | None


class InfeasibleOut(BaseModel):
    """A location that could not host the workload, and why."""

    location: LocationOut
    reason: str


class EnergyModelOut(BaseModel):
    """The energy model and the numbers it produced for the best option."""

    name: str
    source: str
    watts: float
    pue: float
    utilization_pct: float
    cpu_watts: float
    memory_watts: float
    gpu_watts: float
    gpu_model: str | None


class ObjectiveOut(BaseModel):
    """The objective as applied (defaults filled in)."""

    mode: str
    carbon_weight: float | None = None
    max_cost_increase_pct: float | None = None
    carbon_price_usd_per_tonne: float | None = None


class OptimizeResponse(BaseModel):
    """POST /v1/optimize answer."""

    request_id: str
    generated_at: str
    objective: ObjectiveOut
    window: dict[str, str]
    best: OptionOut
    options: list[OptionOut]
    baseline: OptionOut | None
    savings: SavingsOut | None
    candidates_evaluated: int
    infeasible: list[InfeasibleOut]
    energy_model: EnergyModelOut
    warnings: list[str]
    # Present only when the placement was to be recorded (see docs/ledger.md).
    placement_id: str | None = None
    recorded: bool | None = Field(default=None, description="Committed to the ledger database.")
    queued: bool | None = Field(
        default=None, description="Held in memory and retried because the database did not commit in time."
    )


class ProblemOut(BaseModel):
    """RFC 9457 problem details, as every error is returned."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, object]] | None = None
    instance: str | None = None
