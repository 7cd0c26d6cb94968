"""Request and response bodies (pydantic v2), exactly as the API contract names them.

Requests forbid unknown fields so typos fail loudly; datetimes must carry an offset and lie in the
accepted range (`ApiDatetime`, api/timebounds.py).
Response models exist for the OpenAPI document and for tests that validate real responses against
it; routes serialise plain dicts with orjson on the hot path (measured: response-model validation
of a 5-option answer costs more than the scoring itself).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carbon_optimizer.api.timebounds import ApiDatetime

ProviderName = Literal["aws", "azure", "gcp", "lambda"]
ModeName = Literal["carbon", "cost", "balanced", "carbon_within_budget", "monetized"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GpuSpec(_Strict):
    """GPUs the job needs; `model` is a normalised name or family (`A100` accepts both A100 sizes)."""

    count: int = Field(default=1, ge=1, le=64, description="GPUs per instance.")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        examples=["A100-80GB"],
        description="GPU model or family (case and punctuation ignored); omitted: any model.",
    )


class WorkloadSpec(_Strict):
    """The job: how long it runs and how big it is."""

    duration_minutes: int = Field(
        ge=1, le=10080, examples=[180], description="Run time in minutes (≤ 7 days)."
    )
    vcpus: int = Field(
        ge=1, le=4096, examples=[8], description="vCPUs the job needs (the smallest fit is picked)."
    )
    memory_gib: float = Field(gt=0, le=65536, examples=[32], description="Memory the job needs, GiB.")
    gpu: GpuSpec | None = Field(default=None, description="GPUs the job needs; omitted: none.")
    instance_types: dict[ProviderName, Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, description="Pin the instance type per provider instead of letting the engine pick."
    )
    power_watts: float | None = Field(
        default=None, gt=0, le=1_000_000, description="Average IT power draw; overrides the energy model."
    )
    price_type: Literal["on_demand", "spot"] = Field(
        default="on_demand", description="Which list price to use: on-demand or spot (interruptible)."
    )
    cpu_architecture: Literal["x86_64", "arm64", "any"] = Field(
        default="x86_64", description="CPU architecture the job's image runs on (auto-selection only)."
    )
    allow_burstable: bool = Field(
        default=False, description="Allow burstable (CPU-credit) types such as AWS t3 or Azure B-series."
    )


class LocationSpec(_Strict):
    """A cloud region (`provider` + `region`) or a grid zone (`zone`), never both."""

    provider: ProviderName | None = Field(default=None, description="Cloud provider (with `region`).")
    region: str | None = Field(
        default=None, min_length=1, max_length=64, description="Provider's region name, e.g. us-east-1."
    )
    zone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Electricity Maps grid zone, e.g. DE or US-CAL-CISO (instead of provider + region).",
    )
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

    earliest_start: ApiDatetime | None = Field(
        default=None, description="Earliest start, with offset; default and anything in the past: now."
    )
    deadline: ApiDatetime | None = Field(
        default=None,
        description="Latest allowed END of the run; default earliest_start + 24 h; window ≤ 7 days.",
    )


class ObjectiveSpec(_Strict):
    """Ranking mode and its parameters."""

    mode: ModeName = Field(
        default="balanced",
        description=(
            "carbon: least emissions; cost: least cost; balanced: carbon_weight × emissions/min_emissions + "
            "(1 − carbon_weight) × cost/min_cost; carbon_within_budget: least emissions among options "
            "costing ≤ (1 + max_cost_increase_pct/100) × min_cost; monetized: least cost + emissions priced "
            "at carbon_price_usd_per_tonne. Ties: earlier start, then request order."
        ),
    )
    carbon_weight: float = Field(
        default=0.5, ge=0, le=1, description="balanced only: weight of carbon, 0..1."
    )
    max_cost_increase_pct: float = Field(
        default=10.0, ge=0, le=10_000, description="carbon_within_budget only: allowed cost increase, %."
    )
    carbon_price_usd_per_tonne: float | None = Field(
        default=None, ge=0, le=1_000_000, description="monetized only (required there): USD per tCO2e."
    )
    risk: Literal["p50", "p90"] = Field(
        default="p50",
        description=(
            "p50: rank on the median forecast; p90: re-rank the top options (those with p_best) by their "
            "pessimistic (p90) emissions. p90 needs mode carbon or carbon_within_budget."
        ),
    )

    @model_validator(mode="after")
    def _monetized_needs_price(self) -> ObjectiveSpec:
        if self.mode == "monetized" and self.carbon_price_usd_per_tonne is None:
            raise ValueError("mode 'monetized' requires carbon_price_usd_per_tonne")
        if self.risk == "p90" and self.mode not in ("carbon", "carbon_within_budget"):
            raise ValueError(
                "risk 'p90' ranks by pessimistic emissions: use mode carbon or carbon_within_budget"
            )
        return self


class BaselineSpec(_Strict):
    """What the savings are measured against (default: first location at earliest_start)."""

    location: LocationSpec = Field(description="Where the job would run without optimisation.")
    start: ApiDatetime | None = Field(
        default=None, description="When it would start; default earliest_start."
    )


class OptimizeRequest(_Strict):
    """POST /v1/optimize body."""

    workload: WorkloadSpec = Field(description="The job to place.")
    locations: list[LocationSpec] | None = Field(
        default=None, min_length=1, max_length=200, description="Candidate locations (or give `providers`)."
    )
    providers: list[ProviderName] | None = Field(
        default=None, min_length=1, max_length=4, description="Every catalogued region of these providers."
    )
    window: WindowSpec | None = Field(
        default=None, description="When the job may run; default the next 24 h."
    )
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec, description="How options are ranked.")
    time_step_minutes: Literal[5, 15, 30, 60] = Field(
        default=60, description="Spacing of candidate starts from earliest_start, minutes."
    )
    max_results: int = Field(default=5, ge=1, le=100, description="How many ranked options to return.")
    max_per_location: int | None = Field(
        default=1,
        ge=1,
        le=2016,
        description=(
            "How many start times of one location the answer may show: 1 (default) = each location's "
            "best start, ranked across locations; n = its n best starts; null = every (location, start) "
            "pair. Starts of one location with identical numbers are always shown once (the earliest)."
        ),
    )
    baseline: BaselineSpec | None = Field(
        default=None, description="What savings are measured against; default the first location, now."
    )
    signal: Literal["average", "marginal"] = Field(
        default="average",
        description=(
            "Carbon signal: the grid's average intensity (every zone), or the marginal emissions "
            "rate (only zones with a source that publishes it; otherwise 422 naming the zones)."
        ),
    )
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

    provider: ProviderName = Field(description="Cloud provider.")
    region: str = Field(min_length=1, max_length=64, description="Provider's region name.")
    instance_type: str = Field(min_length=1, max_length=128, description="e.g. m5.large, n2-standard-8.")
    hours: float = Field(gt=0, le=8760, description="Run time in hours (≤ one year).")
    price_type: Literal["on_demand", "spot"] = Field(default="on_demand", description="Which list price.")
    start: ApiDatetime | None = Field(default=None, description="When the run starts (default now).")


# ----- responses (documentation + test validation) -----


class LocationOut(BaseModel):
    """Where an option runs; `zone` is the Electricity Maps zone used for its carbon data."""

    provider: str | None = Field(default=None, description="Cloud provider, for a cloud region.")
    region: str | None = Field(default=None, description="Provider's region name, for a cloud region.")
    zone: str = Field(description="Electricity Maps zone whose carbon data the option uses.")


class ForecastQualityOut(BaseModel):
    """How an option's window relies on our own forecaster."""

    model: str = Field(description="Forecast model, e.g. profile-ar (docs/forecasting.md).")
    history: str = Field(
        description=(
            "What it was fitted on: live (the live provider's measured history), mixed (measured "
            "history with gaps filled from the bundled 2023 data) or replay (the bundled 2023 data)."
        )
    )
    hours_ahead: list[int] = Field(
        description="First and last hour ahead of now that the window takes from it."
    )
    backtested_mape_pct: float = Field(
        description="Backtested p50 mean absolute percentage error at the window's furthest hour ahead, %."
    )


class OptionUncertaintyOut(BaseModel):
    """Forecast uncertainty of one option."""

    emissions_interval_g: list[float] | None = Field(
        description=(
            "[p10, p90] of emissions_g, gCO2e; null when an hour has no calibrated error model (see reason)."
        )
    )
    interval_method: str | None = Field(
        description=(
            "Where the band comes from: forecast:<model> (its own quantiles), error-model (lead-time error "
            "table of our backtest: the provider's forecast carries no interval), measured (history); "
            "joined by +."
        )
    )
    reason: str | None = Field(description="Why emissions_interval_g is null (e.g. bundled replay data).")
    p_best: float | None = Field(
        description=(
            "Probability this option is truly the lowest-emission one among the options that have it (the "
            "first p_best_cap with an interval): correlated Monte Carlo; null outside them."
        )
    )
    beats_leader: float | None = Field(
        description="Share of the draws in which this option emits less than the leader (leader: 0.5)."
    )
    forecast: ForecastQualityOut | None = Field(
        description="Set when the window relies on our own forecaster: model, history and backtested error."
    )


class AnswerUncertaintyOut(BaseModel):
    """How sure the ranking is."""

    tied: bool | None = Field(
        description=(
            "True when another top option beats the leader in at least 25 % of the draws (statistically "
            "tied); null when fewer than two top options have an interval."
        )
    )
    risk: str = Field(description="The ranking risk applied: p50 or p90.")
    p_best_cap: int = Field(description="At most this many top options get p_best (Monte Carlo cost).")
    draws: int = Field(description="Monte Carlo draws (seeded: the same request gives the same answer).")
    hourly_correlation: float = Field(
        description=(
            "Lag-1 correlation of forecast errors between hours of one zone (AR(1)); zones independent."
        )
    )


class OptionOut(BaseModel):
    """One ranked (location, start) option."""

    rank: int | None = Field(description="1 = best; null for the baseline.")
    location: LocationOut = Field(description="Where it runs.")
    instance_type: str | None = Field(description="Picked (or pinned) instance type; null for a grid zone.")
    start: str = Field(description="Start, UTC ISO 8601.")
    end: str = Field(description="End = start + duration, UTC ISO 8601.")
    avg_carbon_intensity_g_per_kwh: float = Field(
        description="Time-weighted mean grid intensity over [start, end), gCO2e/kWh."
    )
    energy_kwh: float = Field(description="power_watts × pue × hours / 1000, kWh.")
    emissions_g: float = Field(description="energy_kwh × avg_carbon_intensity_g_per_kwh, gCO2e.")
    power_watts: float = Field(description="Average IT power draw from the energy model (or given), W.")
    pue: float = Field(description="Data-centre power usage effectiveness applied.")
    price_usd_per_hour: float | None = Field(description="List price used, USD/h; null without a price.")
    cost_usd: float | None = Field(description="price_usd_per_hour × hours, USD.")
    score: float | None = Field(description="The objective's value (lower is better); null for the baseline.")
    carbon_source: str = Field(description="Where the intensity came from, e.g. electricitymaps:forecast.")
    carbon_data: Literal["forecast", "history", "replay", "flat"] = Field(
        default="forecast",
        description=(
            "Kind of carbon data behind this run's window: forecast (a live source's prediction), "
            "history (measured), replay (the bundled 2023 curve of the same week), flat (one value held: "
            "an annual average or the latest reading; every start ties). A window mixing kinds gets the "
            "weakest, in the order flat < replay < forecast < history."
        ),
    )
    price_source: str | None = Field(description="Where the price came from, e.g. live:aws, bundled:<date>.")
    delta_to_best_g: float | None = Field(
        default=None,
        description=(
            "This option's emissions minus the best option's, gCO2e: 0 for the best, positive = emits "
            "more (negative when a cost-led mode ranks a dirtier option first); null for the baseline."
        ),
    )
    delta_to_best_pct: float | None = Field(
        default=None,
        description="delta_to_best_g as a % of the best option's emissions; null when the best emits 0.",
    )

    uncertainty: OptionUncertaintyOut | None = Field(
        default=None, description="Forecast uncertainty of this option; null for the baseline."
    )


class BaselineOut(OptionOut):
    """The option savings are measured against, and how it was chosen."""

    kind: Literal["explicit", "first-listed-now", "median-now"] | None = Field(
        default=None,
        description=(
            "How the baseline was chosen: explicit (the request's `baseline`), first-listed-now (the "
            "first of `locations` at the effective earliest start), median-now (with `providers`: the "
            "candidate whose emissions, started at the earliest start, are the median of all candidates)."
        ),
    )


class SavingsOut(BaseModel):
    """Best vs baseline; positive means the best option is better."""

    emissions_g: float = Field(description="Baseline emissions − best emissions, gCO2e (positive = saved).")
    emissions_pct: float | None = Field(description="The same as a % of the baseline's emissions.")
    cost_usd: float | None = Field(description="Baseline cost − best cost, USD (positive = cheaper).")
    cost_pct: float | None = Field(
        default=None,
        description="The same as a % of the baseline's cost (positive = cheaper); null without a cost.",
    )


class InfeasibleOut(BaseModel):
    """A location that could not host the workload, and why."""

    location: LocationOut = Field(description="The candidate location.")
    reason: str = Field(description="Why it cannot host the workload (no fitting instance, no data, …).")


class EnergyModelOut(BaseModel):
    """The energy model and the numbers it produced for the best option."""

    name: str = Field(description="Which model produced the draw (e.g. CCF coefficients, or given).")
    source: str = Field(description="Citation of the coefficients.")
    watts: float = Field(description="Total average IT draw, W.")
    pue: float = Field(description="Power usage effectiveness applied on top.")
    utilization_pct: float = Field(description="CPU utilisation the coefficients assume, %.")
    cpu_watts: float = Field(description="CPU share of the draw, W.")
    memory_watts: float = Field(description="Memory share of the draw, W.")
    gpu_watts: float = Field(description="GPU share of the draw, W.")
    gpu_model: str | None = Field(description="GPU model whose TDP was used, if any.")


class ObjectiveOut(BaseModel):
    """The objective as applied (defaults filled in)."""

    mode: str = Field(description="The ranking mode applied.")
    requested_mode: str | None = Field(
        default=None,
        description=(
            "The mode the request asked for. Differs from `mode` only when a cost-using mode had no "
            "price for any candidate and carbon mode was applied instead (with a warning)."
        ),
    )
    carbon_weight: float | None = Field(default=None, description="balanced: the weight used.")
    max_cost_increase_pct: float | None = Field(
        default=None, description="carbon_within_budget: the cap used."
    )
    carbon_price_usd_per_tonne: float | None = Field(default=None, description="monetized: the price used.")


class OptimizeResponse(BaseModel):
    """POST /v1/optimize answer."""

    request_id: str = Field(description="Echo of X-Request-ID, or a generated id; quote it in reports.")
    generated_at: str = Field(description="When the answer was computed, UTC ISO 8601.")
    objective: ObjectiveOut = Field(description="The objective as applied.")
    window: dict[str, str] = Field(description="The window as applied: earliest_start and deadline, UTC.")
    best: OptionOut = Field(description="The rank-1 option.")
    options: list[OptionOut] = Field(description="Ranked options, best first (at most max_results).")
    baseline: BaselineOut | None = Field(description="The option savings are measured against.")
    savings: SavingsOut | None = Field(description="Best vs baseline.")
    candidates_evaluated: int = Field(description="(location, start) pairs scored.")
    infeasible: list[InfeasibleOut] = Field(
        description="Locations that could not host the workload, and why."
    )
    energy_model: EnergyModelOut = Field(description="The energy model behind the best option.")
    data_quality: dict[str, int] | None = Field(
        default=None,
        description=(
            "How many scored locations rest on each kind of carbon data over the whole window, e.g. "
            '{"forecast": 2, "history": 0, "replay": 1, "flat": 5} (same kinds as options[].carbon_data).'
        ),
    )
    warnings: list[str] = Field(description="Anything the answer rests on that a caller should know.")
    uncertainty: AnswerUncertaintyOut | None = Field(
        default=None, description="How sure the ranking is (tied flag, risk, Monte Carlo settings)."
    )

    # Present only when the placement was to be recorded (see docs/ledger.md).
    placement_id: str | None = Field(
        default=None, description="Savings-ledger id of the recorded best option (only when recording)."
    )
    recorded: bool | None = Field(default=None, description="Committed to the ledger database.")
    queued: bool | None = Field(
        default=None, description="Held in memory and retried because the database did not commit in time."
    )


class ProblemInfeasibleOut(BaseModel):
    """One candidate of a nothing-feasible 422, named by its key as the request gave it."""

    location: str = Field(description="The location's key: `provider/region` or the bare zone.")
    reason: str = Field(description="Why it cannot host the workload.")


class ProblemOut(BaseModel):
    """RFC 9457 problem details, as every error is returned."""

    type: str = Field(description="A URI naming the problem kind (about:blank for plain HTTP errors).")
    title: str = Field(description="Short, stable summary of the kind.")
    status: int = Field(description="The HTTP status, repeated.")
    detail: str | None = Field(default=None, description="What went wrong in this request, for people.")
    errors: list[dict[str, object]] | None = Field(
        default=None, description="422 only: each invalid field (`loc` names it, as pydantic does)"
    )
    infeasible: list[ProblemInfeasibleOut] | None = Field(
        default=None, description="422 nothing-feasible only: every candidate location and why it failed"
    )
    instance: str | None = Field(default=None, description="The request id, for support.")
