"""select_instance: cheapest fitting type, pins, GPU acceptance, reasons, tie-breaks, traits."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from carbon_optimizer.domain.instances import (
    ARM,
    BURSTABLE,
    Infeasible,
    instance_traits,
    select_instance,
)
from carbon_optimizer.domain.models import GpuRequirement, InstanceOffer, OfferTable, PriceType, Workload
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider

OD = PriceType.ON_DEMAND


def offer(
    name: str,
    vcpus: int | None,
    memory: float | None,
    price: float,
    gpus: int = 0,
    model: str | None = None,
) -> InstanceOffer:
    return InstanceOffer(
        provider="aws",
        region="eu-west-3",
        instance_type=name,
        vcpus=vcpus,
        memory_gib=memory,
        gpu_count=gpus,
        gpu_model=model,
        price_usd_per_hour=price,
        price_type=OD,
        as_of=date(2026, 7, 20),
        source="bundled:2026-07-20",
    )


def table(*offers: InstanceOffer, price_type: PriceType = OD) -> OfferTable:
    return OfferTable.from_offers("aws", "eu-west-3", price_type, list(offers))


def workload(
    vcpus: int = 8,
    memory: float = 32,
    gpu: GpuRequirement | None = None,
    pins: dict[str, str] | None = None,
    arch: str = "any",
    burstable: bool = True,
) -> Workload:
    # Unit tests default to the permissive policy; the product default is tested explicitly below.
    return Workload(
        duration=timedelta(hours=3),
        vcpus=vcpus,
        memory_gib=memory,
        gpu=gpu,
        instance_types=pins or {},
        cpu_architecture=arch,
        allow_burstable=burstable,
    )


CPU_TABLE = table(
    offer("m.large", 2, 8, 0.10),
    offer("m.2xlarge", 8, 32, 0.40),
    offer("c.2xlarge", 8, 16, 0.34),
    offer("r.2xlarge", 8, 64, 0.50),
    offer("m.4xlarge", 16, 64, 0.80),
    offer("mystery", None, None, 0.01),
    offer("g.2xlarge", 8, 32, 0.75, gpus=1, model="T4"),
    offer("p.a100", 12, 85, 3.67, gpus=1, model="A100-40GB"),
    offer("p.a100-80", 24, 220, 3.90, gpus=1, model="A100-80GB"),
    offer("p.8xa100", 96, 1152, 27.4, gpus=8, model="A100-80GB"),
)


def chosen(result: InstanceOffer | Infeasible) -> str:
    assert isinstance(result, InstanceOffer), result
    return result.instance_type


class TestSelection:
    def test_cheapest_that_fits(self) -> None:
        assert chosen(select_instance(CPU_TABLE, workload(8, 32))) == "m.2xlarge"
        assert chosen(select_instance(CPU_TABLE, workload(8, 16))) == "c.2xlarge"
        assert chosen(select_instance(CPU_TABLE, workload(1, 0.5))) == "m.large"
        assert chosen(select_instance(CPU_TABLE, workload(9, 1))) == "m.4xlarge"

    def test_rows_without_specs_are_never_selected(self) -> None:
        assert chosen(select_instance(CPU_TABLE, workload(1, 1))) == "m.large"  # not "mystery" at 0.01

    def test_returns_full_offer(self) -> None:
        result = select_instance(CPU_TABLE, workload(8, 32))
        assert isinstance(result, InstanceOffer)
        assert (result.vcpus, result.memory_gib, result.price_usd_per_hour, result.source) == (
            8,
            32.0,
            0.40,
            "bundled:2026-07-20",
        )

    def test_gpu_row_allowed_when_no_gpu_requested(self) -> None:
        only_gpu_fits = table(offer("m.large", 2, 8, 0.1), offer("g.big", 64, 256, 4.0, gpus=4, model="T4"))
        assert chosen(select_instance(only_gpu_fits, workload(32, 128))) == "g.big"

    def test_gpu_any_model(self) -> None:
        assert chosen(select_instance(CPU_TABLE, workload(8, 32, GpuRequirement(1)))) == "g.2xlarge"

    def test_gpu_exact_model(self) -> None:
        wl = workload(8, 32, GpuRequirement(1, ("A100-80GB",)))
        assert chosen(select_instance(CPU_TABLE, wl)) == "p.a100-80"

    def test_gpu_family_accepts_variants(self) -> None:
        wl = workload(8, 32, GpuRequirement(1, ("A100-40GB", "A100-80GB")))
        assert chosen(select_instance(CPU_TABLE, wl)) == "p.a100"

    def test_gpu_count_uses_smallest_shape_that_contains_it(self) -> None:
        wl = workload(8, 32, GpuRequirement(2, ("A100-80GB",)))
        assert chosen(select_instance(CPU_TABLE, wl)) == "p.8xa100"

    def test_gpu_model_and_size_both_apply(self) -> None:
        wl = workload(16, 100, GpuRequirement(1, ("A100-40GB", "A100-80GB")))
        assert chosen(select_instance(CPU_TABLE, wl)) == "p.a100-80"  # p.a100 has only 85 GiB


class TestPins:
    def test_pinned_type_is_used_even_if_smaller(self) -> None:
        assert chosen(select_instance(CPU_TABLE, workload(8, 32, pins={"aws": "m.large"}))) == "m.large"

    def test_pinned_type_without_specs(self) -> None:
        result = select_instance(CPU_TABLE, workload(8, 32, pins={"aws": "mystery"}))
        assert isinstance(result, InstanceOffer)
        assert result.vcpus is None

    def test_pin_for_other_provider_is_ignored(self) -> None:
        assert (
            chosen(select_instance(CPU_TABLE, workload(8, 32, pins={"gcp": "n2-standard-8"}))) == "m.2xlarge"
        )

    def test_pinned_type_absent(self) -> None:
        result = select_instance(CPU_TABLE, workload(pins={"aws": "m6i.2xlarge"}))
        assert result == Infeasible("instance type m6i.2xlarge not offered in aws/eu-west-3")


class TestReasons:
    def test_no_gpu_of_model(self) -> None:
        result = select_instance(
            table(offer("m.large", 2, 8, 0.1)), workload(8, 32, GpuRequirement(1, ("A100-80GB",)))
        )
        assert result == Infeasible("no instance type with 1 GPU A100-80GB")

    def test_no_gpus_plural_any_model(self) -> None:
        result = select_instance(CPU_TABLE, workload(1, 1, GpuRequirement(16)))
        assert result == Infeasible("no instance type with 16 GPUs")

    def test_several_models(self) -> None:
        result = select_instance(CPU_TABLE, workload(1, 1, GpuRequirement(2, ("H100-80GB", "H200-141GB"))))
        assert result == Infeasible("no instance type with 2 GPUs H100-80GB or H200-141GB")

    def test_too_big(self) -> None:
        result = select_instance(CPU_TABLE, workload(128, 32))
        assert result == Infeasible("no instance type with ≥ 128 vCPUs and ≥ 32 GiB")

    def test_gpu_exists_but_host_too_small(self) -> None:
        result = select_instance(CPU_TABLE, workload(200, 2000, GpuRequirement(1, ("T4",))))
        assert result == Infeasible("no instance type with 1 GPU T4, ≥ 200 vCPUs and ≥ 2000 GiB")

    def test_fractional_memory_in_reason(self) -> None:
        result = select_instance(table(offer("m.large", 2, 8, 0.1)), workload(4, 7.5))
        assert result == Infeasible("no instance type with ≥ 4 vCPUs and ≥ 7.5 GiB")

    def test_empty_table(self) -> None:
        assert select_instance(table(), workload()) == Infeasible("no priced instance types in aws/eu-west-3")

    def test_spot_is_named(self) -> None:
        spot = table(offer("m.large", 2, 8, 0.1), price_type=PriceType.SPOT)
        assert select_instance(spot, workload(pins={"aws": "x.y"})) == Infeasible(
            "instance type x.y not offered as spot in aws/eu-west-3"
        )


class TestTieBreaks:
    def test_fewer_vcpus_then_less_memory_then_name(self) -> None:
        tied = table(
            offer("b-16-64", 16, 64, 0.5),
            offer("z-8-64", 8, 64, 0.5),
            offer("y-8-32", 8, 32, 0.5),
            offer("x-8-32", 8, 32, 0.5),
            offer("a-8-48", 8, 48, 0.5),
        )
        assert chosen(select_instance(tied, workload(8, 32))) == "x-8-32"
        assert chosen(select_instance(tied, workload(8, 40))) == "a-8-48"
        assert chosen(select_instance(tied, workload(8, 50))) == "z-8-64"
        assert chosen(select_instance(tied, workload(9, 50))) == "b-16-64"

    def test_price_beats_size(self) -> None:
        cheaper_bigger = table(offer("small", 8, 32, 0.5), offer("big", 16, 64, 0.49))
        assert chosen(select_instance(cheaper_bigger, workload(8, 32))) == "big"


class TestTraits:
    @pytest.mark.parametrize(
        ("provider", "name", "traits"),
        [
            ("aws", "t4g.2xlarge", {ARM, BURSTABLE}),
            ("aws", "t3.2xlarge", {BURSTABLE}),
            ("aws", "m6g.large", {ARM}),
            ("aws", "c7gn.xlarge", {ARM}),
            ("aws", "a1.large", {ARM}),
            ("aws", "g5g.xlarge", {ARM}),
            ("aws", "g4dn.xlarge", set()),
            ("aws", "m6i.2xlarge", set()),
            ("aws", "m7i-flex.large", set()),
            ("azure", "Standard_B8ps_v2", {ARM, BURSTABLE}),
            ("azure", "Standard_B8ms", {BURSTABLE}),
            ("azure", "Standard_D8pds_v5", {ARM}),
            ("azure", "Standard_D8s_v5", set()),
            ("azure", "Standard_NC24ads_A100_v4", set()),
            ("gcp", "t2a-standard-8", {ARM}),
            ("gcp", "c4a-standard-8", {ARM}),
            ("gcp", "e2-medium", {BURSTABLE}),
            ("gcp", "e2-standard-8", set()),
            ("lambda", "1x NVIDIA GH200", {ARM}),
            ("lambda", "1x NVIDIA A10", set()),
        ],
    )
    def test_instance_traits(self, provider: str, name: str, traits: set[str]) -> None:
        assert instance_traits(provider, name) == frozenset(traits)

    def test_exclude_traits(self) -> None:
        tbl = table(
            offer("t4g.2xlarge", 8, 32, 0.27),
            offer("m6g.2xlarge", 8, 32, 0.31),
            offer("m6i.2xlarge", 8, 32, 0.38),
        )
        assert chosen(select_instance(tbl, workload())) == "t4g.2xlarge"
        assert chosen(select_instance(tbl, workload(), exclude={BURSTABLE})) == "m6g.2xlarge"
        assert chosen(select_instance(tbl, workload(), exclude={ARM, BURSTABLE})) == "m6i.2xlarge"
        assert (
            chosen(select_instance(tbl, workload(pins={"aws": "t4g.2xlarge"}), exclude={ARM}))
            == "t4g.2xlarge"
        )

    def test_workload_policy_defaults_to_x86_without_burstable(self) -> None:
        tbl = table(
            offer("t4g.2xlarge", 8, 32, 0.27),
            offer("t3.2xlarge", 8, 32, 0.29),
            offer("m6g.2xlarge", 8, 32, 0.31),
            offer("m6i.2xlarge", 8, 32, 0.38),
        )
        default = Workload(duration=timedelta(hours=1), vcpus=8, memory_gib=32)
        assert chosen(select_instance(tbl, default)) == "m6i.2xlarge"
        assert chosen(select_instance(tbl, workload(arch="arm64", burstable=False))) == "m6g.2xlarge"
        assert chosen(select_instance(tbl, workload(arch="arm64", burstable=True))) == "t4g.2xlarge"
        assert chosen(select_instance(tbl, workload(arch="x86_64", burstable=True))) == "t3.2xlarge"
        only_arm = table(offer("m6g.2xlarge", 8, 32, 0.31))
        assert select_instance(only_arm, default) == Infeasible(
            "no instance type with ≥ 8 vCPUs and ≥ 32 GiB (excluding arm and burstable types)"
        )
        too_small = table(offer("m6i.large", 2, 8, 0.1))
        assert select_instance(too_small, default) == Infeasible(
            "no instance type with ≥ 8 vCPUs and ≥ 32 GiB"
        )
        only_x86 = table(offer("m6i.2xlarge", 8, 32, 0.38))
        assert select_instance(only_x86, workload(arch="arm64")) == Infeasible(
            "no instance type with ≥ 8 vCPUs and ≥ 32 GiB (only arm types)"
        )

    def test_exclude_reason_and_validation(self) -> None:
        tbl = table(offer("t4g.2xlarge", 8, 32, 0.27))
        assert select_instance(tbl, workload(), exclude={ARM}) == Infeasible(
            "no instance type with ≥ 8 vCPUs and ≥ 32 GiB (excluding arm types)"
        )
        with pytest.raises(ValueError, match="unknown instance traits"):
            select_instance(tbl, workload(), exclude={"x86"})


@pytest.mark.parametrize(
    ("provider", "region"),
    [("aws", "us-east-1"), ("azure", "westeurope"), ("gcp", "us-central1"), ("lambda", "us-west-1")],
)
@pytest.mark.parametrize(("arch", "burstable"), [("any", True), ("x86_64", False), ("arm64", False)])
@pytest.mark.parametrize(
    "need",
    [
        (2, 4.0, None),
        (8, 32.0, None),
        (48, 300.0, None),
        (4, 16.0, GpuRequirement(1)),
        (8, 64.0, GpuRequirement(1, ("A100-40GB", "A100-80GB"))),
        (8, 32.0, GpuRequirement(8, ("H100-80GB",))),
    ],
)
def test_real_tables_match_brute_force(
    provider: str, region: str, need: tuple[int, float, GpuRequirement | None], arch: str, burstable: bool
) -> None:
    tbl = BundledPriceProvider().offers_sync(provider, region, OD)
    assert tbl is not None
    vcpus, memory, gpu = need
    wl = workload(vcpus, memory, gpu, arch=arch, burstable=burstable)
    fitting = []
    for i in range(len(tbl)):
        if math.isnan(tbl.vcpus[i]) or tbl.vcpus[i] < vcpus or tbl.memory_gib[i] < memory:
            continue
        traits = instance_traits(provider, tbl.instance_types[i])
        if (arch == "x86_64" and ARM in traits) or (arch == "arm64" and ARM not in traits):
            continue
        if not burstable and BURSTABLE in traits:
            continue
        if gpu is not None and (
            tbl.gpu_count[i] < gpu.count or (gpu.models is not None and tbl.gpu_models[i] not in gpu.models)
        ):
            continue
        fitting.append((tbl.price_usd_per_hour[i], tbl.vcpus[i], tbl.memory_gib[i], tbl.instance_types[i]))
    result = select_instance(tbl, wl)
    if not fitting:
        assert isinstance(result, Infeasible)
    else:
        assert chosen(result) == min(fitting)[3]
