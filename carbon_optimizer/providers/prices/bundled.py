"""Bundled list prices (AWS, Azure, GCP, Lambda Cloud) as prebuilt `OfferTable`s.

Why: prices must be available with no credentials and no network (the contract's embedded
default), and instance selection runs per location per request, so it needs columns, not rows.
`scripts/build_data.py` turns the four shipped CSV tables (93,183 rows; Azure alone 64,888) into a
sorted, columnar `data/pricing/offers.npz` whose rows are contiguous per (provider, region, price
type). Loading it takes 20–60 ms instead of ~800 ms for parsing the CSVs; each region's
`OfferTable` is then sliced out once (~0.3 ms), on first request, and reused (the hot path never
rebuilds arrays). The tables' arrays are read-only because every request of the process shares them.

Lambda Cloud prices are region-independent (region `*` in the data): a request for any catalogued
Lambda region gets the `*` rows labelled with that region. Provenance per row is
`bundled:<as_of>` (`bundled:undated` for the SkyPilot rows without a date).

GPU counts: three GCP shapes carry a fraction of one GPU (g4-standard-6/12/24: 1/8, 1/4, 1/2 of an
RTX PRO 6000). `OfferTable.gpu_count` is an integer, so they appear with `gpu_count` 0 (they cannot
satisfy a whole-GPU request); `gpu_model` still names the GPU.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType, price_label
from carbon_optimizer.providers.catalog import data_file, load_region_catalog

LAMBDA_ANY_REGION = "*"
BUNDLED = "bundled"


@dataclass(frozen=True, eq=False, slots=True)
class _Columns:
    """The whole bundled price table, columnar, sorted by (provider, region, price_type, type)."""

    providers: tuple[str, ...]
    price_types: tuple[PriceType, ...]
    regions: tuple[str, ...]
    instance_types: tuple[str, ...]
    gpu_models: tuple[str | None, ...]
    as_of: tuple[date | None, ...]
    labels: tuple[str, ...]  # per as_of code: "bundled:2026-07-20" / "bundled:undated"
    provider: npt.NDArray[np.uint8]
    price_type: npt.NDArray[np.uint8]
    region: npt.NDArray[np.int32]
    instance_type: npt.NDArray[np.int32]
    vcpus: npt.NDArray[np.float64]
    memory_gib: npt.NDArray[np.float64]
    gpu_count: npt.NDArray[np.int64]
    gpu_model: npt.NDArray[np.int16]
    price_usd_per_hour: npt.NDArray[np.float64]
    as_of_code: npt.NDArray[np.int16]
    groups: dict[tuple[str, str, PriceType], tuple[int, int]]  # → [lo, hi) row slice


def _strings(array: npt.NDArray[np.str_]) -> tuple[str, ...]:
    return tuple(str(s) for s in array.tolist())


@functools.cache
def _load_columns() -> _Columns:
    with data_file("pricing", "offers.npz").open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        raw = {name: npz[name] for name in npz.files}
    providers = _strings(raw["providers"])
    price_types = tuple(PriceType(p) for p in _strings(raw["price_types"]))
    regions = _strings(raw["regions"])
    dates = tuple(date.fromisoformat(d) if d else None for d in _strings(raw["as_of"]))
    provider = raw["provider"].astype(np.uint8)
    price_type = raw["price_type"].astype(np.uint8)
    region = raw["region"].astype(np.int32)
    # Rows are sorted, so each (provider, region, price_type) is one contiguous run.
    key = (provider.astype(np.int64) * len(regions) + region) * len(price_types) + price_type
    cuts = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    ends = np.concatenate((cuts, [len(key)])).tolist()
    groups = {
        (providers[int(provider[lo])], regions[int(region[lo])], price_types[int(price_type[lo])]): (lo, hi)
        for lo, hi in zip(starts, ends, strict=True)
    }
    columns = _Columns(
        providers=providers,
        price_types=price_types,
        regions=regions,
        instance_types=_strings(raw["instance_types"]),
        gpu_models=tuple(m or None for m in _strings(raw["gpu_models"])),
        as_of=dates,
        labels=tuple(price_label(BUNDLED, d) for d in dates),
        provider=provider,
        price_type=price_type,
        region=region,
        instance_type=raw["instance_type"].astype(np.int32),
        vcpus=raw["vcpus"].astype(np.float64),
        memory_gib=raw["memory_gib"].astype(np.float64),
        # Fractional GPUs (GCP g4 shapes) floor to 0: they cannot host a whole-GPU job.
        gpu_count=np.floor(raw["gpu_count"]).astype(np.int64),
        gpu_model=raw["gpu_model"].astype(np.int16),
        price_usd_per_hour=raw["price_usd_per_hour"].astype(np.float64),
        as_of_code=raw["as_of_code"].astype(np.int16),
        groups=groups,
    )
    for array in (
        columns.provider,
        columns.price_type,
        columns.region,
        columns.instance_type,
        columns.vcpus,
        columns.memory_gib,
        columns.gpu_count,
        columns.gpu_model,
        columns.price_usd_per_hour,
        columns.as_of_code,
    ):
        array.setflags(write=False)
    return columns


class BundledPriceCatalog:
    """Process-wide view of the bundled prices; tables are built on first use and then reused."""

    def __init__(self) -> None:
        self._columns = _load_columns()
        self._lambda_regions = frozenset(r.region for r in load_region_catalog().regions("lambda"))
        self._tables: dict[tuple[str, str, PriceType], OfferTable | None] = {}
        self._indexes: dict[tuple[str, str, PriceType], dict[str, int]] = {}
        self._lock = threading.Lock()

    def _group_key(self, provider: str, region: str, price_type: PriceType) -> tuple[str, str, PriceType]:
        if provider == "lambda" and region in self._lambda_regions:
            return (provider, LAMBDA_ANY_REGION, price_type)
        return (provider, region, price_type)

    def _build(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        c = self._columns
        span = c.groups.get(self._group_key(provider, region, price_type))
        if span is None:
            return None
        rows = slice(*span)
        codes = c.as_of_code[rows].tolist()
        return OfferTable(
            provider=provider,
            region=region,
            price_type=price_type,
            instance_types=tuple(c.instance_types[i] for i in c.instance_type[rows].tolist()),
            vcpus=c.vcpus[rows],  # views of read-only columns: no copy, shared safely
            memory_gib=c.memory_gib[rows],
            gpu_count=c.gpu_count[rows],
            gpu_models=tuple(c.gpu_models[i] for i in c.gpu_model[rows].tolist()),
            price_usd_per_hour=c.price_usd_per_hour[rows],
            as_of=tuple(c.as_of[i] for i in codes),
            sources=tuple(c.labels[i] for i in codes),
        )

    def table(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """The region's offers (None when the bundled data has none), built once and cached."""
        key = (provider.lower(), region.lower(), PriceType(price_type))
        try:
            return self._tables[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._tables:
                table = self._build(*key)
                self._tables[key] = table
                if table is not None:
                    self._indexes[key] = {name: i for i, name in enumerate(table.instance_types)}
            return self._tables[key]

    def lookup(
        self, provider: str, region: str, instance_type: str, price_type: PriceType
    ) -> InstanceOffer | None:
        """One priced instance type, or None."""
        table = self.table(provider, region, price_type)
        if table is None:
            return None
        index = self._indexes[(provider.lower(), region.lower(), PriceType(price_type))].get(instance_type)
        return None if index is None else table.offer(index)

    @functools.cached_property
    def _regions_by_provider(self) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for provider, region, _ in self._columns.groups:
            found.setdefault(provider, set()).add(region)
        if LAMBDA_ANY_REGION in found.get("lambda", set()):
            found["lambda"] = set(self._lambda_regions)
        return {p: frozenset(r) for p, r in found.items()}

    def regions_with_prices(self, provider: str) -> frozenset[str]:
        """Region codes with at least one bundled price (Lambda: every catalogued Lambda region)."""
        return self._regions_by_provider.get(provider.lower(), frozenset())

    def newest_as_of(self, provider: str) -> date | None:
        """The newest `as_of` date among a provider's bundled prices (None: none dated)."""
        columns = self._columns
        try:
            code = columns.providers.index(provider.lower())
        except ValueError:
            return None
        dated = [columns.as_of[c] for c in np.unique(columns.as_of_code[columns.provider == code])]
        return max((d for d in dated if d is not None), default=None)

    def list_offers(
        self,
        provider: str | None = None,
        region: str | None = None,
        instance_type: str | None = None,
        price_type: PriceType | None = None,
        *,
        limit: int | None = None,
    ) -> list[InstanceOffer]:
        """Offers matching every given filter, sorted by provider, region, price type, type.

        A Lambda region code (e.g. `us-west-1`) matches the region-independent `*` rows, which are
        then reported with that region; without a region filter Lambda rows keep region `*`.
        """
        c = self._columns
        mask = np.ones(len(c.price_usd_per_hour), dtype=bool)
        shown_region: str | None = None
        if provider is not None:
            if provider.lower() not in c.providers:
                return []
            mask &= c.provider == c.providers.index(provider.lower())
        if region is not None:
            wanted = region.lower()
            match = c.region == (c.regions.index(wanted) if wanted in c.regions else -1)
            if wanted in self._lambda_regions and LAMBDA_ANY_REGION in c.regions:
                match |= (c.provider == c.providers.index("lambda")) & (
                    c.region == c.regions.index(LAMBDA_ANY_REGION)
                )
                shown_region = wanted
            mask &= match
        if instance_type is not None:
            if instance_type not in c.instance_types:
                return []
            mask &= c.instance_type == c.instance_types.index(instance_type)
        if price_type is not None:
            mask &= c.price_type == c.price_types.index(PriceType(price_type))
        rows = np.flatnonzero(mask)
        if limit is not None:
            rows = rows[:limit]
        offers: list[InstanceOffer] = []
        for i in rows.tolist():
            row_region = c.regions[int(c.region[i])]
            if row_region == LAMBDA_ANY_REGION and shown_region is not None:
                row_region = shown_region
            vcpus, memory = float(c.vcpus[i]), float(c.memory_gib[i])
            code = int(c.as_of_code[i])
            offers.append(
                InstanceOffer(
                    provider=c.providers[int(c.provider[i])],
                    region=row_region,
                    instance_type=c.instance_types[int(c.instance_type[i])],
                    vcpus=None if np.isnan(vcpus) else int(vcpus),
                    memory_gib=None if np.isnan(memory) else memory,
                    gpu_count=int(c.gpu_count[i]),
                    gpu_model=c.gpu_models[int(c.gpu_model[i])],
                    price_usd_per_hour=float(c.price_usd_per_hour[i]),
                    price_type=c.price_types[int(c.price_type[i])],
                    as_of=c.as_of[code],
                    source=c.labels[code],
                )
            )
        return offers


@functools.cache
def load_price_catalog() -> BundledPriceCatalog:
    """The process-wide bundled price catalog (loads `offers.npz` on first call, 20–60 ms)."""
    return BundledPriceCatalog()


class BundledPriceProvider:
    """`PriceProvider` over the bundled tables: the last fallback behind live and cached prices."""

    name = BUNDLED

    def __init__(self, catalog: BundledPriceCatalog | None = None) -> None:
        self._catalog = catalog

    @property
    def catalog(self) -> BundledPriceCatalog:
        """The shared catalog (loaded on first use)."""
        if self._catalog is None:
            self._catalog = load_price_catalog()
        return self._catalog

    def offers_sync(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """The region's prebuilt offer table, or None when nothing is bundled for it."""
        return self.catalog.table(provider, region, price_type)

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Async form of `offers_sync` (a dict lookup after the first call: no thread hop)."""
        return self.offers_sync(provider, region, price_type)

    def list_offers(
        self,
        provider: str | None,
        region: str | None,
        instance_type: str | None,
        price_type: PriceType | None,
        *,
        limit: int | None = None,
    ) -> list[InstanceOffer]:
        """Bundled offers matching the filters (see `BundledPriceCatalog.list_offers`)."""
        return self.catalog.list_offers(provider, region, instance_type, price_type, limit=limit)

    def regions_with_prices(self, provider: str) -> frozenset[str]:
        """Region codes of `provider` that have bundled prices."""
        return self.catalog.regions_with_prices(provider)

    def newest_as_of(self, provider: str) -> date | None:
        """The newest `as_of` date among a provider's bundled prices."""
        return self.catalog.newest_as_of(provider)

    def estimate_lookup(
        self, provider: str, region: str, instance_type: str, price_type: PriceType
    ) -> InstanceOffer | None:
        """The bundled price of one instance type in one region, or None."""
        return self.catalog.lookup(provider, region, instance_type, price_type)


def list_offers(
    provider: str | None,
    region: str | None,
    instance_type: str | None,
    price_type: PriceType | None,
    *,
    limit: int | None = None,
) -> list[InstanceOffer]:
    """Bundled offers matching the filters (for GET /v1/prices); see `BundledPriceCatalog.list_offers`."""
    return load_price_catalog().list_offers(provider, region, instance_type, price_type, limit=limit)


def regions_with_prices(provider: str) -> frozenset[str]:
    """Region codes of `provider` that have bundled prices."""
    return load_price_catalog().regions_with_prices(provider)


def estimate_lookup(
    provider: str, region: str, instance_type: str, price_type: PriceType
) -> InstanceOffer | None:
    """The bundled price of one instance type in one region (for POST /v1/estimate), or None."""
    return load_price_catalog().lookup(provider, region, instance_type, price_type)
