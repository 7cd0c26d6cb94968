"""Serverless vs VM maths: providers' own worked examples to the cent, limits, VM sizing, energy."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import numpy as np
import pytest

from carbon_optimizer.domain.energy import AVERAGE_UTILIZATION, AWS, MEMORY_WATTS_PER_GIB
from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType
from carbon_optimizer.domain.serverless import (
    GRAVITON,
    LAMBDA_MB_PER_VCPU,
    DeploymentWorkload,
    Option,
    ServerlessPrices,
    Tiered,
    allocation,
    check,
    find_break_even,
    limit_violation,
    monthly_volume,
    serverless_curve,
    vm_curve,
)
from carbon_optimizer.providers.serverless_prices import bundled_egress, bundled_prices


def cents(value: float) -> float:
    """Round half-up to the cent, as the providers' examples do."""
    return math.floor(value * 100 + 0.5 + 1e-9) / 100


def bill(prices: ServerlessPrices, w: DeploymentWorkload) -> tuple[float, float, float]:
    """(compute after free tier, requests after free tier, total) at the workload's volume."""
    c = serverless_curve(prices, w, np.array([w.invocations_per_month]))
    n = w.invocations_per_month
    free_requests = min(n, prices.free_requests) * prices.request_price if w.free_tier else 0.0
    requests = float(c.requests[0]) - free_requests
    compute = float(c.compute[0] + c.free_tier[0]) + free_requests
    return compute, requests, float(c.total[0])


def with_rate(prices: ServerlessPrices, meter: str, rate: float) -> ServerlessPrices:
    return dataclasses.replace(prices, compute={**prices.compute, meter: Tiered.flat(rate)})


LAMBDA = bundled_prices(Option.LAMBDA_X86, "us-east-1")
LAMBDA_ARM = bundled_prices(Option.LAMBDA_ARM, "us-east-1")
CONSUMPTION = bundled_prices(Option.AZURE_CONSUMPTION, "eastus")
FLEX = bundled_prices(Option.AZURE_FLEX, "eastus")
CLOUD_RUN = bundled_prices(Option.CLOUD_RUN, "us-central1")


# ----- the providers' own worked examples (inputs from the pricing pages) -----


def test_aws_lambda_page_example_mobile_backend() -> None:
    # aws.amazon.com/lambda/pricing, "Example 1: Mobile application backend": 3M requests/month,
    # 120 ms average, 1,536 MB, x86, free tier applied: compute $2.33, requests $0.40, total $2.73.
    w = DeploymentWorkload(invocations_per_month=3e6, duration_ms=120, memory_mb=1536)
    compute, requests, total = bill(LAMBDA, w)
    assert cents(compute) == 2.33
    assert cents(requests) == 0.40
    assert cents(total) == 2.73
    usage = serverless_curve(LAMBDA, w, np.array([3e6])).usage
    assert usage["gb_s"][0] == pytest.approx(540_000)  # the page: "540,000 GB-s"


def test_aws_lambda_archived_page_examples_at_their_quoted_rate() -> None:
    # The 2017-era page (100 ms billing, "$0.00001667 per GB-s"): example 1 is 512 MB, 3M
    # executions of 1 s → $18.34 + $0.40 = $18.74; example 2 is 128 MB, 30M of 200 ms →
    # $5.83 + $5.80 = $11.63. Durations are whole 100 ms steps, so 1 ms billing changes nothing.
    old = with_rate(LAMBDA, "gb_s", 0.00001667)
    one = DeploymentWorkload(invocations_per_month=3e6, duration_ms=1000, memory_mb=512)
    compute, requests, total = bill(old, one)
    assert (cents(compute), cents(requests), cents(total)) == (18.34, 0.40, 18.74)
    two = DeploymentWorkload(invocations_per_month=30e6, duration_ms=200, memory_mb=128)
    compute, requests, total = bill(old, two)
    assert (cents(compute), cents(requests), cents(total)) == (5.83, 5.80, 11.63)


def test_aws_lambda_example_without_free_tier() -> None:
    # Same mobile backend when the account's free tier is used elsewhere: 540,000 GB-s × rate and
    # 3M × $0.20/M — the page's intermediate figures $9.00 and $0.60.
    w = DeploymentWorkload(invocations_per_month=3e6, duration_ms=120, memory_mb=1536, free_tier=False)
    compute, requests, total = bill(LAMBDA, w)
    assert (cents(compute), cents(requests), cents(total)) == (9.00, 0.60, 9.60)


def test_azure_consumption_pricing_page_example() -> None:
    # azure.microsoft.com/pricing/details/functions, Consumption example: 512 MB observed memory,
    # 3,000,000 executions of 1 s: 1,500,000 − 400,000 free GB-s = 1,100,000 × $0.000016 = $17.60;
    # 3M − 1M free executions = 2M × $0.20/M = $0.40; total $18.00. (Inputs as the page's example
    # gives them; the stored page copy we could read renders its prices client-side, so the
    # figures were checked against the page's rules and the Retail Prices API meters.)
    w = DeploymentWorkload(invocations_per_month=3e6, duration_ms=1000, memory_mb=512)
    compute, requests, total = bill(CONSUMPTION, w)
    assert (cents(compute), cents(requests), cents(total)) == (17.60, 0.40, 18.00)


def test_azure_consumption_memory_rounds_up_to_128_mb() -> None:
    # The page: "rounding up to the nearest 128 MB" — 160 MB is billed as 256 MB (Azure FAQ example).
    w = DeploymentWorkload(invocations_per_month=1e6, duration_ms=1000, memory_mb=160)
    assert allocation(CONSUMPTION, w).memory_gib == pytest.approx(256 / 1024)


def test_cloud_run_gib_second_unit_from_the_page() -> None:
    # cloud.google.com/run/pricing: "running a 256 mebibyte instance for 4 seconds" is 1 GiB-s.
    w = DeploymentWorkload(invocations_per_month=1, duration_ms=4000, memory_mb=256, free_tier=False)
    usage = serverless_curve(CLOUD_RUN, w, np.array([1.0])).usage
    assert usage["gib_s"][0] == pytest.approx(1.0)
    assert usage["vcpu_s"][0] == pytest.approx(4.0)  # 1 vCPU default


def test_cloud_run_free_tier_is_a_tier1_spending_credit() -> None:
    # Tier 2 (europe-west2) pays $0.0000336/vCPU-s but its free tier is worth 180,000 × $0.000024.
    tier2 = bundled_prices(Option.CLOUD_RUN, "europe-west2")
    w = DeploymentWorkload(invocations_per_month=2e6, duration_ms=1000, memory_mb=512)
    c = serverless_curve(tier2, w, np.array([2e6]))
    cpu_credit = 180_000 * 0.000024
    mem_credit = 360_000 * 0.0000025
    requests_credit = 2e6 * 0.4 / 1e6
    assert -c.free_tier[0] == pytest.approx(cpu_credit + mem_credit + requests_credit)
    # The same credit bought ≈128,571 Tier 2 vCPU-s: fewer free units than in Tier 1.
    assert cpu_credit / 0.0000336 == pytest.approx(128_571.4, rel=1e-5)


def test_lambda_tiers_and_arm_discount() -> None:
    x86, arm = LAMBDA.compute["gb_s"], LAMBDA_ARM.compute["gb_s"]
    assert arm.first == pytest.approx(x86.first * 0.8, rel=1e-4)
    q = np.array([10e9])  # 6B at tier 1, 4B at tier 2 (−10 %)
    assert x86.cost(q)[0] == pytest.approx(6e9 * 0.0000166667 + 4e9 * 0.000015)
    assert arm.cost(np.array([20e9]))[0] == pytest.approx(
        7.5e9 * 0.0000133334 + 11.25e9 * 0.0000120001 + 1.25e9 * 0.0000106667
    )


def test_lambda_regional_price_keeps_tier_discounts() -> None:
    cape_town = bundled_prices(Option.LAMBDA_X86, "af-south-1").compute["gb_s"]
    assert cape_town.first == pytest.approx(0.0000221)
    assert cape_town.prices[1] / cape_town.prices[0] == pytest.approx(0.9, rel=1e-4)


def test_duration_rounds_up_per_provider() -> None:
    w = DeploymentWorkload(invocations_per_month=1, duration_ms=120.2, memory_mb=1024)
    assert allocation(LAMBDA, w).billed_s == pytest.approx(0.121)  # 1 ms
    assert allocation(CLOUD_RUN, w).billed_s == pytest.approx(0.2)  # 100 ms
    assert allocation(FLEX, w).billed_s == pytest.approx(1.0)  # 1,000 ms minimum
    assert allocation(CONSUMPTION, dataclasses.replace(w, duration_ms=20)).billed_s == pytest.approx(0.1)


# ----- limits and infeasibility -----


def test_twenty_minute_invocation_is_infeasible_on_lambda_with_the_limit_named() -> None:
    w = DeploymentWorkload(
        invocations_per_month=1000, duration_ms=20 * 60_000, memory_mb=1024, trigger="event"
    )
    reason = check(LAMBDA, w)
    assert reason is not None
    assert "AWS Lambda" in reason
    assert "900 s" in reason
    assert "15 min" in reason
    assert check(CLOUD_RUN, w) is None  # Cloud Run allows 60 min
    assert limit_violation(LAMBDA, w) == ("duration_ms", reason)


def test_memory_limits_name_the_provider_and_range() -> None:
    big = DeploymentWorkload(invocations_per_month=1, duration_ms=10, memory_mb=12_000)
    field, message = limit_violation(LAMBDA, big) or ("", "")
    assert field == "memory_mb"
    assert "128–10,240 MB" in message
    reason = check(CONSUMPTION, dataclasses.replace(big, memory_mb=2048))
    assert reason is not None
    assert "1,536" in reason


def test_architecture_mismatch_is_infeasible() -> None:
    arm_only = DeploymentWorkload(
        invocations_per_month=1, duration_ms=10, memory_mb=512, cpu_architecture="arm64"
    )
    assert check(LAMBDA_ARM, arm_only) is None
    reason = check(CLOUD_RUN, arm_only)
    assert reason is not None
    assert "x86_64" in reason


def test_azure_http_trigger_cap() -> None:
    w = DeploymentWorkload(invocations_per_month=1, duration_ms=300_000, memory_mb=512)
    reason = check(FLEX, w)
    assert reason is not None
    assert "230 s" in reason
    assert check(FLEX, dataclasses.replace(w, trigger="event")) is None


# ----- energy -----


def test_lambda_energy_uses_the_1769_mb_vcpu_share() -> None:
    w = DeploymentWorkload(invocations_per_month=1e6, duration_ms=1000, memory_mb=1769)
    alloc = allocation(LAMBDA, w)
    assert alloc.vcpus == pytest.approx(1.0)
    kwh = serverless_curve(LAMBDA, w, np.array([1e6])).energy_kwh[0]
    watts = AWS.watts_per_vcpu(AVERAGE_UTILIZATION) + 1769 / 1024 * MEMORY_WATTS_PER_GIB
    assert kwh == pytest.approx(1e6 * watts * AWS.pue / 3.6e6)
    arm_kwh = serverless_curve(LAMBDA_ARM, w, np.array([1e6])).energy_kwh[0]
    arm_watts = GRAVITON.watts_per_vcpu(AVERAGE_UTILIZATION) + 1769 / 1024 * MEMORY_WATTS_PER_GIB
    assert arm_kwh == pytest.approx(1e6 * arm_watts * GRAVITON.pue / 3.6e6)
    assert LAMBDA_MB_PER_VCPU == 1769


# ----- VM sizing -----


def _offer(name: str, vcpus: float, gib: float, price: float, gpus: int = 0) -> InstanceOffer:
    return InstanceOffer(
        "aws",
        "us-east-1",
        name,
        vcpus,
        gib,
        gpus,
        "T4" if gpus else None,
        price,
        PriceType.ON_DEMAND,
        date(2026, 7, 20),
        "bundled:2026-07-20",
    )


TABLE = OfferTable.from_offers(
    "aws",
    "us-east-1",
    PriceType.ON_DEMAND,
    [
        _offer("m7i.large", 2, 8, 0.1008),
        _offer("m7i.xlarge", 4, 16, 0.2016),
        _offer("m7i.4xlarge", 16, 64, 0.8064),
        _offer("c7i.8xlarge", 32, 64, 1.428),
        _offer("m7g.large", 2, 8, 0.0816),
        _offer("t3.large", 2, 8, 0.0832),
        _offer("g4dn.xlarge", 4, 16, 0.01, gpus=1),  # absurdly cheap GPU type must never be picked
    ],
)
EGRESS = bundled_egress("aws", "us-east-1")


def test_vm_fleet_is_sized_for_peak_at_target_utilisation() -> None:
    # peak 10 × 1 vCPU / 0.5 = 20 vCPUs and 10 GiB: 10 × m7i.large and 5 × m7i.xlarge both cost
    # $1.008/h (the tie goes to fewer instances); 2 × m7i.4xlarge $1.61/h; 1 × c7i.8xlarge $1.43/h.
    w = DeploymentWorkload(
        invocations_per_month=1e6,
        duration_ms=100,
        memory_mb=1024,
        peak_concurrency=10,
        vcpu_per_invocation=1.0,
        vm_target_utilization=0.5,
        cpu_architecture="x86_64",
    )
    vm = vm_curve(TABLE, w, np.array([1e6]), EGRESS)
    assert vm.vcpus_needed[0] == pytest.approx(20)
    chosen = TABLE.instance_types[int(vm.row[0])]
    assert (chosen, int(vm.count[0])) == ("m7i.xlarge", 5)
    assert vm.compute[0] == pytest.approx(5 * 0.2016 * 730)
    pairs = dataclasses.replace(w, vm_min_instances=2)  # fleets in whole pairs: 6 × m7i.xlarge? no —
    # 20 vCPUs in pairs: 10 × m7i.large = 5 pairs, $1.008/h, vs 6 × m7i.xlarge = 3 pairs, $1.21/h.
    vm2 = vm_curve(TABLE, pairs, np.array([1e6]), EGRESS)
    assert (TABLE.instance_types[int(vm2.row[0])], int(vm2.count[0])) == ("m7i.large", 10)


def test_vm_policy_excludes_gpu_arm_and_burstable_unless_allowed() -> None:
    w = DeploymentWorkload(
        invocations_per_month=1e6, duration_ms=100, memory_mb=1024, cpu_architecture="x86_64"
    )
    vm = vm_curve(TABLE, w, np.array([1e6]), EGRESS)
    assert TABLE.instance_types[int(vm.row[0])] == "m7i.large"
    anyarch = dataclasses.replace(w, cpu_architecture="any")
    assert TABLE.instance_types[int(vm_curve(TABLE, anyarch, np.array([1e6]), EGRESS).row[0])] == "m7g.large"
    burst = dataclasses.replace(w, vm_allow_burstable=True)
    assert TABLE.instance_types[int(vm_curve(TABLE, burst, np.array([1e6]), EGRESS).row[0])] == "t3.large"


def test_every_vm_must_hold_one_whole_invocation() -> None:
    # A 9 GiB invocation does not fit one m7i.large (8 GiB), however many there are: m7i.xlarge.
    w = DeploymentWorkload(
        invocations_per_month=1e6, duration_ms=100, memory_mb=9 * 1024, cpu_architecture="x86_64"
    )
    vm = vm_curve(TABLE, w, np.array([1e6]), EGRESS)
    assert TABLE.instance_types[int(vm.row[0])] == "m7i.xlarge"
    huge = dataclasses.replace(w, memory_mb=100 * 1024)
    assert not vm_curve(TABLE, huge, np.array([1e6]), EGRESS).feasible[0]


def test_vm_energy_follows_actual_utilisation() -> None:
    w = DeploymentWorkload(
        invocations_per_month=0.0,
        duration_ms=100,
        memory_mb=1024,
        cpu_architecture="x86_64",
        peak_concurrency=1,
    )
    idle = vm_curve(TABLE, w, np.array([1.0]), EGRESS)
    # 1 × m7i.large nearly idle: CCF min watts per vCPU + memory, × PUE, over 730 h.
    watts = 2 * AWS.min_watts_per_vcpu + 8 * MEMORY_WATTS_PER_GIB
    assert idle.energy_kwh[0] == pytest.approx(watts * AWS.pue * 730 / 1000, rel=1e-3)


def test_hourly_profile_volume_and_peak() -> None:
    profile = tuple([1000.0] * 23 + [36_000.0])
    assert monthly_volume(profile) == pytest.approx((23_000 + 36_000) * 730 / 24)
    w = DeploymentWorkload(
        invocations_per_month=monthly_volume(profile), duration_ms=500, memory_mb=512, hourly_profile=profile
    )
    peak, basis = w.peak()
    assert peak == pytest.approx(36_000 * 0.5 / 3600)  # Little's law in the busiest hour
    assert "profile" in basis
    with pytest.raises(ValueError, match="24"):
        monthly_volume((1.0, 2.0))


def test_break_even_is_where_the_curves_cross() -> None:
    def serverless(v: np.ndarray) -> np.ndarray:
        return np.asarray(v * 1e-5)

    def vm(v: np.ndarray) -> np.ndarray:
        return np.full_like(v, 50.0)

    be = find_break_even(serverless, vm)
    assert be is not None
    assert be.volume == pytest.approx(5e6, rel=1e-3)
    assert be.cheaper_below == "serverless"
    assert find_break_even(serverless, lambda v: np.full_like(v, 1e12)) is None
