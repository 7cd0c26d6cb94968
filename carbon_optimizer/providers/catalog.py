"""Loaders for the reference data bundled in `carbon_optimizer/data/` (regions, zones, 2023 hourly carbon).

Why this shape: the service must answer with no network and no setup, so the region catalog, the
zone list and the 2023 hourly intensities ship inside the wheel (see `data/README.md` for what each
file is and how `scripts/build_data.py` derived it). Everything is read through
`importlib.resources` (works from a wheel, a zip or a source tree), lazily on first use and then
cached for the life of the process with `functools.cache`: importing this module does no I/O, which
matters because gunicorn forks workers after importing the app.

Measured on the development machine (2 shared, busy cores): the region catalog loads in 25–70 ms
(it parses the gzipped annual CSV), the hourly carbon arrays in 15–45 ms (a compact npz, not the
19 CSVs).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable

import numpy as np

from carbon_optimizer.domain.models import CLOUD_PROVIDERS, FloatArray, Region

DATA_PACKAGE = "carbon_optimizer"
HOURLY_YEAR = 2023


def data_file(*parts: str) -> Traversable:
    """A bundled data file, e.g. `data_file("pricing", "offers.npz")`."""
    node = files(DATA_PACKAGE).joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return node


def read_text(*parts: str) -> str:
    """Text of a bundled file; `.gz` files are decompressed transparently."""
    raw = data_file(*parts).read_bytes()
    if parts[-1].endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def read_csv(*parts: str) -> list[dict[str, str]]:
    """Rows of a bundled CSV (optionally gzipped) as dicts."""
    return list(csv.DictReader(io.StringIO(read_text(*parts))))


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    """One Electricity Maps zone we can answer for, with its latest annual average."""

    zone: str
    name: str
    latest_year: int
    latest_intensity_g_per_kwh: float
    has_hourly: bool


@dataclass(frozen=True, eq=False, slots=True)
class HourlyCarbon:
    """The 2023 hourly intensities of the zones with hourly data, one row per zone.

    Column i is the hour starting at `start + i h` (2023-01-01T00:00Z … 2023-12-31T23:00Z).
    Arrays are read-only: they are shared by every request of the process.
    """

    zones: tuple[str, ...]
    start: datetime
    lifecycle: FloatArray  # shape (zones, 8760), gCO2e/kWh, EM "Carbon Intensity (LCA)"
    direct: FloatArray  # same shape, EM "Carbon Intensity (direct)"

    def row(self, zone: str) -> int | None:
        """Row index of a zone (exact key), or None."""
        try:
            return self.zones.index(zone)
        except ValueError:
            return None


@functools.cache
def load_hourly_carbon() -> HourlyCarbon:
    """Load `carbon_2023_hourly.npz` once per process."""
    with data_file("carbon_2023_hourly.npz").open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        zones = tuple(str(z) for z in npz["zones"].tolist())
        start = datetime.fromtimestamp(int(npz["start_epoch_s"][0]), tz=UTC)
        lifecycle = np.ascontiguousarray(npz["lifecycle"], dtype=np.float64)
        direct = np.ascontiguousarray(npz["direct"], dtype=np.float64)
    lifecycle.setflags(write=False)
    direct.setflags(write=False)
    return HourlyCarbon(zones=zones, start=start, lifecycle=lifecycle, direct=direct)


class RegionCatalog:
    """Cloud regions (aws, azure, gcp, lambda) and the Electricity Maps zones we know.

    Region codes are matched case-insensitively (providers write them in lower case). Zone keys are
    stored as Electricity Maps writes them (`DE`, `US-CAL-CISO`) but looked up case-insensitively.
    """

    def __init__(self, regions: list[Region], zones: list[ZoneInfo]) -> None:
        self._regions: dict[tuple[str, str], Region] = {
            (r.provider.lower(), r.region.lower()): r
            for r in sorted(regions, key=lambda r: (r.provider, r.region))
        }
        self._zones: dict[str, ZoneInfo] = {z.zone: z for z in sorted(zones, key=lambda z: z.zone)}
        self._zones_folded: dict[str, ZoneInfo] = {z.zone.casefold(): z for z in self._zones.values()}
        self._providers = tuple(p for p in CLOUD_PROVIDERS if any(k[0] == p for k in self._regions))

    def get(self, provider: str, region: str) -> Region | None:
        """The catalogued region, or None."""
        return self._regions.get((provider.lower(), region.lower()))

    def regions(self, provider: str | None = None) -> list[Region]:
        """All regions (of one provider), sorted by provider then region."""
        if provider is None:
            return list(self._regions.values())
        wanted = provider.lower()
        return [r for (p, _), r in self._regions.items() if p == wanted]

    def zone(self, zone: str) -> ZoneInfo | None:
        """Info for a zone key (case-insensitive), or None when we have no data for it."""
        found = self._zones.get(zone)
        return found if found is not None else self._zones_folded.get(zone.casefold())

    def zones(self) -> list[ZoneInfo]:
        """Every known zone (annual averages ∪ hourly 2023 data), sorted by key."""
        return list(self._zones.values())

    def providers(self) -> tuple[str, ...]:
        """Cloud providers with at least one catalogued region, in the canonical order."""
        return self._providers


def _optional_float(value: str) -> float | None:
    return float(value) if value.strip() else None


def _build_regions() -> list[Region]:
    regions = [
        Region(
            provider=row["provider"],
            region=row["region"],
            display_name=row["display_name"],
            location=row["location"],
            latitude=_optional_float(row["latitude"]),
            longitude=_optional_float(row["longitude"]),
            zone=row["em_zone"],
            confidence=row["confidence"],
        )
        for row in read_csv("cloud_regions.csv")
        if row["provider"] in CLOUD_PROVIDERS  # ovh rows stay in the file but are not a provider here
    ]
    regions.extend(
        Region(
            provider=row["provider"],
            region=row["region"],
            display_name=row["display_name"],
            location=row["location"],
            latitude=None,  # Lambda publishes no coordinates
            longitude=None,
            zone=row["em_zone"],
            confidence=row["confidence"],
        )
        for row in read_csv("lambda_regions.csv")
    )
    return regions


def _build_zones(hourly_zones: tuple[str, ...]) -> list[ZoneInfo]:
    latest: dict[str, tuple[int, float, str]] = {}
    for row in read_csv("annual_intensity.csv.gz"):
        if row["scope"] != "zone" or not row["carbon_intensity_gco2_per_kwh"]:
            continue
        year = int(row["year"])
        zone = row["em_zone"]
        if zone not in latest or year > latest[zone][0]:
            latest[zone] = (year, float(row["carbon_intensity_gco2_per_kwh"]), row["name"])
    hourly = set(hourly_zones)
    missing = hourly - latest.keys()
    if missing:  # cannot happen with the shipped data (build_data checks), but never guess silently
        raise RuntimeError(f"hourly zones without an annual average: {sorted(missing)}")
    return [
        ZoneInfo(zone=z, name=name, latest_year=y, latest_intensity_g_per_kwh=v, has_hourly=z in hourly)
        for z, (y, v, name) in latest.items()
    ]


@functools.cache
def load_region_catalog() -> RegionCatalog:
    """Build the catalog once per process from the bundled CSVs."""
    return RegionCatalog(_build_regions(), _build_zones(load_hourly_carbon().zones))
