"""Serverless vs VM: the monthly bill, energy and emissions of a recurring workload, side by side.

Why here: every rule that turns "3M invocations of 120 ms at 1,536 MB" into dollars and kWh lives
in one pure module, vectorised over monthly volume (the cost-vs-volume curve and the break-even
search evaluate dozens of volumes at once), so a reviewer can check the billing rules against the
providers' pages in one place. No I/O: price tables arrive as `ServerlessPrices` built by
`carbon_optimizer.providers.serverless_prices` (bundled → cache → live), VM prices as `OfferTable`s.

Billing rules (per option; the figures themselves are data, see `data/serverless/README.md`):
- AWS Lambda: GB-s = invocations × ceil(duration, 1 ms) × MB/1024, tiered per architecture
  (x86: −10 % above 6B, −20 % above 15B GB-s; Arm: above 7.5B / 18.75B); $ per request.
  Free tier 1M requests + 400,000 GB-s per account-month, deducted from the first tier.
- Azure Functions Consumption: observed memory rounded up to 128 MB (≤ 1,536 MB), duration
  rounded to 1 ms with a 100 ms minimum (the minimum is our reading, flagged uncertain);
  free 1M executions + 400,000 GB-s per subscription-month.
- Azure Functions Flex Consumption (on demand): instance memory (512 [uncertain] / 2,048 /
  4,096 MB) × active time, 1,000 ms minimum then 100 ms steps; free 250,000 executions +
  100,000 GB-s.
- Google Cloud Run, request-based billing: vCPU-s and GiB-s of instance time rounded up to
  100 ms, $ per request; free 180,000 vCPU-s + 360,000 GiB-s + 2M requests per billing account,
  applied as a *spending* credit at Tier 1 prices (so a Tier 2 region gets fewer free units).
- Per-instance concurrency `c` (Flex, Cloud Run): instance time = request time / c. c = 1 (the
  default) bills every request as its own rounded period, the pessimistic reading; c > 1 assumes
  instances are kept full, the optimistic one. The truth lies between; both are one knob away.
- Egress: per cloud, first paid tiers after the account-wide free allowance (AWS/Azure 100 GB,
  GCP 1 GiB from North America), applied once per account-month.

Energy (Cloud Carbon Footprint, reusing `domain.energy`): watts = allocated vCPUs × (min + 50 % ×
(max − min)) + GiB × 0.392, × PUE, over the *billed* (allocated) time. Allocated vCPUs: Lambda
MB / 1,769 (AWS: "At 1,769 MB, a function has the equivalent of one vCPU"; CCF's methodology
text uses 1,792, its Compute Optimizer code 1,769); Azure Consumption 1 vCPU per instance; Flex
instance MB / 2,048; Cloud Run the configured vCPUs. Arm (Lambda arm64, AWS Graviton VMs) uses
CCF's Graviton2 figures (0.47–1.69 W/vCPU). A VM draws for all 730 h at its *actual* average
utilisation (average concurrency × CPU share / vCPUs), CCF's formula with a measured utilisation.
Operational emissions only: CCF assigns no embodied carbon to serverless, and adding it to the
VM side alone would bias the comparison.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from carbon_optimizer.domain.energy import (
    AVERAGE_UTILIZATION,
    AWS,
    AZURE,
    CCF_SOURCE,
    GCP,
    MEAN_MAX_WATTS,
    MEAN_MIN_WATTS,
    MEAN_PUE,
    MEMORY_WATTS_PER_GIB,
    CpuCoefficients,
)
from carbon_optimizer.domain.instances import ARM, BURSTABLE, instance_traits
from carbon_optimizer.domain.models import FloatArray, IntArray, OfferTable

BoolArray = npt.NDArray[np.bool_]

HOURS_PER_MONTH = 730.0  # the providers' own monthly convention (AWS/Azure/GCP calculators)
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
GB_PER_GIB = 2**30 / 1e9
LAMBDA_MB_PER_VCPU = 1769.0  # AWS Lambda Developer Guide, "Configure Lambda function memory"

# CCF: Graviton2 borrows AMD EPYC 2nd-gen values; in-app 0.47–1.69 W/vCPU, AWS PUE 1.135.
GRAVITON = CpuCoefficients(
    0.47, 1.69, AWS.pue, f"{CCF_SOURCE}: AWS Graviton2 0.47–1.69 W/vCPU (EPYC 2nd gen), PUE 1.135"
)
LAMBDA_CLOUD = CpuCoefficients(
    MEAN_MIN_WATTS, MEAN_MAX_WATTS, MEAN_PUE, f"assumption: mean of the AWS, GCP and Azure {CCF_SOURCE}"
)
ENERGY_METHOD = (
    "Cloud Carbon Footprint compute + memory model: allocated vCPUs x (min W + 50% x (max W - min W)) "
    f"+ GiB x {MEMORY_WATTS_PER_GIB} W, x PUE, over billed time; Lambda vCPUs = MB / 1,769 (AWS Lambda "
    "Developer Guide); VMs over 730 h at their average utilisation; operational emissions only"
)


class Option(StrEnum):
    """The deployment options compared."""

    LAMBDA_X86 = "aws_lambda_x86"
    LAMBDA_ARM = "aws_lambda_arm"
    AZURE_CONSUMPTION = "azure_functions_consumption"
    AZURE_FLEX = "azure_functions_flex"
    CLOUD_RUN = "gcp_cloud_run"
    VM = "vm"


SERVERLESS_OPTIONS: tuple[Option, ...] = (
    Option.LAMBDA_X86,
    Option.LAMBDA_ARM,
    Option.AZURE_CONSUMPTION,
    Option.AZURE_FLEX,
    Option.CLOUD_RUN,
)
OPTION_PROVIDER: dict[Option, str] = {
    Option.LAMBDA_X86: "aws",
    Option.LAMBDA_ARM: "aws",
    Option.AZURE_CONSUMPTION: "azure",
    Option.AZURE_FLEX: "azure",
    Option.CLOUD_RUN: "gcp",
}
OPTION_LABEL: dict[Option, str] = {
    Option.LAMBDA_X86: "AWS Lambda (x86_64)",
    Option.LAMBDA_ARM: "AWS Lambda (arm64)",
    Option.AZURE_CONSUMPTION: "Azure Functions Consumption",
    Option.AZURE_FLEX: "Azure Functions Flex Consumption",
    Option.CLOUD_RUN: "Google Cloud Run (request-based)",
    Option.VM: "VM",
}
# Options whose runtime is x86-64 only (Cloud Run and Azure Functions run amd64 images).
_ARCH: dict[Option, str] = {
    Option.LAMBDA_X86: "x86_64",
    Option.LAMBDA_ARM: "arm64",
    Option.AZURE_CONSUMPTION: "x86_64",
    Option.AZURE_FLEX: "x86_64",
    Option.CLOUD_RUN: "x86_64",
}


# ----- price tables -----


@dataclass(frozen=True, slots=True)
class PriceItem:
    """One price used in an answer, with where it comes from (returned as provenance)."""

    item: str
    usd: float
    unit: str
    source: str  # provenance label: "bundled:2025-10-28", "live:aws", "cache:2026-11-30"
    reference: str  # URL / document the figure was read from
    as_of: date | None = None
    uncertain: bool = False


@dataclass(frozen=True, eq=False, slots=True)
class Tiered:
    """A graduated price: `prices[i]` per unit for quantity in (bounds[i-1], bounds[i]]."""

    bounds: FloatArray  # cumulative upper bounds, last = inf
    prices: FloatArray

    @classmethod
    def of(cls, tiers: Sequence[tuple[float | None, float]]) -> Tiered:
        """From `[(upper bound or None, price), ...]` in ascending order."""
        if not tiers:
            raise ValueError("a tiered price needs at least one tier")
        bounds = np.array([math.inf if b is None else float(b) for b, _ in tiers], dtype=np.float64)
        if bounds[-1] != math.inf:
            bounds = np.append(bounds, math.inf)
            prices = np.array([p for _, p in tiers] + [tiers[-1][1]], dtype=np.float64)
        else:
            prices = np.array([p for _, p in tiers], dtype=np.float64)
        if np.any(np.diff(bounds) <= 0) or np.any(prices < 0):
            raise ValueError("tier bounds must increase and prices must be non-negative")
        return cls(bounds=bounds, prices=prices)

    @classmethod
    def flat(cls, price: float) -> Tiered:
        """One price for any quantity."""
        return cls.of([(None, price)])

    @property
    def first(self) -> float:
        """The first-tier unit price."""
        return float(self.prices[0])

    def scaled(self, factor: float) -> Tiered:
        """Same tiers, every price × factor (regional prices that keep the tier discounts)."""
        return Tiered(bounds=self.bounds, prices=self.prices * factor)

    def cost(self, quantity: FloatArray) -> FloatArray:
        """Graduated cost of each quantity (vectorised)."""
        q = np.asarray(quantity, dtype=np.float64)
        lower = np.concatenate(([0.0], self.bounds[:-1]))
        width = self.bounds - lower
        used = np.clip(q[..., None] - lower, 0.0, width)
        return np.asarray(used @ self.prices, dtype=np.float64)


@dataclass(frozen=True, eq=False, slots=True)
class EgressPrices:
    """Internet egress of one cloud region: free allowance (once per account-month) then tiers."""

    tiers: Tiered  # per unit
    free_units: float
    gb_per_unit: float  # 1.0 for GB-priced clouds, 1.073741824 for GiB
    items: tuple[PriceItem, ...]
    note: str = ""

    def cost(self, gb: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(gross cost, free-allowance credit ≤ 0) of `gb` decimal gigabytes."""
        units = np.asarray(gb, dtype=np.float64) / self.gb_per_unit
        gross = self.tiers.cost(units)
        credit = -self.tiers.cost(np.minimum(units, self.free_units))
        return gross, credit


NO_EGRESS = EgressPrices(Tiered.flat(0.0), 0.0, 1.0, (), "egress not priced for this provider")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a serverless option can run (None = no limit)."""

    memory_mb: tuple[float, float]
    max_duration_s: float | None
    http_max_duration_s: float | None = None
    max_payload_mb: float | None = None
    allowed_instance_mb: tuple[float, ...] = ()  # Flex instance sizes (uncertain ones included)
    vcpu_range: tuple[float, float] | None = None  # Cloud Run configurable vCPUs


@dataclass(frozen=True, eq=False, slots=True)
class ServerlessPrices:
    """Everything that prices one serverless option in one region.

    `compute` maps a meter ("gb_s", "vcpu_s", "gib_s") to its graduated price. The free tier is
    per meter in units; `free_reference` (Cloud Run) turns it into a spending credit valued at
    those prices instead of free units.
    """

    option: Option
    region: str
    compute: Mapping[str, Tiered]
    request_price: float  # USD per request
    free_compute: Mapping[str, float]
    free_requests: float
    granularity_ms: float
    min_billed_ms: float
    limits: Limits
    egress: EgressPrices
    items: tuple[PriceItem, ...]
    source: str  # provenance of the table as a whole
    free_reference: Mapping[str, float] | None = None
    notes: tuple[str, ...] = ()
    mb_per_vcpu: float | None = None  # Lambda 1,769; Flex 2,048
    min_vcpu_for_memory: tuple[tuple[float, float], ...] = ()  # Cloud Run: (max MiB, vCPUs)


# ----- the workload -----


@dataclass(frozen=True, slots=True)
class DeploymentWorkload:
    """A recurring workload: volume, per-invocation shape, and how to size and bill it."""

    invocations_per_month: float
    duration_ms: float
    memory_mb: float
    cpu_architecture: str = "any"  # "x86_64" | "arm64" | "any": what the code can run on
    hourly_profile: tuple[float, ...] | None = None  # invocations per hour of a typical day/week
    peak_concurrency: float | None = None
    request_kb: float = 0.0
    response_kb: float = 0.0  # per invocation, sent to the internet
    egress_gb_per_month: float = 0.0  # other internet egress at this volume
    trigger: str = "http"  # "http" | "event": Azure caps HTTP-triggered executions at 230 s
    free_tier: bool = True  # the account's monthly free tier is still available to this workload
    per_instance_concurrency: int = 1
    cloud_run_vcpu: float | None = None
    flex_instance_memory_mb: float | None = None
    vcpu_per_invocation: float | None = None  # CPU one in-flight invocation needs on a VM
    vm_target_utilization: float = 0.6
    vm_min_instances: int = 1
    vm_allow_burstable: bool = False

    @property
    def cpu_share(self) -> float:
        """VCPUs one in-flight invocation uses (default: Lambda's allocation, MB / 1,769)."""
        if self.vcpu_per_invocation is not None:
            return self.vcpu_per_invocation
        return self.memory_mb / LAMBDA_MB_PER_VCPU

    @property
    def egress_gb(self) -> float:
        """Internet egress per month at the stated volume (responses + other)."""
        return self.egress_gb_per_month + self.invocations_per_month * self.response_kb / 1e6

    def peak(self) -> tuple[float, str]:
        """Peak concurrent invocations at the stated volume, and how it was obtained."""
        if self.peak_concurrency is not None:
            return self.peak_concurrency, "given"
        if self.hourly_profile:
            busiest = max(self.hourly_profile)
            return busiest * self.duration_ms / 1000.0 / 3600.0, "busiest hour of the profile (Little's law)"
        flat = self.invocations_per_month * self.duration_ms / 1000.0 / SECONDS_PER_MONTH
        return flat, "monthly average, flat load assumed (Little's law); give peak_concurrency for bursts"


def monthly_volume(profile: Sequence[float]) -> float:
    """Invocations per month of a typical-day (24) or typical-week (168) hourly profile."""
    if len(profile) not in (24, 168):
        raise ValueError("an hourly profile has 24 (a day) or 168 (a week) values")
    return float(sum(profile)) * HOURS_PER_MONTH / len(profile)


# ----- serverless -----


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one invocation is billed for and holds: seconds, GiB, vCPUs."""

    billed_s: float
    memory_gib: float
    vcpus: float
    notes: tuple[str, ...] = ()


def _round_up(value: float, step: float) -> float:
    # Guard float noise: 120.0000000001 ms must not round to 121 ms.
    return math.ceil(value / step - 1e-9) * step


def limit_violation(prices: ServerlessPrices, w: DeploymentWorkload) -> tuple[str, str] | None:
    """(input field, message naming the provider and its limit) for a hard limit the input breaks."""
    label = OPTION_LABEL[prices.option]
    limits = prices.limits
    lo, hi = limits.memory_mb
    if not lo <= w.memory_mb <= hi:
        return (
            "memory_mb",
            f"{label} allows {lo:,.0f}–{hi:,.0f} MB of memory; the workload needs {w.memory_mb:,.0f} MB",
        )
    seconds = w.duration_ms / 1000.0
    if limits.max_duration_s is not None and seconds > limits.max_duration_s:
        return (
            "duration_ms",
            f"{label} stops an invocation after {limits.max_duration_s:,.0f} s "
            f"({limits.max_duration_s / 60:g} min); the workload runs {seconds:,.6g} s",
        )
    if (
        w.trigger == "http"
        and limits.http_max_duration_s is not None
        and seconds > limits.http_max_duration_s
    ):
        return (
            "duration_ms",
            f"{label} answers HTTP triggers within {limits.http_max_duration_s:,.0f} s (load balancer "
            f"timeout); the workload runs {seconds:,.6g} s",
        )
    for name, kb in (("request_kb", w.request_kb), ("response_kb", w.response_kb)):
        if limits.max_payload_mb is not None and kb / 1000.0 > limits.max_payload_mb:
            return (
                name,
                f"{label} accepts payloads up to {limits.max_payload_mb:g} MB; "
                f"the workload sends {kb / 1000:g} MB",
            )
    return None


def check(prices: ServerlessPrices, w: DeploymentWorkload) -> str | None:
    """Why this option cannot run the workload (naming the provider and its limit), or None."""
    label = OPTION_LABEL[prices.option]
    limits = prices.limits
    arch = _ARCH[prices.option]
    if w.cpu_architecture not in ("any", arch):
        return f"{label} runs {arch} code; the workload needs {w.cpu_architecture}"
    violation = limit_violation(prices, w)
    if violation is not None:
        return violation[1]
    if prices.option is Option.AZURE_FLEX and _flex_instance(prices, w) is None:
        sizes = ", ".join(f"{s:,.0f}" for s in limits.allowed_instance_mb)
        return f"{label} instance memory is one of {sizes} MB; none fits {w.memory_mb:,.0f} MB"
    if prices.option is Option.CLOUD_RUN:
        vcpu = _cloud_run_vcpu(prices, w)
        if vcpu is None:
            return f"{label} has no vCPU size for {w.memory_mb:,.0f} MiB"
        if limits.vcpu_range is not None and not limits.vcpu_range[0] <= vcpu <= limits.vcpu_range[1]:
            lo_v, hi_v = limits.vcpu_range
            return f"{label} allows {lo_v:g}–{hi_v:g} vCPUs; asked for {vcpu:g}"
    return None


def _flex_instance(prices: ServerlessPrices, w: DeploymentWorkload) -> float | None:
    sizes = sorted(prices.limits.allowed_instance_mb)
    if w.flex_instance_memory_mb is not None:
        return (
            w.flex_instance_memory_mb
            if w.flex_instance_memory_mb in sizes and w.memory_mb <= (w.flex_instance_memory_mb)
            else None
        )
    return next((s for s in sizes if s >= w.memory_mb), None)


def _cloud_run_vcpu(prices: ServerlessPrices, w: DeploymentWorkload) -> float | None:
    needed = next((v for mib, v in prices.min_vcpu_for_memory if w.memory_mb <= mib), None)
    if w.cloud_run_vcpu is not None:
        return w.cloud_run_vcpu if needed is None or w.cloud_run_vcpu >= needed else None
    return needed if needed is not None else 1.0


def allocation(prices: ServerlessPrices, w: DeploymentWorkload) -> Allocation:
    """Billed seconds, GiB and vCPUs of one invocation (call `check` first)."""
    step = prices.granularity_ms
    billed_ms = max(prices.min_billed_ms, _round_up(w.duration_ms, step))
    option = prices.option
    if option in (Option.LAMBDA_X86, Option.LAMBDA_ARM):
        per_vcpu = prices.mb_per_vcpu or LAMBDA_MB_PER_VCPU
        return Allocation(billed_ms / 1000.0, w.memory_mb / 1024.0, w.memory_mb / per_vcpu)
    if option is Option.AZURE_CONSUMPTION:
        mb = _round_up(w.memory_mb, 128.0)
        return Allocation(
            billed_ms / 1000.0,
            mb / 1024.0,
            1.0 / w.per_instance_concurrency,
            (f"memory billed as {mb:,.0f} MB (rounded up to 128 MB)",),
        )
    c = float(w.per_instance_concurrency)
    if option is Option.AZURE_FLEX:
        instance = _flex_instance(prices, w)
        assert instance is not None
        per_vcpu = prices.mb_per_vcpu or 2048.0
        return Allocation(
            billed_ms / 1000.0 / c,
            instance / 1024.0,
            instance / per_vcpu,
            (f"instance memory {instance:,.0f} MB billed while active; {c:g} execution(s) per instance",),
        )
    if option is Option.CLOUD_RUN:
        vcpu = _cloud_run_vcpu(prices, w)
        assert vcpu is not None
        return Allocation(
            billed_ms / 1000.0 / c,
            max(w.memory_mb, 128.0) / 1024.0,
            vcpu,
            (f"{vcpu:g} vCPU, {c:g} request(s) per instance",),
        )
    raise ValueError(f"not a serverless option: {option}")


@dataclass(frozen=True, eq=False, slots=True)
class CostCurve:
    """Monthly cost parts (USD) and energy at each volume; `free_tier` is a credit (≤ 0)."""

    volumes: FloatArray
    compute: FloatArray
    requests: FloatArray
    free_tier: FloatArray
    egress: FloatArray
    energy_kwh: FloatArray
    usage: Mapping[str, FloatArray] = field(default_factory=dict)

    @property
    def total(self) -> FloatArray:
        """Compute + requests + free-tier credit + egress."""
        return np.asarray(self.compute + self.requests + self.free_tier + self.egress, dtype=np.float64)


def _coefficients(option: Option | str, arm: bool = False) -> CpuCoefficients:
    if option in (Option.LAMBDA_ARM,) or (arm and option == "aws"):
        return GRAVITON
    provider = OPTION_PROVIDER.get(option, option) if isinstance(option, Option) else option
    return {"aws": AWS, "azure": AZURE, "gcp": GCP}.get(str(provider), LAMBDA_CLOUD)


def serverless_curve(
    prices: ServerlessPrices, w: DeploymentWorkload, volumes: FloatArray, egress_gb: FloatArray | None = None
) -> CostCurve:
    """Monthly cost and energy of `prices.option` at each monthly volume (vectorised).

    Egress scales with volume (it is the workload's traffic) unless `egress_gb` is given.
    """
    n = np.asarray(volumes, dtype=np.float64)
    alloc = allocation(prices, w)
    seconds = n * alloc.billed_s
    usage: dict[str, FloatArray] = {
        "requests": n,
        "billed_seconds": seconds,
        "gb_s": seconds * alloc.memory_gib,
        "gib_s": seconds * alloc.memory_gib,
        "vcpu_s": seconds * alloc.vcpus,
    }
    compute = np.zeros_like(n)
    credit = np.zeros_like(n)
    for meter, tiered in prices.compute.items():
        q = usage[meter]
        gross = tiered.cost(q)
        compute = compute + gross
        if w.free_tier:
            free = prices.free_compute.get(meter, 0.0)
            if prices.free_reference is not None:  # spending-based credit (Cloud Run)
                value = free * prices.free_reference.get(meter, tiered.first)
                credit = credit - np.minimum(gross, value)
            else:
                credit = credit - tiered.cost(np.minimum(q, free))
    requests = n * prices.request_price
    if w.free_tier:
        credit = credit - np.minimum(n, prices.free_requests) * prices.request_price
    base_volume = w.invocations_per_month
    if egress_gb is None:
        egress_gb = (n / base_volume * w.egress_gb) if base_volume > 0 else n * w.response_kb / 1e6
    egress_gross, egress_credit = prices.egress.cost(egress_gb)
    if w.free_tier:
        credit = credit + egress_credit
    usage["egress_gb"] = np.asarray(egress_gb, dtype=np.float64)
    coeff = _coefficients(prices.option)
    watts = alloc.vcpus * coeff.watts_per_vcpu(AVERAGE_UTILIZATION) + alloc.memory_gib * MEMORY_WATTS_PER_GIB
    energy = seconds * watts * coeff.pue / 3.6e6
    return CostCurve(n, compute, requests, credit, egress_gross, energy, usage)


# ----- VMs -----


@dataclass(frozen=True, eq=False, slots=True)
class VmCurve:
    """The cheapest VM fleet at each volume: type row, count, hourly price, cost and energy."""

    volumes: FloatArray
    row: IntArray  # index into the table, -1 where nothing fits
    count: FloatArray
    compute: FloatArray  # count × hourly × 730 (inf where infeasible)
    egress: FloatArray
    free_tier: FloatArray  # egress free allowance credit
    energy_kwh: FloatArray
    utilization: FloatArray
    vcpus_needed: FloatArray
    memory_gib_needed: FloatArray

    @property
    def total(self) -> FloatArray:
        """Compute + egress + free allowance."""
        return np.asarray(self.compute + self.egress + self.free_tier, dtype=np.float64)

    @property
    def feasible(self) -> BoolArray:
        """Where some fleet fits."""
        return np.asarray(self.row >= 0)


_mask_cache: OrderedDict[int, tuple[OfferTable, BoolArray, BoolArray]] = OrderedDict()
_mask_lock = threading.Lock()


def _traits(table: OfferTable) -> tuple[BoolArray, BoolArray]:
    """(arm, burstable) per row, classified once per table (identity-keyed LRU)."""
    key = id(table)
    with _mask_lock:
        hit = _mask_cache.get(key)
        if hit is not None and hit[0] is table:
            return hit[1], hit[2]
    traits = [instance_traits(table.provider, name) for name in table.instance_types]
    arm = np.array([ARM in t for t in traits], dtype=bool)
    burstable = np.array([BURSTABLE in t for t in traits], dtype=bool)
    with _mask_lock:
        _mask_cache[key] = (table, arm, burstable)
        while len(_mask_cache) > 512:
            _mask_cache.popitem(last=False)
    return arm, burstable


def vm_candidates(table: OfferTable, w: DeploymentWorkload) -> BoolArray:
    """Rows a VM fleet may use: CPU-only, known specs, the workload's architecture and burst policy."""
    arm, burstable = _traits(table)
    ok = (table.gpu_count == 0) & np.isfinite(table.vcpus) & np.isfinite(table.memory_gib)
    if w.cpu_architecture == "x86_64":
        ok &= ~arm
    elif w.cpu_architecture == "arm64":
        ok &= arm
    if not w.vm_allow_burstable:
        ok &= ~burstable
    return np.asarray(ok)


_frontier_cache: OrderedDict[tuple[int, str, bool], tuple[OfferTable, IntArray]] = OrderedDict()


def vm_frontier(table: OfferTable, w: DeploymentWorkload) -> IntArray:
    """Candidate rows that no cheaper-or-equal row dominates (≥ vCPUs and ≥ GiB), by price.

    Only these can ever be the cheapest fit, so sizing scans tens of rows instead of thousands;
    computed once per (table, architecture, burst policy) and memoised by table identity.
    """
    key = (id(table), w.cpu_architecture, w.vm_allow_burstable)
    with _mask_lock:
        hit = _frontier_cache.get(key)
        if hit is not None and hit[0] is table:
            return hit[1]
    rows = np.flatnonzero(vm_candidates(table, w))
    order = rows[np.lexsort((-table.memory_gib[rows], -table.vcpus[rows], table.price_usd_per_hour[rows]))]
    kept: list[int] = []
    kv = np.empty(0)
    km = np.empty(0)
    for i in order.tolist():
        v, m = table.vcpus[i], table.memory_gib[i]
        if len(kept) and bool(np.any((kv >= v) & (km >= m))):
            continue
        kept.append(i)
        kv = np.append(kv, v)
        km = np.append(km, m)
    frontier = np.array(kept, dtype=np.int64)
    with _mask_lock:
        _frontier_cache[key] = (table, frontier)
        while len(_frontier_cache) > 512:
            _frontier_cache.popitem(last=False)
    return frontier


def vm_curve(
    table: OfferTable,
    w: DeploymentWorkload,
    volumes: FloatArray,
    egress: EgressPrices,
    egress_gb: FloatArray | None = None,
) -> VmCurve:
    """Cheapest fleet of identical VMs sized for the peak at the target utilisation, per volume.

    Need at volume V (peak scales with volume): vCPUs = peak × CPU share / target utilisation,
    GiB = peak × MB / 1024. For every candidate type that holds one whole invocation (its memory
    and CPU share, up to 1 vCPU) the fleet is the smallest multiple of `vm_min_instances` that
    holds the need; the cheapest fleet wins (ties: fewer instances).
    """
    n = np.asarray(volumes, dtype=np.float64)
    base = w.invocations_per_month
    peak, _ = w.peak()
    scale = n / base if base > 0 else np.ones_like(n)
    peak_v = np.maximum(peak * scale, 1e-9)
    vcpu_need = peak_v * w.cpu_share / w.vm_target_utilization
    mem_need = peak_v * w.memory_mb / 1024.0
    order = vm_frontier(table, w)  # sorted by price
    k = len(n)
    best_cost = np.full(k, math.inf)
    best_row = np.full(k, -1, dtype=np.int64)
    best_count = np.zeros(k)
    if len(order):
        vc = table.vcpus[order]
        mem = table.memory_gib[order]
        price = table.price_usd_per_hour[order]
        # (volume, row): how many identical instances of `row` hold the need, in whole multiples
        # of `vm_min_instances` (at least one multiple).
        step = float(w.vm_min_instances)
        per_row = np.maximum(vcpu_need[:, None] / vc[None, :], mem_need[:, None] / mem[None, :])
        count = np.maximum(np.ceil(per_row / step - 1e-9), 1.0) * step
        # Each instance must hold at least one whole invocation (its memory and CPU share).
        holds_one = (mem >= w.memory_mb / 1024.0 - 1e-9) & (vc >= min(w.cpu_share, 1.0) - 1e-9)
        cost = np.where(holds_one[None, :], count * price[None, :] * HOURS_PER_MONTH, math.inf)
        cheapest = cost.min(axis=1, keepdims=True)
        tied = cost <= cheapest * (1 + 1e-12)
        pick = np.where(tied, count, math.inf).argmin(axis=1)  # price ties: fewer instances
        idx = np.arange(k)
        best_cost = cost[idx, pick]
        ok = np.isfinite(best_cost)
        best_row = np.where(ok, order[pick], -1)
        best_count = np.where(ok, count[idx, pick], 0.0)
    if egress_gb is None:
        egress_gb = n / base * w.egress_gb if base > 0 else n * w.response_kb / 1e6
    gross, credit = egress.cost(egress_gb)
    if not w.free_tier:
        credit = np.zeros_like(credit)
    safe = np.maximum(best_row, 0)
    vcpus = table.vcpus[safe] * best_count
    gib = table.memory_gib[safe] * best_count
    avg_conc = n * w.duration_ms / 1000.0 / SECONDS_PER_MONTH
    util = np.clip(np.divide(avg_conc * w.cpu_share, vcpus, out=np.zeros_like(n), where=vcpus > 0), 0.0, 1.0)
    arm, _ = _traits(table)
    energy = np.zeros_like(n)
    for is_arm in (False, True):
        sel = (best_row >= 0) & (arm[safe] == is_arm)
        if not sel.any():
            continue
        coeff = _coefficients(table.provider, arm=is_arm)
        watts = vcpus * (
            coeff.min_watts_per_vcpu + util * (coeff.max_watts_per_vcpu - coeff.min_watts_per_vcpu)
        )
        watts = watts + gib * MEMORY_WATTS_PER_GIB
        energy = np.where(sel, watts * coeff.pue * HOURS_PER_MONTH / 1000.0, energy)
    return VmCurve(
        volumes=n,
        row=best_row,
        count=best_count,
        compute=best_cost,
        egress=gross,
        free_tier=credit,
        energy_kwh=energy,
        utilization=util,
        vcpus_needed=vcpu_need,
        memory_gib_needed=mem_need,
    )


def vm_coefficients(provider: str, arm: bool) -> CpuCoefficients:
    """The energy coefficients a VM of this provider/architecture is modelled with."""
    return _coefficients(provider, arm=arm)


def serverless_coefficients(option: Option) -> CpuCoefficients:
    """The energy coefficients a serverless option is modelled with."""
    return _coefficients(option)


# ----- break-even -----


@dataclass(frozen=True, slots=True)
class BreakEven:
    """Monthly volume where the two cost curves cross, and which side is cheaper below it."""

    volume: float
    cheaper_below: str  # "serverless" | "vm"
    serverless_usd: float
    vm_usd: float


def find_break_even(
    serverless: Callable[[FloatArray], FloatArray],
    vm: Callable[[FloatArray], FloatArray],
    lo: float = 1.0,
    hi: float = 1e12,
    grid: int = 61,
    rounds: int = 2,
) -> BreakEven | None:
    """First volume in [lo, hi] where sign(serverless − vm) changes.

    Vectorised refinement on a log scale: a `grid`-point scan, then `rounds` rescans of the
    bracketing interval (each shrinks it `grid − 1`-fold: 12 decades → ~2e-4 relative). The VM
    curve is a step function (instances are whole), so "cross" includes a VM step jumping over the
    serverless line: the answer is then the step's volume. None when nothing changes in range.
    """
    volumes = np.geomspace(lo, hi, grid)
    sign = _sign(serverless(volumes) - vm(volumes))
    changes = np.flatnonzero(sign[1:] != sign[:-1])
    if len(changes) == 0:
        return None
    i = int(changes[0])
    sign_below = sign[i]
    a, b = volumes[i], volumes[i + 1]
    for _ in range(rounds):
        volumes = np.geomspace(a, b, grid)
        sign = _sign(serverless(volumes) - vm(volumes))
        j = int(np.flatnonzero(sign != sign_below)[0])  # b itself always differs
        a, b = volumes[max(j - 1, 0)], volumes[j]
    x = np.array([b])
    return BreakEven(
        volume=float(b),
        cheaper_below="serverless" if sign_below < 0 else "vm",
        serverless_usd=float(serverless(x)[0]),
        vm_usd=float(vm(x)[0]),
    )


def _sign(diff: FloatArray) -> FloatArray:
    # +inf (no VM fits, or no serverless) is a definite side; exact ties count as "not cheaper".
    return np.asarray(np.where(np.isnan(diff) | (diff >= 0), 1.0, -1.0))
