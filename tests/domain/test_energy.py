"""Energy model numbers against hand computation from the cited coefficients."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from carbon_optimizer.domain.energy import (
    GPU_POWER,
    MODEL_NAME,
    OVERRIDE_MODEL_NAME,
    PowerEstimate,
    energy_kwh,
    estimate_power,
)
from carbon_optimizer.domain.gpu import KNOWN_GPU_MODELS
from carbon_optimizer.domain.models import GpuRequirement, InstanceOffer, PriceType, Workload

FOUR_HOURS = timedelta(hours=4)


def wl(
    vcpus: int = 8,
    memory: float = 32,
    gpu: GpuRequirement | None = None,
    power_watts: float | None = None,
) -> Workload:
    return Workload(duration=FOUR_HOURS, vcpus=vcpus, memory_gib=memory, gpu=gpu, power_watts=power_watts)


def gpu_offer(model: str | None, count: int = 1) -> InstanceOffer:
    return InstanceOffer(
        provider="azure",
        region="eastus",
        instance_type="x",
        vcpus=24,
        memory_gib=220,
        gpu_count=count,
        gpu_model=model,
        price_usd_per_hour=3.673,
        price_type=PriceType.ON_DEMAND,
        as_of=date(2026, 6, 18),
        source="bundled:2026-06-18",
    )


def test_pricing_note_azure_example() -> None:
    # docs/data-sources.md §2.6 worked example: (8 × 2.27 + 32 × 0.392) W × 1.125 = 34.5 W → 0.138 kWh in 4 h
    power = estimate_power("azure", wl(), None, onprem_pue=1.56)
    assert power.cpu_watts == pytest.approx(8 * 2.27)
    assert power.memory_watts == pytest.approx(32 * 0.392)
    assert power.watts == pytest.approx(30.704)
    assert power.pue == 1.125
    assert power.facility_watts == pytest.approx(34.542)
    assert energy_kwh(power, FOUR_HOURS) == pytest.approx(0.138168)
    assert power.model == MODEL_NAME
    assert power.utilization == 0.5
    assert power.gpu_watts == 0.0
    assert power.gpu_model is None
    assert "Cloud Carbon Footprint" in power.source


@pytest.mark.parametrize(
    ("provider", "per_vcpu", "pue"),
    [
        ("aws", 0.74 + 0.5 * (3.5 - 0.74), 1.135),
        ("gcp", 0.71 + 0.5 * (4.26 - 0.71), 1.1),
        ("azure", 0.78 + 0.5 * (3.76 - 0.78), 1.125),
        # Lambda: mean of the three (assumption)
        (
            "lambda",
            (0.74 + 0.71 + 0.78) / 3 + 0.5 * ((3.5 + 4.26 + 3.76) / 3 - (0.74 + 0.71 + 0.78) / 3),
            1.12,
        ),
    ],
)
def test_provider_coefficients(provider: str, per_vcpu: float, pue: float) -> None:
    power = estimate_power(provider, wl(4, 16), None, onprem_pue=1.56)
    assert power.cpu_watts == pytest.approx(4 * per_vcpu)
    assert power.watts == pytest.approx(4 * per_vcpu + 16 * 0.392)
    assert power.pue == pytest.approx(pue)


def test_grid_zone_uses_mean_coefficients_and_onprem_pue() -> None:
    power = estimate_power(None, wl(4, 16), None, onprem_pue=1.56)
    lam = estimate_power("lambda", wl(4, 16), None, onprem_pue=9.9)
    assert power.watts == pytest.approx(lam.watts)
    assert power.pue == 1.56
    assert "Uptime Institute" in power.source
    assert estimate_power(None, wl(4, 16), None, onprem_pue=1.3).pue == 1.3


def test_gpu_from_workload_ccf_figure() -> None:
    power = estimate_power("azure", wl(24, 220, GpuRequirement(1, ("A100-80GB",))), None, onprem_pue=1.56)
    assert power.gpu_watts == pytest.approx(46 + 0.5 * (407 - 46))
    assert power.gpu_model == "A100-80GB"
    assert power.watts == pytest.approx(24 * 2.27 + 220 * 0.392 + 226.5)


def test_gpu_count_multiplies() -> None:
    power = estimate_power("aws", wl(8, 32, GpuRequirement(4, ("T4",))), None, onprem_pue=1.56)
    assert power.gpu_watts == pytest.approx(4 * (8 + 0.5 * (71 - 8)))


def test_gpu_model_from_offer_when_workload_accepts_several() -> None:
    workload = wl(8, 32, GpuRequirement(1, ("A10G", "T4")))
    power = estimate_power("aws", workload, gpu_offer("A10G"), onprem_pue=1.56)
    assert power.gpu_model == "A10G"
    assert power.gpu_watts == pytest.approx(18 + 0.5 * (153 - 18))


def test_gpu_default_is_a100() -> None:
    power = estimate_power("gcp", wl(8, 32, GpuRequirement(1)), None, onprem_pue=1.56)
    assert power.gpu_watts == pytest.approx(226.5)
    assert power.gpu_model == "A100-80GB"
    assert "A100 figure" in power.source


def test_datasheet_gpu_uses_a100_idle_ratio() -> None:
    power = estimate_power("aws", wl(8, 32, GpuRequirement(1, ("H100-80GB",))), None, onprem_pue=1.56)
    idle = 700 * 46 / 407
    assert power.gpu_watts == pytest.approx(idle + 0.5 * (700 - idle))
    assert "datasheet" in power.source


def test_workload_size_not_offer_size() -> None:
    # The offer (24 vCPU, 220 GiB) only names the GPU; the job's own size drives CPU and memory.
    power = estimate_power("azure", wl(8, 32, GpuRequirement(1)), gpu_offer("A100-80GB"), onprem_pue=1.56)
    assert power.cpu_watts == pytest.approx(8 * 2.27)
    assert power.memory_watts == pytest.approx(32 * 0.392)


def test_power_override_keeps_pue() -> None:
    power = estimate_power("azure", wl(power_watts=100.0), None, onprem_pue=1.56)
    assert power.watts == 100.0
    assert power.pue == 1.125
    assert power.model == OVERRIDE_MODEL_NAME
    assert energy_kwh(power, timedelta(hours=2)) == pytest.approx(100 * 1.125 * 2 / 1000)
    grid = estimate_power(None, wl(power_watts=100.0), None, onprem_pue=1.56)
    assert energy_kwh(grid, timedelta(minutes=30)) == pytest.approx(100 * 1.56 * 0.5 / 1000)


def test_every_known_gpu_has_a_figure() -> None:
    assert set(KNOWN_GPU_MODELS) <= GPU_POWER.keys()
    for model, power in GPU_POWER.items():
        assert 0 < power.idle_watts < power.max_watts, model
        assert power.source, model


def test_unknown_provider() -> None:
    with pytest.raises(ValueError, match="no energy coefficients"):
        estimate_power("ovh", wl(), None, onprem_pue=1.56)


def test_energy_formula() -> None:
    power = PowerEstimate(
        watts=200.0,
        pue=1.5,
        model="m",
        source="s",
        utilization=0.5,
        cpu_watts=200.0,
        memory_watts=0.0,
        gpu_watts=0.0,
        gpu_model=None,
    )
    assert energy_kwh(power, timedelta(hours=3)) == pytest.approx(0.9)
    assert energy_kwh(power, timedelta(0)) == 0.0
