"""Kinds of carbon data from source labels, and the weakest-kind rule for mixed windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbon_optimizer.domain.data_quality import data_quality_warnings, kind_of, summary, weakest
from carbon_optimizer.domain.energy import PowerEstimate
from carbon_optimizer.domain.models import Location
from carbon_optimizer.domain.plan import Option


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        ("electricitymaps:forecast", "forecast"),
        ("electricitymaps:forecast(stale)", "forecast"),
        ("watttime:co2_moer:forecast", "forecast"),
        ("electricitymaps:history", "history"),
        ("carbonintensity-uk:actual", "history"),
        ("electricitymaps:history(stale)", "history"),
        ("fallback:replay-2023", "replay"),
        ("fallback:annual-2025", "flat"),
        ("electricitymaps:latest", "flat"),
        ("electricitymaps:forecast(extended)", "flat"),
    ],
)
def test_kind_of_each_chain_label(label: str, kind: str) -> None:
    assert kind_of(label) == kind


def test_a_mixed_window_is_its_weakest_kind() -> None:
    assert weakest(["electricitymaps:history", "electricitymaps:forecast"]) == "forecast"
    assert weakest(["electricitymaps:forecast", "fallback:replay-2023"]) == "replay"
    assert weakest(["fallback:replay-2023", "fallback:annual-2025"]) == "flat"
    assert weakest(["electricitymaps:history"]) == "history"


def test_summary_lists_every_kind() -> None:
    assert summary(["flat", "flat", "replay"]) == {"flat": 2, "replay": 1, "forecast": 0, "history": 0}


def test_our_forecast_ranks_by_what_its_fit_used() -> None:
    # Without `fitted_on` (or with a replay/mixed fit) it is as good as the replay it may rest on;
    # fitted on wholly measured history it is a forecast.
    assert kind_of("forecast:profile-ar") == "replay"
    assert kind_of("forecast:profile-ar(stale)", "live") == "forecast"
    assert kind_of("forecast:profile-ar", "mixed") == "replay"
    assert weakest(["electricitymaps:forecast", "forecast:profile-ar"], "live") == "forecast"
    assert kind_of("fallback:replay-2023", "live") == "replay"  # only our forecast's hours move


def _option(carbon_source: str) -> Option:
    power = PowerEstimate(
        watts=100.0, pue=1.2, model="m", source="s", utilization=0.5, cpu_watts=80.0,
        memory_watts=20.0, gpu_watts=0.0, gpu_model=None,
    )  # fmt: skip
    start = datetime(2026, 6, 3, 12, tzinfo=UTC)
    return Option(
        rank=1, location=Location(zone="DE"), instance_type=None, start=start,
        end=start + timedelta(hours=2), avg_intensity_g_per_kwh=300.0, energy_kwh=1.0, power=power,
        price_usd_per_hour=None, duration_hours=2.0, score=None, carbon_source=carbon_source,
        price_source=None, carbon_data="replay",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fit", "says"),
    [
        (None, "fitted on the bundled 2023 data"),
        ("replay", "fitted on the bundled 2023 data"),
        ("mixed", "fitted on measured history with gaps filled from the bundled 2023 data"),
    ],
)
def test_the_replay_warning_names_what_our_forecast_was_fitted_on(fit: str | None, says: str) -> None:
    fitted_on = None if fit is None else {"DE": fit}.get
    warnings = data_quality_warnings([_option("forecast:profile-ar")], True, fitted_on)
    assert any(f"best start for DE comes from our forecast {says} " in w for w in warnings), warnings
