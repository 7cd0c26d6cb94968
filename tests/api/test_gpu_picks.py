"""Issue 13 item 6: `gpu: {count: 1}` means an NVIDIA data-centre GPU, and oversized picks warn."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from carbon_optimizer.domain.gpu import DEFAULT_GPU_MODELS, KNOWN_GPU_MODELS
from carbon_optimizer.domain.instances import select_instance
from carbon_optimizer.domain.models import GpuRequirement, PriceType, Workload
from carbon_optimizer.providers.prices.bundled import BundledPriceCatalog

WINDOW = {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-03T14:00:00Z"}


async def _optimize(client: httpx.AsyncClient, gpu: dict[str, Any], region: str) -> dict[str, Any]:
    body = {
        "workload": {"duration_minutes": 60, "vcpus": 4, "memory_gib": 16, "gpu": gpu},
        "locations": [{"provider": "aws", "region": region}],
        "window": WINDOW,
        "objective": {"mode": "cost"},
    }
    response = await client.post("/v1/optimize", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_default_models_are_known_and_exclude_amd_and_graphics_cards() -> None:
    assert set(DEFAULT_GPU_MODELS) <= set(KNOWN_GPU_MODELS)
    for model in ("MI300X", "Radeon-Pro-V520", "Quadro-RTX-6000", "RTX-A6000", "M60"):
        assert model not in DEFAULT_GPU_MODELS
    assert {"A100-80GB", "H100-80GB", "L4", "T4", "A10G"} <= set(DEFAULT_GPU_MODELS)


@pytest.mark.parametrize("provider", ["aws", "azure", "gcp"])
def test_one_gpu_without_model_picks_a_default_model_wherever_one_exists(provider: str) -> None:
    catalog = BundledPriceCatalog()
    workload = _gpu_workload()
    checked = 0
    for region in sorted(catalog.regions_with_prices(provider)):
        table = catalog.table(provider, region, PriceType.ON_DEMAND)
        if table is None:
            continue
        has_default = any(m in DEFAULT_GPU_MODELS for m in table.gpu_models)
        chosen = select_instance(table, workload)
        if has_default and hasattr(chosen, "gpu_model"):
            assert chosen.gpu_model in DEFAULT_GPU_MODELS, (region, chosen)
            checked += 1
    assert checked > 0


def _gpu_workload() -> Workload:
    return Workload(
        duration=timedelta(hours=1), vcpus=4, memory_gib=16, gpu=GpuRequirement(count=1, models=None)
    )


async def test_aws_one_gpu_is_nvidia_not_radeon(client: httpx.AsyncClient) -> None:
    data = await _optimize(client, {"count": 1}, "us-east-1")
    assert data["energy_model"]["gpu_model"] in DEFAULT_GPU_MODELS
    assert not data["best"]["instance_type"].startswith("g4ad")  # the AMD Radeon family


async def test_oversized_pick_warns_you_pay_for_all_gpus(client: httpx.AsyncClient) -> None:
    data = await _optimize(client, {"count": 1, "model": "A100"}, "us-east-1")
    assert data["best"]["instance_type"].startswith("p4")
    warning = next(w for w in data["warnings"] if "GPUs for the 1 asked for" in w)
    assert "you pay for 8" in warning


async def test_exact_gpu_count_has_no_oversize_warning(client: httpx.AsyncClient) -> None:
    data = await _optimize(client, {"count": 1, "model": "T4"}, "us-east-1")
    assert not any("asked for: you pay for" in w for w in data["warnings"])
