"""Frozen value types shared by providers, the engine and the API layer.

Arrays (NumPy) are used where the hot path needs them: carbon series and offer tables are kept as
columns so that scoring and instance selection never build per-candidate Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CLOUD_PROVIDERS: tuple[str, ...] = ("aws", "azure", "gcp", "lambda")
_Spans = tuple[tuple[tuple[datetime, datetime, str], ...], tuple[str, ...]]


class ObjectiveMode(StrEnum):
    """How candidates are ranked (see the API contract for the formulas)."""

    CARBON = "carbon"
    COST = "cost"
    BALANCED = "balanced"
    CARBON_WITHIN_BUDGET = "carbon_within_budget"
    MONETIZED = "monetized"


class PriceType(StrEnum):
    """Which list price a workload pays."""

    ON_DEMAND = "on_demand"
    SPOT = "spot"


@dataclass(frozen=True, slots=True)
class Objective:
    """Ranking mode plus its parameters (only the ones the mode uses matter)."""

    mode: ObjectiveMode = ObjectiveMode.BALANCED
    carbon_weight: float = 0.5
    max_cost_increase_pct: float = 10.0
    carbon_price_usd_per_tonne: float | None = None

    @property
    def uses_cost(self) -> bool:
        """True for modes whose score needs a price for every candidate."""
        return self.mode is not ObjectiveMode.CARBON


@dataclass(frozen=True, slots=True)
class GpuRequirement:
    """GPUs the job needs. `models` are normalised names; None accepts any model."""

    count: int
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """What runs: its size (what the engine must fit) and how long it runs."""

    duration: timedelta
    vcpus: int
    memory_gib: float
    gpu: GpuRequirement | None = None
    instance_types: Mapping[str, str] = field(default_factory=dict)  # provider -> pinned type
    power_watts: float | None = None  # overrides the energy model's average draw
    price_type: PriceType = PriceType.ON_DEMAND
    # Auto-selection policy: CPU architecture the job's image needs ("x86_64", "arm64", "any")
    # and whether burstable (CPU-credit) types may host it; pinned types ignore both.
    cpu_architecture: str = "x86_64"
    allow_burstable: bool = False

    @property
    def duration_hours(self) -> float:
        """Run length in hours (float)."""
        return self.duration.total_seconds() / 3600.0


@dataclass(frozen=True, slots=True)
class Region:
    """One catalogued cloud region and the Electricity Maps zone that powers it."""

    provider: str
    region: str
    display_name: str
    location: str
    latitude: float | None
    longitude: float | None
    zone: str
    confidence: str = "high"  # high | medium | uncertain (see the bundled catalog's README)


@dataclass(frozen=True, slots=True)
class Location:
    """A candidate place to run: a cloud region or a bare grid zone (on-prem, colo)."""

    zone: str
    provider: str | None = None
    region: str | None = None
    price_usd_per_hour: float | None = None  # only for grid zones; cloud prices come from catalogs

    @property
    def key(self) -> str:
        """Stable identifier used in logs, warnings and `infeasible` entries."""
        if self.provider is not None and self.region is not None:
            return f"{self.provider}/{self.region}"
        return f"zone/{self.zone}"

    @property
    def is_cloud(self) -> bool:
        """True when this is a provider region rather than a bare grid zone."""
        return self.provider is not None


@dataclass(frozen=True, slots=True)
class SourceRun:
    """A run of consecutive points [start_index, end_index) that came from one source."""

    start_index: int
    end_index: int
    label: str  # e.g. "electricitymaps:forecast", "fallback:replay-2023", "fallback:annual-2025"


@dataclass(frozen=True, eq=False, slots=True)
class CarbonSeries:
    """Carbon intensity of one zone, piecewise constant on [start + i·step, start + (i+1)·step).

    `values` are gCO2e/kWh (lifecycle unless stated). `runs` cover [0, len(values)) in order and
    say which source produced each point, so an option can name exactly what it was scored on.
    """

    zone: str
    start: datetime  # UTC, aware
    step: timedelta
    values: FloatArray
    runs: tuple[SourceRun, ...]
    emission_factor_type: str = "lifecycle"
    # (run start, run end, label) per run and every distinct label: `sources_between`'s lookup
    _spans: _Spans | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("CarbonSeries.start must be timezone-aware")
        if self.step <= timedelta(0):
            raise ValueError("CarbonSeries.step must be positive")

    @property
    def end(self) -> datetime:
        """End of the last interval (exclusive)."""
        return self.start + self.step * len(self.values)

    def index_of(self, when: datetime) -> int:
        """Index of the interval containing `when` (may be out of range)."""
        return int((when - self.start) // self.step)

    def sources_between(self, start: datetime, end: datetime) -> tuple[str, ...]:
        """Distinct source labels of the points overlapping [start, end), in series order.

        Answered from the runs' time spans, computed once per series (`_source_spans`): a point
        range [floor, ceil) overlaps a run exactly when the run's span overlaps [start, end), so
        no index arithmetic is needed per call, and a window overlapping the first and the last
        run overlaps them all (the labels are then precomputed too).
        """
        spans = self._spans
        if spans is None:
            spans = self._source_spans()
        edges, every = spans
        if not edges:
            return ()
        if edges[0][1] > start and edges[-1][0] < end:
            return every
        labels: list[str] = []
        for run_start, run_end, label in edges:
            if run_start < end and run_end > start and label not in labels:
                labels.append(label)
        return tuple(labels)

    def _source_spans(self) -> _Spans:
        edges = tuple(
            (self.start + self.step * run.start_index, self.start + self.step * run.end_index, run.label)
            for run in self.runs
        )
        spans = (edges, tuple(dict.fromkeys(label for _, _, label in edges)))
        object.__setattr__(self, "_spans", spans)
        return spans


@dataclass(frozen=True, slots=True)
class InstanceOffer:
    """One priced instance type in one region, with its provenance."""

    provider: str
    region: str
    instance_type: str
    vcpus: float | None  # fractional for shared-core types (GCP e2-micro = 0.25)
    memory_gib: float | None
    gpu_count: int
    gpu_model: str | None
    price_usd_per_hour: float
    price_type: PriceType
    as_of: date | None  # None = undated in the source
    source: str  # provenance label: "live:azure", "cache:2026-11-20", "bundled:2026-07-20", "bundled:undated"
    currency: str = "USD"


@dataclass(frozen=True, eq=False, slots=True)
class OfferTable:
    """Every offer of one (provider, region, price type) as columns, for vectorised selection.

    Unknown specs are NaN in `vcpus`/`memory_gib` (such rows can only be pinned, never selected).
    """

    provider: str
    region: str
    price_type: PriceType
    instance_types: tuple[str, ...]
    vcpus: FloatArray
    memory_gib: FloatArray
    gpu_count: IntArray
    gpu_models: tuple[str | None, ...]
    price_usd_per_hour: FloatArray
    as_of: tuple[date | None, ...]
    sources: tuple[str, ...]
    fetched_at: datetime | None = None  # when a live/cached table was fetched; None for bundled

    def __len__(self) -> int:
        return len(self.instance_types)

    def offer(self, index: int) -> InstanceOffer:
        """Materialise row `index` as an InstanceOffer."""
        vcpus = self.vcpus[index]
        mem = self.memory_gib[index]
        return InstanceOffer(
            provider=self.provider,
            region=self.region,
            instance_type=self.instance_types[index],
            vcpus=None if np.isnan(vcpus) else (int(vcpus) if float(vcpus).is_integer() else float(vcpus)),
            memory_gib=None if np.isnan(mem) else float(mem),
            gpu_count=int(self.gpu_count[index]),
            gpu_model=self.gpu_models[index],
            price_usd_per_hour=float(self.price_usd_per_hour[index]),
            price_type=self.price_type,
            as_of=self.as_of[index],
            source=self.sources[index],
        )

    def find(self, instance_type: str) -> int | None:
        """Row index of an instance type, or None."""
        try:
            return self.instance_types.index(instance_type)
        except ValueError:
            return None

    @classmethod
    def from_offers(
        cls,
        provider: str,
        region: str,
        price_type: PriceType,
        offers: list[InstanceOffer],
        fetched_at: datetime | None = None,
    ) -> OfferTable:
        """Build the columnar form from a list of offers (order kept)."""
        return cls(
            provider=provider,
            region=region,
            price_type=price_type,
            instance_types=tuple(o.instance_type for o in offers),
            vcpus=np.array([np.nan if o.vcpus is None else o.vcpus for o in offers], dtype=np.float64),
            memory_gib=np.array(
                [np.nan if o.memory_gib is None else o.memory_gib for o in offers], dtype=np.float64
            ),
            gpu_count=np.array([o.gpu_count for o in offers], dtype=np.int64),
            gpu_models=tuple(o.gpu_model for o in offers),
            price_usd_per_hour=np.array([o.price_usd_per_hour for o in offers], dtype=np.float64),
            as_of=tuple(o.as_of for o in offers),
            sources=tuple(o.source for o in offers),
            fetched_at=fetched_at,
        )


def utc(dt: datetime) -> datetime:
    """Convert an aware datetime to UTC (raises on naive input: callers must validate first)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    return dt.astimezone(UTC)


@lru_cache(maxsize=8192)
def format_utc(dt: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z and whole seconds, as every response uses."""
    # isoformat is ~2.5x faster than strftime (a hot-path cost: ~15 times per answer); the API's
    # instants are years 2000-2100, so the first 19 characters are always YYYY-MM-DDTHH:MM:SS.
    # Memoised: answers of one hour format the same few dozen instants (equal instants in any
    # zone hash and compare equal and format the same; a naive one raises and is not kept).
    return utc(dt).isoformat(timespec="seconds")[:19] + "Z"


def price_label(kind: str, as_of: date | None) -> str:
    """Provenance label for a price: `bundled:2026-07-20`, `cache:undated`, ..."""
    return f"{kind}:{as_of.isoformat() if as_of else 'undated'}"
