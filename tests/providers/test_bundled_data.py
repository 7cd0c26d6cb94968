"""Bundled data: the npz equals the shipped CSVs, the build is reproducible, the catalog is right."""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from carbon_optimizer.providers.catalog import (
    RegionCatalog,
    data_file,
    load_hourly_carbon,
    load_region_catalog,
    read_csv,
)

REPO = Path(__file__).resolve().parents[2]
# The reference data set the bundled files were built from (not part of the repository): point
# REFERENCE_DATA_DIR at it to check the bundled files against their source.
SHARED = Path(os.environ.get("REFERENCE_DATA_DIR", "/nonexistent"))
DATA = REPO / "carbon_optimizer" / "data"
HOURLY_ZONES = (
    *("AU-NSW", "AU-VIC", "BR-CS", "CA-ON", "CL-SEN", "DE", "ES", "FR", "GB", "IN-WE"),
    *("JP-TK", "KR", "NO", "SG", "US-CAL-CISO", "US-MIDA-PJM", "US-NY-NYIS", "US-TEX-ERCO", "ZA"),
)
LAMBDA_CONFIDENCE = "uncertain: zone inferred from the region description Lambda's API returns"


def _hourly_csv(zone: str) -> list[dict[str, str]]:
    raw = gzip.decompress(data_file("timeseries", f"{zone}_2023_hourly.csv.gz").read_bytes())
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))


@pytest.fixture(scope="module")
def catalog() -> RegionCatalog:
    return load_region_catalog()


class TestHourlyCarbon:
    def test_zones(self) -> None:
        assert sorted(load_hourly_carbon().zones) == sorted(HOURLY_ZONES)

    @pytest.mark.parametrize("zone", HOURLY_ZONES)
    def test_npz_equals_gzipped_csv(self, zone: str) -> None:
        hourly = load_hourly_carbon()
        rows = _hourly_csv(zone)
        row = hourly.row(zone)
        assert row is not None
        assert len(rows) == 8760
        assert {r["zone"] for r in rows} == {zone}
        expected_times = [
            (datetime(2023, 1, 1, tzinfo=UTC) + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            for i in range(8760)
        ]
        assert [r["datetime_utc"] for r in rows] == expected_times
        lifecycle = np.array([float(r["carbon_intensity_gco2_per_kwh"]) for r in rows])
        direct = np.array([float(r["carbon_intensity_direct_gco2_per_kwh"]) for r in rows])
        np.testing.assert_array_equal(hourly.lifecycle[row], lifecycle)
        np.testing.assert_array_equal(hourly.direct[row], direct)

    def test_start_and_shape(self) -> None:
        hourly = load_hourly_carbon()
        assert hourly.start == datetime(2023, 1, 1, tzinfo=UTC)
        assert hourly.lifecycle.shape == hourly.direct.shape == (19, 8760)

    def test_arrays_are_read_only(self) -> None:
        with pytest.raises(ValueError, match="read-only"):
            load_hourly_carbon().lifecycle[0, 0] = 0.0

    def test_csv_keeps_every_source_column(self) -> None:
        header = _hourly_csv("DE")[0].keys()
        assert list(header) == [
            "zone",
            "datetime_utc",
            "carbon_intensity_gco2_per_kwh",
            "carbon_intensity_direct_gco2_per_kwh",
            "low_carbon_pct",
            "renewable_pct",
            "is_estimated",
            "estimation_method",
            "data_source",
        ]

    @pytest.mark.skipif(not SHARED.is_dir(), reason="REFERENCE_DATA_DIR not set")
    @pytest.mark.parametrize("zone", ["DE", "US-CAL-CISO"])
    def test_gz_is_the_source_file_unchanged(self, zone: str) -> None:
        source = (SHARED / "timeseries" / f"{zone}_2023_hourly.csv").read_bytes()
        assert gzip.decompress(data_file("timeseries", f"{zone}_2023_hourly.csv.gz").read_bytes()) == source


class TestRegionCatalog:
    def test_aws_us_east_1(self, catalog: RegionCatalog) -> None:
        region = catalog.get("aws", "us-east-1")
        assert region is not None
        assert region.zone == "US-MIDA-PJM"
        assert region.display_name == "US East (N. Virginia)"
        assert region.latitude == pytest.approx(39.0067)

    def test_gcp_europe_west1(self, catalog: RegionCatalog) -> None:
        region = catalog.get("gcp", "europe-west1")
        assert region is not None
        assert region.zone == "BE"

    def test_azure_and_case_insensitive_region(self, catalog: RegionCatalog) -> None:
        region = catalog.get("Azure", "EastUS")
        assert region is not None
        assert region.region == "eastus"

    def test_unknown_region(self, catalog: RegionCatalog) -> None:
        assert catalog.get("aws", "mars-north-1") is None
        assert catalog.get("ibm", "us-south") is None

    def test_ovh_not_exposed(self, catalog: RegionCatalog) -> None:
        assert catalog.providers() == ("aws", "azure", "gcp", "lambda")
        assert catalog.regions("ovh") == []
        assert any(row["provider"] == "ovh" for row in read_csv("cloud_regions.csv"))  # kept in the file

    def test_counts_and_order(self, catalog: RegionCatalog) -> None:
        counts = {p: len(catalog.regions(p)) for p in catalog.providers()}
        assert counts == {"aws": 36, "azure": 58, "gcp": 45, "lambda": 11}
        regions = catalog.regions()
        assert [(r.provider, r.region) for r in regions] == sorted((r.provider, r.region) for r in regions)

    def test_every_region_zone_is_known(self, catalog: RegionCatalog) -> None:
        for region in catalog.regions():
            assert catalog.zone(region.zone) is not None, region

    def test_lambda_regions(self, catalog: RegionCatalog) -> None:
        expected = {
            "us-west-1": "US-CAL-CISO",
            "us-west-2": "US-SW-AZPS",
            "us-west-3": "US-NW-PACE",
            "us-south-1": "US-TEX-ERCO",
            "us-east-1": "US-MIDA-PJM",
            "us-midwest-1": "US-MIDA-PJM",
            "europe-central-1": "DE",
            "asia-south-1": "IN",
            "asia-northeast-1": "JP",
            "asia-northeast-2": "JP",
            "me-west-1": "IL",
        }
        regions = catalog.regions("lambda")
        assert {r.region: r.zone for r in regions} == expected
        assert {r.confidence for r in regions} == {LAMBDA_CONFIDENCE}
        assert all(r.latitude is None and r.longitude is None for r in regions)

    def test_zone_info(self, catalog: RegionCatalog) -> None:
        de = catalog.zone("DE")
        assert de is not None
        assert (de.name, de.latest_year, de.latest_intensity_g_per_kwh, de.has_hourly) == (
            "Germany",
            2025,
            342.0,
            True,
        )
        se = catalog.zone("SE-SE3")
        assert se is not None
        assert se.has_hourly is False
        assert se.latest_intensity_g_per_kwh == 20.0

    def test_zone_lookup_is_case_insensitive(self, catalog: RegionCatalog) -> None:
        assert catalog.zone("de") == catalog.zone("DE")
        lower = catalog.zone("us-cal-ciso")
        assert lower is not None
        assert lower.zone == "US-CAL-CISO"

    def test_unknown_zone(self, catalog: RegionCatalog) -> None:
        assert catalog.zone("XX") is None

    def test_known_zones_are_annual_union_hourly(self, catalog: RegionCatalog) -> None:
        annual = {r["em_zone"] for r in read_csv("annual_intensity.csv.gz") if r["scope"] == "zone"}
        zones = catalog.zones()
        assert {z.zone for z in zones} == annual | set(HOURLY_ZONES)
        assert len(zones) == 352
        assert [z.zone for z in zones] == sorted(z.zone for z in zones)
        assert {z.zone for z in zones if z.has_hourly} == set(HOURLY_ZONES)


class TestPackaging:
    def test_notice_has_attribution_and_sources(self) -> None:
        notice = data_file("NOTICE").read_text(encoding="utf-8")
        assert (
            "Carbon intensity data: Electricity Maps (electricitymaps.com), 2023 hourly datasets, ODbL"
            in notice
        )
        for source in ("HewlettPackard/green-dcc @3f6ea95cb8", "co2.js", "Ember", "karpenter-provider-azure"):
            assert source in notice

    def test_readme_documents_replay_and_lambda(self) -> None:
        readme = data_file("README.md").read_text(encoding="utf-8")
        assert "ISO week 53" in readme
        assert LAMBDA_CONFIDENCE in readme
        assert "strict subset" in readme

    def test_import_does_no_io(self) -> None:
        code = (
            "import carbon_optimizer.providers.catalog as b, carbon_optimizer.providers.prices.bundled as p, "
            "carbon_optimizer.providers.carbon.offline as o\n"
            "o.OfflineCarbonProvider(); p.BundledPriceProvider()\n"
            "assert b.load_hourly_carbon.cache_info().currsize == 0\n"
            "assert b.load_region_catalog.cache_info().currsize == 0\n"
            "assert p.load_price_catalog.cache_info().currsize == 0\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)

    @pytest.mark.skipif(not SHARED.is_dir(), reason="REFERENCE_DATA_DIR not set")
    def test_build_reproduces_committed_files(self, tmp_path: Path) -> None:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "build_data.py"),
                "--source",
                str(SHARED),
                "--out",
                str(tmp_path),
            ],
            check=True,
            capture_output=True,
        )
        built = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
        assert built
        for relative in built:
            assert (tmp_path / relative).read_bytes() == (DATA / relative).read_bytes(), relative

    def test_data_is_small(self) -> None:
        total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
        assert total < 15_000_000
