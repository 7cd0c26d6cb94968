"""The engine's plan formulas: an option's footprint and cost, the baseline score, savings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbon_optimizer.domain.energy import PowerEstimate
from carbon_optimizer.domain.models import Location, Objective, ObjectiveMode
from carbon_optimizer.domain.plan import Option, baseline_score, savings

POWER = PowerEstimate(
    watts=100.0, pue=1.2, model="m", source="s", utilization=0.5, cpu_watts=80.0,
    memory_watts=20.0, gpu_watts=0.0, gpu_model=None,
)  # fmt: skip
START = datetime(2026, 6, 3, 10, tzinfo=UTC)


def option(avg: float, price: float | None, energy_kwh: float = 2.0, hours: float = 3.0) -> Option:
    return Option(
        rank=1, location=Location(zone="DE"), instance_type=None, start=START,
        end=START + timedelta(hours=hours), avg_intensity_g_per_kwh=avg, energy_kwh=energy_kwh,
        power=POWER, price_usd_per_hour=price, duration_hours=hours, score=None,
        carbon_source="x", price_source=None,
    )  # fmt: skip


def test_an_options_footprint_and_cost_come_from_its_inputs() -> None:
    o = option(avg=250.0, price=0.5)
    assert o.emissions_g == pytest.approx(500.0)
    assert o.cost_usd == pytest.approx(1.5)
    assert option(avg=250.0, price=None).cost_usd is None


def test_savings_against_the_baseline_are_exact_and_signed() -> None:
    best, base = option(avg=100.0, price=0.6), option(avg=400.0, price=0.5)
    saved = savings(best, base)
    assert saved is not None
    assert saved.emissions_g == pytest.approx(600.0)
    assert saved.emissions_pct == pytest.approx(75.0)
    assert saved.cost_usd == pytest.approx(-0.3)  # the greener option costs more
    assert savings(best, None) is None
    zero = savings(best, option(avg=0.0, price=None))
    assert zero is not None
    assert zero.emissions_pct is None
    assert zero.cost_usd is None


def test_the_baseline_has_no_score_when_the_objective_needs_a_cost_it_lacks() -> None:
    carbon = Objective(mode=ObjectiveMode.CARBON)
    assert baseline_score(carbon, 800.0, None, 400.0, None) == pytest.approx(800.0)  # carbon: grams
    cost = Objective(mode=ObjectiveMode.COST)
    assert baseline_score(cost, 800.0, None, 400.0, 1.0) is None
