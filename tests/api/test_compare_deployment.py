"""POST /v1/compare/deployment end to end on the embedded (bundled-data) app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BODY: dict[str, Any] = {
    "invocations_per_month": 3_000_000,
    "duration_ms": 120,
    "memory_mb": 1536,
    "locations": [
        {"provider": "aws", "region": "us-east-1"},
        {"provider": "azure", "region": "eastus"},
        {"provider": "gcp", "region": "us-central1"},
    ],
}


async def test_compares_every_option_with_breakdown_energy_and_provenance(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/compare/deployment", json=BODY)
    assert r.status_code == 200
    body = r.json()
    by = {(o["region"], o["option"]): o for o in body["options"]}
    assert set(by) == {
        ("us-east-1", "aws_lambda_x86"),
        ("us-east-1", "aws_lambda_arm"),
        ("us-east-1", "vm"),
        ("eastus", "azure_functions_consumption"),
        ("eastus", "azure_functions_flex"),
        ("eastus", "vm"),
        ("us-central1", "gcp_cloud_run"),
        ("us-central1", "vm"),
    }
    lam = by[("us-east-1", "aws_lambda_x86")]
    assert lam["cost_usd_per_month"]["total"] == pytest.approx(2.733338, abs=1e-6)  # the page's $2.73
    for option in body["options"]:
        cost = option["cost_usd_per_month"]
        assert cost["total"] == pytest.approx(
            cost["compute"] + cost["requests"] + cost["free_tier"] + cost["egress"]
        )
        assert option["energy_kwh_per_month"] > 0
        g = option["carbon_intensity"]["g_per_kwh"]
        assert option["emissions_kg_per_month"] == pytest.approx(
            option["energy_kwh_per_month"] * g / 1000, rel=1e-4
        )
        assert option["prices"]
        assert all(p["source"] and p["reference"] for p in option["prices"])
    vm = by[("us-east-1", "vm")]
    assert vm["vm"]["count"] >= 1
    assert vm["prices"][0]["source"].startswith("bundled:")
    assert body["best"]["serverless"]["total_usd_per_month"] <= lam["cost_usd_per_month"]["total"]


async def test_break_even_and_curve_cross_at_the_reported_volume(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/compare/deployment", json={**BODY, "curve_points": 60})).json()
    be = body["break_even"]
    assert be is not None
    assert be["serverless"] == body["best"]["serverless"]
    assert be["vm"]["region"] == body["best"]["vm"]["region"]
    assert be["serverless_usd"] == pytest.approx(be["vm_usd"], rel=0.01)
    points = body["curve"]["points"]
    assert len(points) == 60
    side = [p["serverless_usd"] < p["vm_usd"] for p in points]
    flip = side.index(not side[0])
    assert (
        points[flip - 1]["invocations_per_month"]
        <= be["invocations_per_month"]
        <= points[flip]["invocations_per_month"]
    )


async def test_negative_volume_is_a_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/compare/deployment", json={**BODY, "invocations_per_month": -1})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert ["body", "invocations_per_month"] in [e["loc"] for e in r.json()["errors"]]


async def test_memory_outside_a_named_providers_range_is_a_422_with_the_limit(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/compare/deployment", json={**BODY, "memory_mb": 12_000, "options": ["aws_lambda_x86", "vm"]}
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["errors"][0]["loc"] == ["body", "memory_mb"]
    assert "AWS Lambda" in problem["detail"]
    assert "128–10,240 MB" in problem["detail"]


async def test_duration_over_a_named_providers_maximum_is_a_422(client: httpx.AsyncClient) -> None:
    body = {**BODY, "duration_ms": 20 * 60_000, "trigger": "event", "options": ["aws_lambda_arm"]}
    r = await client.post("/v1/compare/deployment", json=body)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "duration_ms"]
    assert "15 min" in r.json()["detail"]


async def test_twenty_minute_invocations_list_lambda_as_infeasible_with_why(
    client: httpx.AsyncClient,
) -> None:
    body = {**BODY, "duration_ms": 20 * 60_000, "trigger": "event", "invocations_per_month": 1000}
    r = await client.post("/v1/compare/deployment", json=body)
    assert r.status_code == 200
    by = {(o["region"], o["option"]): o for o in r.json()["options"]}
    lam = by[("us-east-1", "aws_lambda_x86")]
    assert lam["feasible"] is False
    assert "900 s" in lam["infeasible_reason"]
    assert "15 min" in lam["infeasible_reason"]
    assert by[("eastus", "azure_functions_consumption")]["feasible"] is False  # 10 min limit
    assert by[("us-central1", "gcp_cloud_run")]["feasible"] is True  # 60 min limit
    assert by[("us-east-1", "vm")]["feasible"] is True


async def test_unknown_region_and_missing_volume_are_422s(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/compare/deployment", json={**BODY, "locations": [{"provider": "aws", "region": "mars-1"}]}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "locations", 0, "region"]
    missing = {k: v for k, v in BODY.items() if k != "invocations_per_month"}
    assert (await client.post("/v1/compare/deployment", json=missing)).status_code == 422
    bad_profile = {**missing, "hourly_profile": [1.0] * 10}
    r = await client.post("/v1/compare/deployment", json=bad_profile)
    assert r.status_code == 422
    assert ["body", "hourly_profile"] in [e["loc"] for e in r.json()["errors"]]


async def test_hourly_profile_sets_volume_and_peak(client: httpx.AsyncClient) -> None:
    profile = [1000.0] * 23 + [100_000.0]
    body = {k: v for k, v in BODY.items() if k != "invocations_per_month"}
    r = await client.post("/v1/compare/deployment", json={**body, "hourly_profile": profile})
    assert r.status_code == 200
    w = r.json()["workload"]
    assert w["invocations_per_month"] == pytest.approx(sum(profile) * 730 / 24, rel=1e-6)
    assert w["peak_concurrency"] == pytest.approx(100_000 * 0.12 / 3600, rel=1e-6)
    assert "profile" in w["peak_basis"]
