"""Request and response bodies of POST /v1/compare/deployment (pydantic v2).

Kept out of `api/schemas.py` so the comparison can evolve without touching the optimiser's
contract. Requests forbid unknown fields; the response model documents the OpenAPI shape (the
route serialises plain dicts with orjson, as /v1/optimize does).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carbon_optimizer.api.schemas import ProviderName

OptionName = Literal[
    "aws_lambda_x86",
    "aws_lambda_arm",
    "azure_functions_consumption",
    "azure_functions_flex",
    "gcp_cloud_run",
    "vm",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CompareLocation(_Strict):
    """A cloud region, as in /v1/optimize (`provider` + `region`)."""

    provider: ProviderName = Field(
        description="Cloud provider: aws, azure or gcp (each prices its own offers)."
    )
    region: str = Field(
        min_length=1, max_length=64, examples=["us-east-1"], description="Provider's region name."
    )


class CompareDeploymentRequest(_Strict):
    """POST /v1/compare/deployment body: one recurring workload, the regions to price it in."""

    invocations_per_month: float | None = Field(
        default=None,
        ge=0,
        le=1e13,
        examples=[3_000_000],
        description="Monthly volume (or give hourly_profile).",
    )
    hourly_profile: list[Annotated[float, Field(ge=0, le=1e12)]] | None = Field(
        default=None,
        min_length=24,
        max_length=168,
        description="Invocations per hour of a typical day (24 values) or week (168); sets volume and peak.",
    )
    duration_ms: float = Field(
        gt=0, le=86_400_000, examples=[120], description="Billed duration per invocation."
    )
    memory_mb: float = Field(ge=1, le=65536, examples=[1536], description="Configured memory per invocation.")
    cpu_architecture: Literal["x86_64", "arm64", "any"] = Field(
        default="any", description="What the code runs on; options on another architecture are infeasible."
    )
    peak_concurrency: float | None = Field(
        default=None,
        gt=0,
        le=1e7,
        description="Peak in-flight invocations (default: from the profile or the average).",
    )
    request_kb: float = Field(
        default=0, ge=0, le=1e7, description="Request payload per invocation (ingress is free)."
    )
    response_kb: float = Field(
        default=0, ge=0, le=1e7, description="Response payload per invocation, to the internet."
    )
    egress_gb_per_month: float = Field(
        default=0, ge=0, le=1e8, description="Other internet egress per month."
    )
    trigger: Literal["http", "event"] = Field(
        default="http",
        description="http (billed requests, payloads to the internet) or event (queue/stream).",
    )
    locations: list[CompareLocation] = Field(
        min_length=1, max_length=50, description="Regions to compare in."
    )
    options: list[OptionName] | None = Field(
        default=None,
        min_length=1,
        description="Options to compare (default: all each region's cloud offers). A named option whose "
        "limits the input breaks is a 422.",
    )
    free_tier: bool = Field(
        default=True, description="The account's monthly free tier is available to this workload."
    )
    per_instance_concurrency: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Requests sharing one Cloud Run / Flex instance (1 = pessimistic).",
    )
    cloud_run_vcpu: float | None = Field(
        default=None, gt=0, le=8, description="Cloud Run vCPU per instance (default: the memory's minimum)."
    )
    flex_instance_memory_mb: Literal[512, 2048, 4096] | None = Field(
        default=None, description="Azure Flex Consumption instance size (default: the smallest that fits)."
    )
    vcpu_per_invocation: float | None = Field(
        default=None, gt=0, le=64, description="VM CPU per in-flight invocation (default: memory_mb / 1,769)."
    )
    vm_target_utilization: float = Field(
        default=0.6, gt=0, le=1, description="CPU utilisation the VM fleet is sized for at peak (0..1)."
    )
    vm_min_instances: int = Field(
        default=1, ge=1, le=10, description="Smallest VM fleet (e.g. 2 for redundancy)."
    )
    vm_allow_burstable: bool = Field(default=False, description="Allow burstable (CPU-credit) VM types.")
    gcp_egress_pricing: Literal["source_destination", "legacy_premium"] = Field(
        default="source_destination", description="Which GCP internet-egress schedule applies to the account."
    )
    curve_points: int = Field(default=41, ge=2, le=200, description="Points of the cost-vs-volume curve.")

    @field_validator("hourly_profile")
    @classmethod
    def _day_or_week(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len(value) not in (24, 168):
            raise ValueError("hourly_profile has 24 (a day) or 168 (a week) values")
        return value

    @model_validator(mode="after")
    def _one_volume(self) -> CompareDeploymentRequest:
        if (self.invocations_per_month is None) == (self.hourly_profile is None):
            raise ValueError("give exactly one of 'invocations_per_month' and 'hourly_profile'")
        return self


class CompareDeploymentResponse(BaseModel):
    """Per (region, option) monthly cost, energy and emissions; best picks; break-even; curve."""

    request_id: str = Field(description="Echo of X-Request-ID, or a generated id.")
    generated_at: str = Field(description="When the answer was computed, UTC ISO 8601.")
    workload: dict[str, Any] = Field(description="The workload as applied (volume, duration, memory, …).")
    options: list[dict[str, Any]] = Field(
        description="Per (region, option): monthly cost breakdown (USD), energy (kWh), emissions (gCO2e), "
        "prices with provenance, or infeasible with why."
    )
    best: dict[str, Any] = Field(description="Cheapest and lowest-emission feasible options.")
    break_even: dict[str, Any] | None = Field(
        description="Monthly volume where the best serverless and the best VM option cost the same."
    )
    curve: dict[str, Any] | None = Field(
        description="Cost and emissions against monthly volume, for plotting."
    )
    methodology: dict[str, Any] = Field(description="Energy model and price sources behind the numbers.")
    warnings: list[str] = Field(description="Anything the answer rests on that a caller should know.")
