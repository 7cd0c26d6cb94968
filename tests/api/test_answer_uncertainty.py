"""Intervals, p_best, tie flag and risk order of one answer (pure step, then through the API)."""

from __future__ import annotations

from datetime import datetime

import httpx
import numpy as np
import pytest

from carbon_optimizer.api.schemas import OptimizeResponse
from carbon_optimizer.app import AppOverrides
from carbon_optimizer.domain.answer_uncertainty import assess_answer
from carbon_optimizer.domain.uncertainty import Options, comonotone_interval
from carbon_optimizer.forecast_data import load_error_model
from tests.api.conftest import ClientFactory
from tests.fakes import FIXED_NOW, FakeCarbon, fixed_clock

BODY = {
    "workload": {"duration_minutes": 180, "vcpus": 8, "memory_gib": 32},
    "locations": [{"zone": "DE"}, {"zone": "FR"}, {"zone": "GB"}],
    "objective": {"mode": "carbon"},
    "max_results": 8,
}


def _paths(p50: list[list[float]], rel: float) -> np.ndarray:
    mid = np.array(p50, dtype=np.float64)
    return np.stack([mid * (1 - rel), mid, mid * (1 + rel)], axis=1)  # (zones, 3, hours)


def _one_hour_options(n: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        np.ones(n, dtype=np.int64),
        np.ones(n),
    )


def test_interval_is_centred_on_the_engines_value_and_null_without_an_error_model() -> None:
    paths = _paths([[100.0, 200.0, 300.0]], 0.2)
    paths[0, :, 2] = np.nan  # e.g. a replayed hour: no error model
    zone, start, hours, kwh = _one_hour_options(3)
    out = assess_answer(paths, zone, start, hours, kwh, np.array([100.0, 200.0, 300.0]), rho=0.9)
    assert out.interval_g[0] == pytest.approx((80.0, 120.0))
    assert out.interval_g[1] == pytest.approx((160.0, 240.0))
    assert out.interval_g[2] is None
    assert out.p_best[2] is None
    assert out.p_best[0] is not None
    assert out.p_best[1] is not None
    assert out.p_best[0] + out.p_best[1] == pytest.approx(1.0)
    assert out.p_best[0] > 0.99
    assert out.tied is False


def test_close_options_are_tied_and_p_best_is_capped() -> None:
    paths = _paths([[100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]], 0.3)
    zone, start, hours, kwh = _one_hour_options(7)
    out = assess_answer(paths, zone, start, hours, kwh, paths[0, 1], rho=0.5, cap=3)
    assert out.tied is True
    assert [p is not None for p in out.p_best] == [True] * 3 + [False] * 4
    assert sum(p for p in out.p_best if p is not None) == pytest.approx(1.0)
    again = assess_answer(paths, zone, start, hours, kwh, paths[0, 1], rho=0.5, cap=3)
    assert again.p_best == out.p_best  # seeded


def test_risk_p90_prefers_a_narrow_band_over_a_slightly_lower_median() -> None:
    wide = _paths([[100.0]], 0.6)
    narrow = _paths([[104.0]], 0.05)
    paths = np.concatenate([wide, narrow])  # zone 0 wide, zone 1 narrow, one hour each
    args = (np.array([0, 1]), np.array([0, 0]), np.array([1, 1]), np.ones(2), np.array([100.0, 104.0]))
    assert assess_answer(paths, *args, rho=0.9).order == (0, 1)
    assert assess_answer(paths, *args, rho=0.9, risk="p90").order == (1, 0)


async def test_every_option_carries_uncertainty_and_forecast_quality(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/optimize", json=BODY)
    assert response.status_code == 200, response.text
    data = response.json()
    OptimizeResponse.model_validate(data)
    options = data["options"]
    for option in options:
        u = option["uncertainty"]
        assert option["carbon_source"] == "forecast:profile-ar"
        low, high = u["emissions_interval_g"]
        assert low <= option["emissions_g"] <= high
        assert u["interval_method"] == "forecast:profile-ar"
        assert u["forecast"]["model"] == "profile-ar"
        assert u["forecast"]["history"] == "replay"
        assert u["forecast"]["backtested_mape_pct"] > 0
    p_best = [o["uncertainty"]["p_best"] for o in options]
    cap = data["uncertainty"]["p_best_cap"]
    assert all(p is not None for p in p_best[:cap])
    assert all(p is None for p in p_best[cap:])
    assert sum(p_best[:cap]) == pytest.approx(1.0, abs=1e-3)
    assert isinstance(data["uncertainty"]["tied"], bool)
    assert data["baseline"].get("uncertainty") is None


async def test_annual_only_zone_has_a_null_interval_with_a_reason(client: httpx.AsyncClient) -> None:
    body = {**BODY, "locations": [{"zone": "IS"}]}
    data = (await client.post("/v1/optimize", json=body)).json()
    u = data["options"][0]["uncertainty"]
    assert u["emissions_interval_g"] is None
    assert "annual" in u["reason"]
    assert data["uncertainty"]["tied"] is None


async def test_risk_p90_reranks_and_needs_a_carbon_mode(client: httpx.AsyncClient) -> None:
    body = {**BODY, "objective": {"mode": "carbon", "risk": "p90"}}
    data = (await client.post("/v1/optimize", json=body)).json()
    assert data["uncertainty"]["risk"] == "p90"
    assert [o["rank"] for o in data["options"]] == list(range(1, len(data["options"]) + 1))
    bad = await client.post("/v1/optimize", json={**BODY, "objective": {"mode": "cost", "risk": "p90"}})
    assert bad.status_code == 422
    assert "risk" in bad.text


async def test_provider_forecasts_get_the_lead_time_error_model_and_say_so(
    client_factory: ClientFactory,
) -> None:
    carbon = FakeCarbon({"DE": lambda h: 300.0 + 50.0 * (h % 24 < 6), "FR": lambda h: 310.0}, "em:forecast")
    body = {
        "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8, "power_watts": 1000},
        "locations": [{"zone": "DE"}, {"zone": "FR"}],
        "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
        "objective": {"mode": "carbon"},
    }
    async with client_factory(overrides=AppOverrides(carbon=carbon, clock=fixed_clock())) as client:
        data = (await client.post("/v1/optimize", json=body)).json()
    model = load_error_model()
    for option in data["options"]:
        u = option["uncertainty"]
        assert u["interval_method"] == "error-model"
        assert u["forecast"] is None
        low, high = u["emissions_interval_g"]
        # Never narrower than the table's band at the option's lead (rho < 1 only widens the cheap form).
        ahead = int((datetime.fromisoformat(option["start"]) - FIXED_NOW).total_seconds() // 3600) + 1
        lo, hi = model.relative_band(np.array([ahead]))
        assert low <= option["emissions_g"] * (1 + lo[0]) * 1.001
        assert high >= option["emissions_g"] * (1 + hi[0]) * 0.999


async def test_measured_history_has_no_width(client_factory: ClientFactory) -> None:
    carbon = FakeCarbon({"DE": lambda h: 300.0, "FR": lambda h: 200.0}, "em:history")
    body = {
        "workload": {"duration_minutes": 60, "vcpus": 4, "memory_gib": 8, "power_watts": 1000},
        "locations": [{"zone": "DE"}, {"zone": "FR"}],
        "objective": {"mode": "carbon"},
    }
    async with client_factory(overrides=AppOverrides(carbon=carbon, clock=fixed_clock())) as client:
        data = (await client.post("/v1/optimize", json=body)).json()
    best = data["options"][0]
    assert best["uncertainty"]["interval_method"] == "measured"
    assert best["uncertainty"]["emissions_interval_g"] == [best["emissions_g"], best["emissions_g"]]


def test_intervals_from_prefix_sums_follow_the_comonotone_rule() -> None:
    """The answer's intervals are `comonotone_interval`'s, rescaled onto the engine's emissions."""
    rng = np.random.default_rng(3)
    mid = rng.uniform(100, 500, size=(2, 30))
    paths = np.stack([mid * 0.8, mid, mid * 1.3], axis=1)
    zone = np.array([0, 1, 0, 1], dtype=np.int64)
    start = np.array([0, 5, 11, 20], dtype=np.int64)
    hours = np.array([3, 7, 1, 10], dtype=np.int64)
    kwh = np.array([2.0, 0.5, 1.5, 3.0])
    emissions = np.array([600.0, 150.0, 400.0, 1200.0])
    out = assess_answer(paths, zone, start, hours, kwh, emissions, rho=0.9)
    band = comonotone_interval(paths, Options(zone, start, hours, kwh))
    for k, interval in enumerate(out.interval_g):
        assert interval is not None
        scale = emissions[k] / band[k, 1]
        assert interval == pytest.approx((band[k, 0] * scale, band[k, 2] * scale), rel=1e-12)
