"""Choose the instance type a workload runs on in one region: pinned, else the cheapest that fits.

Why: the contract sizes jobs by need (vCPUs, GiB, GPUs of accepted models), not by instance
type, so that regions and providers compare like for like (docs/data-sources.md §2.5: "the
smallest shape that contains the request"). This runs once per location per request over tables of
up to ~1,700 rows, so it is array maths on the `OfferTable` columns: a boolean mask, then a min.

Rules (documented in the API description too):
- A type pinned in `workload.instance_types` for the table's provider is used as is, even when it
  is smaller than the stated need (the caller asked for it); absent → `Infeasible`.
- Otherwise the cheapest row with vcpus ≥ need, memory ≥ need and, when GPUs are requested,
  gpu_count ≥ need with a model in the accepted set (any model when `models` is None). Rows with
  unknown specs (NaN) are never auto-selected.
- With no GPU requested every row is allowed; the cheapest wins, which in practice is a CPU-only
  type (a GPU type always costs more than a CPU type of the same size). We do not forbid GPU rows,
  so a region whose only fitting type has a GPU still runs the job.
- By default the cheapest row may be a burstable type (AWS t2/t3/t4g, Azure B-series, GCP
  e2-micro/small/medium, f1/g1) or an Arm type (AWS Graviton, Azure *p* sizes, GCP T2A/C4A/N4A,
  Lambda GH200): with the full price tables an "8 vCPU / 32 GiB" job lands on t4g.2xlarge or
  Standard_B8ps_v2. The workload carries no CPU-architecture field, so callers that need x86
  with sustained performance pass `exclude={ARM, BURSTABLE}` (classified from the type name by
  `instance_traits`) or pin a type.
- Ties on price: fewer vCPUs, then less memory, then the instance type name (deterministic).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Set
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType, Workload


@dataclass(frozen=True, slots=True)
class Infeasible:
    """Why no instance type of a region can run the workload (shown to the client as is)."""

    reason: str


ARM = "arm"
BURSTABLE = "burstable"

# Name patterns per provider (instance family naming as each provider documents it).
_TRAIT_PATTERNS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "aws": (
        # Graviton: a1, and a "g" among the attribute letters after the generation (m6g, c7gn, x2gd, t4g).
        (ARM, re.compile(r"^(a1|[a-z]+\d+[a-z]*g[a-z]*)[.-]")),
        (BURSTABLE, re.compile(r"^t\d[a-z]*\.")),
    ),
    "azure": (
        # Ampere Altra/Cobalt sizes carry a lower-case "p" (Standard_D8ps_v5, Standard_E8pds_v6).
        (ARM, re.compile(r"^Standard_[A-Z]+\d+[a-z]*p[a-z]*(_|$)")),
        (BURSTABLE, re.compile(r"^Standard_B\d")),
    ),
    "gcp": (
        (ARM, re.compile(r"^(t2a|c4a|n4a)-")),
        (BURSTABLE, re.compile(r"^(e2-(micro|small|medium)|f1-micro|g1-small)$")),
    ),
    "lambda": ((ARM, re.compile(r"GH200")),),  # Grace Hopper: Arm (Grace) CPU
}


def instance_traits(provider: str, instance_type: str) -> frozenset[str]:
    """Traits (`ARM`, `BURSTABLE`) of an instance type, classified from its name."""
    patterns = _TRAIT_PATTERNS.get(provider.lower(), ())
    return frozenset(trait for trait, pattern in patterns if pattern.search(instance_type))


@dataclass(frozen=True, slots=True)
class _Derived:
    """Per-table columns that `OfferTable` does not carry, computed once per table."""

    gpu_models: npt.NDArray[np.str_]
    arm: npt.NDArray[np.bool_]
    burstable: npt.NDArray[np.bool_]


# OfferTable has no slot for these and cannot be weakly referenced, so keep a small identity-keyed
# LRU (holding the table in the entry keeps its id from being reused while cached).
_CACHE_SIZE = 2048
_derived_cache: OrderedDict[int, tuple[OfferTable, _Derived]] = OrderedDict()
_derived_lock = threading.Lock()


def _derived(table: OfferTable) -> _Derived:
    key = id(table)
    with _derived_lock:
        hit = _derived_cache.get(key)
        if hit is not None and hit[0] is table:
            _derived_cache.move_to_end(key)
            return hit[1]
    traits = [instance_traits(table.provider, name) for name in table.instance_types]
    derived = _Derived(
        gpu_models=np.array([m or "" for m in table.gpu_models], dtype=np.str_),
        arm=np.array([ARM in t for t in traits], dtype=bool),
        burstable=np.array([BURSTABLE in t for t in traits], dtype=bool),
    )
    with _derived_lock:
        _derived_cache[key] = (table, derived)
        while len(_derived_cache) > _CACHE_SIZE:
            _derived_cache.popitem(last=False)
    return derived


def _num(value: float) -> str:
    return f"{value:g}"


def _gpu_phrase(count: int, models: tuple[str, ...] | None) -> str:
    phrase = f"{count} GPU" if count == 1 else f"{count} GPUs"
    return f"{phrase} {' or '.join(models)}" if models else phrase


def select_instance(
    table: OfferTable, workload: Workload, *, exclude: Set[str] = frozenset()
) -> InstanceOffer | Infeasible:
    """The offer the workload would run on in this table's region, or why there is none.

    `exclude` drops auto-selected types with those traits (`ARM`, `BURSTABLE`); pins ignore it.
    The workload's own policy adds to it: `cpu_architecture` "x86_64" excludes ARM types, "arm64"
    keeps only ARM types, "any" keeps both; burstable types are excluded unless `allow_burstable`.
    """
    exclude = set(exclude)
    require: set[str] = set()
    if workload.cpu_architecture == "x86_64":
        exclude.add(ARM)
    elif workload.cpu_architecture == "arm64":
        require.add(ARM)
    if not workload.allow_burstable:
        exclude.add(BURSTABLE)
    unknown = exclude - {ARM, BURSTABLE}
    if unknown:
        raise ValueError(f"unknown instance traits to exclude: {sorted(unknown)}")
    where = f"{table.provider}/{table.region}"
    spot = " as spot" if table.price_type is PriceType.SPOT else ""
    pinned = workload.instance_types.get(table.provider)
    if pinned is not None:
        index = table.find(pinned)
        if index is None:
            return Infeasible(f"instance type {pinned} not offered{spot} in {where}")
        return table.offer(index)
    if len(table) == 0:
        return Infeasible(f"no priced instance types{spot} in {where}")

    gpu = workload.gpu
    gpu_count = gpu.count if gpu is not None else 0
    gpu_models = gpu.models if gpu is not None else None
    # NaN specs compare False, so rows without specs drop out here.
    size_ok = (table.vcpus >= workload.vcpus) & (table.memory_gib >= workload.memory_gib)
    gpu_ok = np.ones(len(table), dtype=bool)
    if gpu_count > 0:
        gpu_ok = table.gpu_count >= gpu_count
        if gpu_models is not None:
            gpu_ok &= np.isin(_derived(table).gpu_models, np.array(gpu_models, dtype=np.str_))
    allowed = np.ones(len(table), dtype=bool)
    if ARM in exclude:
        allowed &= ~_derived(table).arm
    if BURSTABLE in exclude:
        allowed &= ~_derived(table).burstable
    if ARM in require:
        allowed &= _derived(table).arm
    fits = size_ok & gpu_ok
    candidates = np.flatnonzero(fits & allowed)

    if len(candidates) == 0:
        size = f"≥ {workload.vcpus} vCPUs and ≥ {_num(workload.memory_gib)} GiB"
        if fits.any():
            # Something fits, but only types the architecture/burstable policy rules out.
            policy = [f"excluding {' and '.join(sorted(exclude))} types"] if exclude else []
            policy += [f"only {' and '.join(sorted(require))} types"] if require else []
            spot += f" ({'; '.join(policy)})"
        if gpu_count > 0 and not gpu_ok.any():
            return Infeasible(f"no instance type with {_gpu_phrase(gpu_count, gpu_models)}{spot}")
        if gpu_count > 0:
            return Infeasible(f"no instance type with {_gpu_phrase(gpu_count, gpu_models)}, {size}{spot}")
        return Infeasible(f"no instance type with {size}{spot}")

    prices = table.price_usd_per_hour[candidates]
    tied = candidates[prices == prices.min()]
    if len(tied) > 1:
        # lexsort: last key is primary → vCPUs, then memory; names only among exact ties.
        order = np.lexsort((table.memory_gib[tied], table.vcpus[tied]))
        tied = tied[order]
        first = tied[0]
        same = tied[
            (table.vcpus[tied] == table.vcpus[first]) & (table.memory_gib[tied] == table.memory_gib[first])
        ]
        best = int(min(same.tolist(), key=lambda i: table.instance_types[i]))
    else:
        best = int(tied[0])
    return table.offer(best)
