"""GCP Cloud Billing Catalog client (API key): machine-type prices *composed* from resource SKUs.

Why composition (docs/data-sources.md §2.3): the catalog has no per-machine-type price, only
per-vCPU-hour, per-GiB-hour, per-GPU-hour and local-SSD GiB-month SKUs per machine family and
region. An instance-hour is therefore

    billed vCPUs × core[family] + GiB × ram[family] + GPUs × gpu[model] + bundled SSD GiB × ssd / 730

(n2-standard-8 in us-central1: 8 × 0.031611 + 32 × 0.004237 = 0.388472, exactly the listed
price). Machine-type sizes come from the per-family rules in `MACHINE_TYPES` below, written from
Google's machine-family pages and checked shape by shape against the bundled GCP table
(`tests/providers/prices/test_gcp.py`). The catalog does not say which types a region offers, so
where the bundled catalog lists a series in a region, only the types it lists there are kept.
Types of other families are not composed (the chain fills them from the bundled table).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from pydantic import SecretStr

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import MalformedUpstreamResponse

from ._common import (
    HttpPolicy,
    Memo,
    as_of_today,
    check_region,
    expect_list,
    expect_mapping,
    get_json,
    log,
    utc_now,
)
from ._specs import Spec

UPSTREAM = "gcp"
COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine in the Cloud Billing Catalog
HOURS_PER_MONTH = 730.0  # Google's own month for GiB-month → GiB-hour
LOCAL_SSD_DISK_GIB = 375.0
MAX_PAGES = 100


@dataclass(frozen=True, slots=True)
class MachineType:
    """Size of one predefined machine type and which SKUs price it."""

    name: str
    family: str  # SKU family key: "n2", "a3-megagpu"
    vcpus: int | None  # reported size; None for shared-core types that are never auto-selected
    billed_vcpus: float  # vCPUs on the bill (e2-micro: 0.25)
    memory_gib: float
    gpu_count: int = 0
    gpu_model: str | None = None  # normalised name, also the GPU SKU key
    local_ssd_gib: float = 0.0


def _ratio_series(
    family: str, kind: str, gib_per_vcpu: float, sizes: tuple[int, ...]
) -> Iterator[MachineType]:
    for n in sizes:
        yield MachineType(f"{family}-{kind}-{n}", family, n, n, n * gib_per_vcpu)


def _build_machine_types() -> dict[str, MachineType]:
    """Predefined types of n1, n2, n2d, e2, c2d, c3, g2, a2 and a3 (sizes per Google's docs)."""
    types: list[MachineType] = []
    n1 = (2, 4, 8, 16, 32, 64, 96)
    types += _ratio_series("n1", "standard", 3.75, (1, *n1))
    types += _ratio_series("n1", "highmem", 6.5, n1)
    types += _ratio_series("n1", "highcpu", 0.9, n1)
    n2 = (2, 4, 8, 16, 32, 48, 64, 80, 96)
    types += _ratio_series("n2", "standard", 4, (*n2, 128))
    types += _ratio_series("n2", "highmem", 8, n2)
    types.append(MachineType("n2-highmem-128", "n2", 128, 128, 864))  # not 8 GiB/vCPU at this size
    types += _ratio_series("n2", "highcpu", 1, n2)
    types += _ratio_series("n2d", "standard", 4, (*n2, 128, 224))
    types += _ratio_series("n2d", "highmem", 8, n2)
    types += _ratio_series("n2d", "highcpu", 1, (*n2, 128, 224))
    types += _ratio_series("e2", "standard", 4, (2, 4, 8, 16, 32))
    types += _ratio_series("e2", "highmem", 8, (2, 4, 8, 16))
    types += _ratio_series("e2", "highcpu", 1, (2, 4, 8, 16, 32))
    # Shared-core E2: billed for a fraction of a vCPU (Google's "fractional vCPU" table).
    types.append(MachineType("e2-micro", "e2", None, 0.25, 1))
    types.append(MachineType("e2-small", "e2", None, 0.5, 2))
    types.append(MachineType("e2-medium", "e2", 1, 1, 4))
    c2d = (2, 4, 8, 16, 32, 56, 112)
    types += _ratio_series("c2d", "standard", 4, c2d)
    types += _ratio_series("c2d", "highmem", 8, c2d)
    types += _ratio_series("c2d", "highcpu", 2, c2d)
    c3 = (4, 8, 22, 44, 88, 176)
    types += _ratio_series("c3", "standard", 4, c3)
    types += _ratio_series("c3", "highmem", 8, c3)
    types += _ratio_series("c3", "highcpu", 2, c3)
    for n, disks in zip(c3, (1, 2, 4, 8, 16, 32), strict=True):  # -lssd: bundled local SSD disks
        types.append(
            MachineType(f"c3-standard-{n}-lssd", "c3", n, n, 4 * n, local_ssd_gib=disks * LOCAL_SSD_DISK_GIB)
        )
    types.append(MachineType("c3-standard-192-metal", "c3", 192, 192, 768))
    types.append(MachineType("c3-highmem-192-metal", "c3", 192, 192, 1536))
    types.append(MachineType("c3-highcpu-192-metal", "c3", 192, 192, 512))
    g2_gpus = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}
    for n, gpus in g2_gpus.items():
        types.append(MachineType(f"g2-standard-{n}", "g2", n, n, 4 * n, gpus, "L4"))
    for g in (1, 2, 4, 8):
        types.append(MachineType(f"a2-highgpu-{g}g", "a2", 12 * g, 12 * g, 85 * g, g, "A100-40GB"))
        types.append(
            MachineType(
                f"a2-ultragpu-{g}g", "a2", 12 * g, 12 * g, 170 * g, g, "A100-80GB", g * LOCAL_SSD_DISK_GIB
            )
        )
        types.append(
            MachineType(
                f"a3-highgpu-{g}g", "a3", 26 * g, 26 * g, 234 * g, g, "H100-80GB", 2 * g * LOCAL_SSD_DISK_GIB
            )
        )
    types.append(MachineType("a2-megagpu-16g", "a2", 96, 96, 1360, 16, "A100-40GB"))
    types.append(
        MachineType(
            "a3-megagpu-8g", "a3-megagpu", 208, 208, 1872, 8, "H100-80GB-Mega", 16 * LOCAL_SSD_DISK_GIB
        )
    )
    return {t.name: t for t in types}


MACHINE_TYPES: Mapping[str, MachineType] = _build_machine_types()

# SKU description → family key. "N2D AMD Instance Core running in Americas" → "n2d".
_FAMILY_SKU = re.compile(
    r"^(?:Spot Preemptible )?(?P<family>[A-Za-z0-9]+)(?: AMD)?(?: Predefined)? Instance "
    r"(?P<res>Core|Ram) running in",
    re.IGNORECASE,
)
_FAMILY_ALIASES = {"a3plus": "a3-megagpu"}
_KNOWN_FAMILIES = {t.family for t in MACHINE_TYPES.values()}
_GPU_SKU = re.compile(r"^(?P<name>Nvidia .+?) GPU (?:running|attached)", re.IGNORECASE)
GPU_SKU_MODELS = {
    "nvidia tesla t4": "T4",
    "nvidia tesla v100": "V100-16GB",
    "nvidia l4": "L4",
    "nvidia tesla a100": "A100-40GB",
    "nvidia tesla a100 80gb": "A100-80GB",
    "nvidia a100 80gb": "A100-80GB",
    "nvidia h100 80gb": "H100-80GB",
    "nvidia h100 80gb mega": "H100-80GB-Mega",
    "nvidia h100 80gb plus": "H100-80GB-Mega",
    "nvidia h200 141gb": "H200-141GB",
}
# Prices that are not the plain hourly list price of a predefined VM.
_EXCLUDED_WORDS = (
    "Commitment",
    "Committed",
    "Reserved",
    "Sole Tenancy",
    "Premium",
    "Custom",
    "suspended",
    "DWS",
    "Defined Duration",
    "Flex",
    "Calendar",
    "Extended",
)
_EXPECTED_UNIT = {"core": "h", "ram": "GiBy.h", "gpu": "h"}


@dataclass(slots=True)
class CatalogPrices:
    """Unit prices by (resource, key) → (region, spot) → USD per unit-hour."""

    prices: dict[tuple[str, str], dict[tuple[str, bool], float]] = field(default_factory=dict)
    skipped: int = 0

    def add(self, resource: str, key: str, regions: list[str], spot: bool, price: float) -> None:
        """Record one SKU's unit price in each of its regions."""
        by_region = self.prices.setdefault((resource, key), {})
        for region in regions:
            by_region[(region, spot)] = price

    def get(self, resource: str, key: str, region: str, spot: bool) -> float | None:
        """Unit price or None."""
        return self.prices.get((resource, key), {}).get((region, spot))

    def regions(self) -> set[str]:
        """Every region where at least one known machine type can be composed."""
        candidates = {
            region for (resource, _), by in self.prices.items() if resource == "core" for region, _ in by
        }
        return {
            region
            for region in candidates
            if any(
                self.compose(machine, region, spot) is not None
                for machine in MACHINE_TYPES.values()
                for spot in (False, True)
            )
        }

    def compose(self, machine: MachineType, region: str, spot: bool) -> float | None:
        """Hourly price of a machine type, or None when one of its SKUs is missing here."""
        core = self.get("core", machine.family, region, spot)
        ram = self.get("ram", machine.family, region, spot)
        if core is None or ram is None:
            return None
        total = machine.billed_vcpus * core + machine.memory_gib * ram
        if machine.gpu_count:
            gpu = self.get("gpu", machine.gpu_model or "", region, spot)
            if gpu is None:
                return None
            total += machine.gpu_count * gpu
        if machine.local_ssd_gib:
            ssd = self.get("ssd", "local", region, spot)
            if ssd is None:
                return None
            total += machine.local_ssd_gib * ssd
        return round(total, 6)


def _unit_price(sku: Mapping[str, object]) -> tuple[str, float] | None:
    """(usage unit, first-tier unit price) of a SKU's current pricing, or None."""
    infos = sku.get("pricingInfo")
    if not isinstance(infos, list) or not infos or not isinstance(infos[0], Mapping):
        return None
    expression = infos[0].get("pricingExpression")
    if not isinstance(expression, Mapping):
        return None
    rates = expression.get("tieredRates")
    if not isinstance(rates, list) or not rates:
        return None
    first = min(
        (r for r in rates if isinstance(r, Mapping)),
        key=lambda r: float(r.get("startUsageAmount", 0) or 0),
        default=None,
    )
    if first is None or not isinstance(first.get("unitPrice"), Mapping):
        return None
    money: Mapping[str, object] = first["unitPrice"]
    if money.get("currencyCode", "USD") != "USD":
        return None
    try:
        units = int(str(money.get("units", "0") or "0"))
        nanos = int(money.get("nanos", 0) or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return str(expression.get("usageUnit", "")), units + nanos / 1e9


def classify_sku(sku: Mapping[str, object]) -> tuple[str, str] | None:
    """(resource, key) of a SKU we compose with: core/ram by family, gpu by model, ssd."""
    description = sku.get("description")
    category = sku.get("category")
    if not isinstance(description, str) or not isinstance(category, Mapping):
        return None
    if category.get("usageType") not in ("OnDemand", "Preemptible"):
        return None
    if any(word.lower() in description.lower() for word in _EXCLUDED_WORDS):
        return None
    family_match = _FAMILY_SKU.match(description)
    if family_match:
        family = family_match["family"].lower()
        family = _FAMILY_ALIASES.get(family, family)
        if family not in _KNOWN_FAMILIES:
            return None
        return family_match["res"].lower(), family
    gpu_match = _GPU_SKU.match(description)
    if gpu_match:
        model = GPU_SKU_MODELS.get(gpu_match["name"].lower())
        return ("gpu", model) if model else None
    if category.get("resourceFamily") == "Storage" and description.startswith("SSD backed Local Storage"):
        return "ssd", "local"
    return None


def parse_skus(skus: list[Mapping[str, object]]) -> CatalogPrices:
    """Unit prices of every SKU needed for composition (others are ignored)."""
    catalog = CatalogPrices()
    for sku in skus:
        kind = classify_sku(sku)
        if kind is None:
            continue
        priced = _unit_price(sku)
        regions = sku.get("serviceRegions")
        if priced is None or not isinstance(regions, list):
            catalog.skipped += 1
            continue
        unit, price = priced
        resource, key = kind
        if resource == "ssd":
            if unit == "GiBy.mo":
                price /= HOURS_PER_MONTH
            elif unit != "GiBy.h":
                catalog.skipped += 1
                continue
        elif unit != _EXPECTED_UNIT[resource]:
            catalog.skipped += 1
            continue
        category = sku["category"]
        spot = isinstance(category, Mapping) and category.get("usageType") == "Preemptible"
        catalog.add(resource, key, [str(r) for r in regions], spot, price)
    return catalog


Availability = Callable[[str], Awaitable[set[str]]]


def _series(name: str) -> str:
    """'c3-standard-4-lssd' → 'c3-standard-lssd', 'a2-highgpu-8g' → 'a2-highgpu'."""
    return re.sub(r"-\d+g?(?=-|$)", "", name)


class GcpCatalogPrices:
    """`PriceProvider` composing GCP machine-type prices from the Cloud Billing Catalog."""

    name = UPSTREAM

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        base_url: str = "https://cloudbilling.googleapis.com/v1",
        policy: HttpPolicy | None = None,
        availability: Availability | None = None,
        clock: Callable[[], datetime] = utc_now,
        catalog_ttl_s: float = 900.0,
        page_size: int = 5000,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._url = f"{base_url.rstrip('/')}/services/{COMPUTE_SERVICE}/skus"
        self._policy = policy or HttpPolicy()
        self._availability = availability
        self._clock = clock
        self._page_size = page_size
        # The whole catalog prices every region: one download serves all of them for a while.
        self._memo: Memo[str, tuple[datetime, CatalogPrices]] = Memo(catalog_ttl_s)

    def supports(self, price_type: PriceType) -> bool:
        """GCP publishes on-demand and spot (Preemptible) SKUs."""
        return price_type in (PriceType.ON_DEMAND, PriceType.SPOT)

    async def _fetch_catalog(self) -> tuple[datetime, CatalogPrices]:
        headers = {"x-goog-api-key": self._api_key.get_secret_value()}  # a header: never in a URL or log
        skus: list[Mapping[str, object]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"currencyCode": "USD", "pageSize": self._page_size}
            if token:
                params["pageToken"] = token
            page = expect_mapping(
                await get_json(
                    self._http,
                    self._url,
                    upstream=UPSTREAM,
                    endpoint="skus",
                    policy=self._policy,
                    params=params,
                    headers=headers,
                ),
                UPSTREAM,
                "page",
            )
            for raw in expect_list(page.get("skus", []), UPSTREAM, "skus"):
                skus.append(expect_mapping(raw, UPSTREAM, "sku"))
            nxt = page.get("nextPageToken")
            if not nxt:
                break
            token = str(nxt)
        else:
            raise MalformedUpstreamResponse(f"gcp: more than {MAX_PAGES} pages", source=UPSTREAM)
        catalog = parse_skus(skus)
        log.info("gcp catalog: %d SKUs, %d unit prices kept", len(skus), len(catalog.prices))
        return self._clock(), catalog

    async def _catalog(self) -> tuple[datetime, CatalogPrices]:
        return await self._memo.get("catalog", self._fetch_catalog)

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Composed prices of every known machine type priced in `region`."""
        if provider != UPSTREAM or not self.supports(price_type):
            return None
        check_region(UPSTREAM, region)
        fetched_at, catalog = await self._catalog()
        listed = await self._availability(region) if self._availability else set()
        listed_series = {_series(name) for name in listed}
        spot = price_type is PriceType.SPOT
        as_of = as_of_today(fetched_at)
        offers = []
        for machine in MACHINE_TYPES.values():
            if _series(machine.name) in listed_series and machine.name not in listed:
                continue  # the bundled catalog knows this series here, and not this shape
            price = catalog.compose(machine, region, spot)
            if price is None or price <= 0:
                continue
            offers.append(
                Spec(machine.vcpus, machine.memory_gib, machine.gpu_count, machine.gpu_model).live_offer(
                    UPSTREAM, region, machine.name, price, price_type, as_of
                )
            )
        if not offers:
            return None
        return OfferTable.from_offers(UPSTREAM, region, price_type, offers, fetched_at=fetched_at)

    async def regions(self) -> list[str]:
        """Every region the catalog prices a known family in (one catalog download)."""
        _, catalog = await self._catalog()
        return sorted(catalog.regions())

    async def aclose(self) -> None:
        """Nothing to close: the shared httpx client belongs to the caller."""
        self._memo.clear()
