"""POST /v1/estimate and `carbon-optimizer estimate` count the instance's GPUs.

Oracle: the same job placed by /v1/optimize with the instance pinned (same vCPUs, GiB and GPUs)
must report the same energy; before the fix the estimate built a GPU-less workload and reported
0.56 kWh with `gpu_watts: 0` for a2-highgpu-1g where the optimizer said 2.55 kWh.
"""

from __future__ import annotations

import io
import json

import httpx
import pytest

from carbon_optimizer.cli import main

CASES = [
    ("gcp", "us-central1", "a2-highgpu-1g"),
    ("aws", "us-east-1", "p4d.24xlarge"),
]


@pytest.mark.parametrize(("provider", "region", "instance_type"), CASES)
async def test_estimate_energy_matches_the_optimizer_for_a_gpu_instance(
    client: httpx.AsyncClient, provider: str, region: str, instance_type: str
) -> None:
    estimate = await client.post(
        "/v1/estimate",
        json={"provider": provider, "region": region, "instance_type": instance_type, "hours": 8},
    )
    assert estimate.status_code == 200, estimate.text
    est = estimate.json()
    assert est["gpu_count"] >= 1
    assert est["energy_model"]["gpu_watts"] > 0
    assert est["energy_model"]["gpu_model"] == est["gpu_model"]

    plan = await client.post(
        "/v1/optimize",
        json={
            "workload": {
                "duration_minutes": 8 * 60,
                "vcpus": est["vcpus"],
                "memory_gib": est["memory_gib"],
                "gpu": {"count": est["gpu_count"], "model": est["gpu_model"]},
                "instance_types": {provider: instance_type},
            },
            "locations": [{"provider": provider, "region": region}],
            "objective": {"mode": "carbon"},
        },
    )
    assert plan.status_code == 200, plan.text
    best = plan.json()["best"]
    assert best["instance_type"] == instance_type
    assert est["energy_kwh"] == pytest.approx(best["energy_kwh"], rel=1e-6)
    assert est["energy_model"]["gpu_watts"] == pytest.approx(plan.json()["energy_model"]["gpu_watts"])


def test_cli_estimate_counts_gpus() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["estimate", "gcp", "a2-highgpu-1g", "--hours", "8", "--json"], out, err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["gpu_count"] == 1
    assert data["energy_model"]["gpu_watts"] > 0
    cpu_and_memory_only = (
        (data["energy_model"]["cpu_watts"] + data["energy_model"]["memory_watts"])
        * data["energy_model"]["pue"]
        * 8
        / 1000
    )
    assert data["energy_kwh"] > cpu_and_memory_only * 2  # the A100 dominates this instance's draw
