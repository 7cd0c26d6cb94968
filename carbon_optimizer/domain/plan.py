"""The engine's answer to an optimisation: a typed plan (options, baseline, savings), unrounded.

Why here: the numbers of an option (emissions = energy × intensity, cost = price × hours), the
baseline's score and the savings against it are the engine's formulas, so they live beside the
scoring core, pure and exact. Rounding and the JSON shape are presentation (`api/present.py`,
shared by the HTTP API and the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from carbon_optimizer.domain.energy import PowerEstimate
from carbon_optimizer.domain.models import Location, Objective, ObjectiveMode
from carbon_optimizer.domain.scoring import objective_score


@dataclass(frozen=True, slots=True)
class Option:
    """One (location, start) placement with its footprint, cost and provenance."""

    rank: int | None  # None for the baseline
    location: Location
    instance_type: str | None
    start: datetime
    end: datetime
    avg_intensity_g_per_kwh: float
    energy_kwh: float
    power: PowerEstimate
    price_usd_per_hour: float | None
    duration_hours: float
    score: float | None
    carbon_source: str
    price_source: str | None
    # Emissions above the best option's (0 for the best; negative when a cost-led ranking puts a
    # dirtier option first); the percentage is of the best's emissions, None when it emits nothing.
    delta_to_best_g: float | None = None
    delta_to_best_pct: float | None = None
    # Weakest kind of carbon data in the run's window (`domain/data_quality.py`).
    carbon_data: str = "forecast"

    @property
    def emissions_g(self) -> float:
        """Operational emissions of the run: energy × average intensity over its window."""
        return self.energy_kwh * self.avg_intensity_g_per_kwh

    @property
    def cost_usd(self) -> float | None:
        """List cost of the run (None without a price)."""
        price = self.price_usd_per_hour
        return None if price is None else price * self.duration_hours


@dataclass(frozen=True, slots=True)
class Savings:
    """What the best option saves against the baseline (positive = better than the baseline)."""

    emissions_g: float
    emissions_pct: float | None  # None when the baseline emits nothing
    cost_usd: float | None
    cost_pct: float | None = None  # share of the baseline's cost; None without costs or at cost 0


@dataclass(frozen=True, slots=True)
class Plan:
    """The ranked answer: best first, the baseline it is compared with, and what it knows it lacks."""

    request_id: str
    generated_at: datetime
    objective: Objective
    window_start: datetime
    window_end: datetime
    options: tuple[Option, ...]
    baseline: Option | None
    savings: Savings | None
    candidates_evaluated: int
    infeasible: tuple[tuple[Location, str], ...]
    energy_model: PowerEstimate
    warnings: tuple[str, ...]
    requested_mode: ObjectiveMode | None = None  # the mode asked for, when it differs from `objective`
    # Scored locations per kind of carbon data over the whole window (`domain/data_quality.py`).
    data_quality: dict[str, int] | None = None
    # How the baseline was chosen: explicit, first-listed-now or median-now (None without baseline).
    baseline_kind: str | None = None
    # Forecast uncertainty per option (same order) and the tie flag (service's uncertainty step).
    uncertainty: object = None  # uncertainty_step.PlanUncertainty (typed there: domain stays pure)

    @property
    def best(self) -> Option:
        """The top-ranked option."""
        return self.options[0]


def baseline_score(
    objective: Objective,
    emissions_g: float,
    cost_usd: float | None,
    min_emissions_g: float,
    min_cost_usd: float | None,
) -> float | None:
    """The baseline's score on the ranked options' scale (None when the objective needs a cost)."""
    if objective.uses_cost and cost_usd is None:
        return None
    return objective_score(objective, emissions_g, cost_usd, min_emissions_g, min_cost_usd)


def margin(emissions_g: float, best_g: float) -> tuple[float, float | None]:
    """An option's emissions margin to the best's (g, and % of the best's; None when it emits 0)."""
    delta = emissions_g - best_g
    return delta, (100.0 * delta / best_g if best_g > 0 else None)


def savings(best: Option, baseline: Option | None) -> Savings | None:
    """Emissions and cost saved by `best` against `baseline`."""
    if baseline is None:
        return None
    delta = baseline.emissions_g - best.emissions_g
    pct = 100.0 * delta / baseline.emissions_g if baseline.emissions_g > 0 else None
    best_cost, base_cost = best.cost_usd, baseline.cost_usd
    cost = None if best_cost is None or base_cost is None else base_cost - best_cost
    cost_pct = None if cost is None or not base_cost else 100.0 * cost / base_cost
    return Savings(emissions_g=delta, emissions_pct=pct, cost_usd=cost, cost_pct=cost_pct)
