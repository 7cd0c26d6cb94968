"""BundledPriceProvider and the module helpers, against the real bundled price tables."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.catalog import data_file, load_region_catalog, read_csv
from carbon_optimizer.providers.prices.bundled import (
    BundledPriceProvider,
    estimate_lookup,
    list_offers,
    regions_with_prices,
)

TABLES = (
    ("pricing", "aws_ec2_ondemand_linux.csv.gz"),
    ("pricing", "azure_vm_ondemand_linux.csv.gz"),
    ("pricing", "gcp_compute_linux.csv.gz"),
    ("pricing", "lambda_cloud_ondemand.csv"),
)
OD = PriceType.ON_DEMAND


@pytest.fixture(scope="module")
def csv_rows() -> list[dict[str, str]]:
    return [row for parts in TABLES for row in read_csv(*parts)]


@pytest.fixture(scope="module")
def provider() -> BundledPriceProvider:
    return BundledPriceProvider()


def test_t3_large_eight_hours() -> None:
    offer = estimate_lookup("aws", "us-east-1", "t3.large", OD)
    assert offer is not None
    assert offer.price_usd_per_hour == 0.0832
    assert offer.price_usd_per_hour * 8 == pytest.approx(0.6656)
    assert (offer.vcpus, offer.memory_gib) == (2, 8.0)
    assert offer.as_of == date(2026, 7, 20)
    assert offer.source == "bundled:2026-07-20"


def test_every_bundled_price_is_positive(csv_rows: list[dict[str, str]]) -> None:
    assert len(csv_rows) == 93_183
    assert all(float(r["price_usd_per_hour"]) > 0 for r in csv_rows)
    offers = list_offers(None, None, None, None)
    assert len(offers) == 93_183
    assert min(o.price_usd_per_hour for o in offers) > 0


def test_npz_equals_csv_tables(csv_rows: list[dict[str, str]]) -> None:
    """Every row of offers.npz (through list_offers) equals the same row of the shipped CSVs.

    `InstanceOffer.vcpus` is an int, so GCP's shared-core fractions (e2-micro 0.25 …) truncate there;
    the `OfferTable` columns keep them (see test_fractional_vcpus_kept_in_tables).
    """

    def number(value: str) -> float | None:
        return float(value) if value else None

    expected = {
        (r["provider"], r["region"], r["instance_type"], r["price_type"]): (
            float(int(float(r["vcpus"]))) if r["vcpus"] else None,
            number(r["memory_gib"]),
            math.floor(float(r["gpu_count"] or 0)),
            r["gpu_model"] or None,
            float(r["price_usd_per_hour"]),
            date.fromisoformat(r["as_of"]) if r["as_of"] else None,
        )
        for r in csv_rows
    }
    got = {
        (o.provider, o.region, o.instance_type, o.price_type.value): (
            None if o.vcpus is None else float(o.vcpus),
            o.memory_gib,
            o.gpu_count,
            o.gpu_model,
            o.price_usd_per_hour,
            o.as_of,
        )
        for o in list_offers(None, None, None, None)
    }
    assert got == expected


def test_exact_gpu_fractions_kept_in_npz() -> None:
    # The CSV's fractional GPU counts survive in the npz; the integer table view floors them.
    with data_file("pricing", "offers.npz").open("rb") as fh, np.load(fh) as npz:
        assert sorted(set(npz["gpu_count"][npz["gpu_count"] % 1 != 0].tolist())) == [0.125, 0.25, 0.5]
    offer = estimate_lookup("gcp", "us-central1", "g4-standard-12", OD)
    assert offer is not None
    assert (offer.gpu_count, offer.gpu_model) == (0, "RTX-PRO-6000")


def test_fractional_vcpus_kept_in_tables() -> None:
    table = BundledPriceProvider().offers_sync("gcp", "us-central1", OD)
    assert table is not None
    index = table.find("e2-micro")
    assert index is not None
    assert table.vcpus[index] == 0.25


class TestProvider:
    def test_protocol(self, provider: BundledPriceProvider) -> None:
        assert isinstance(provider, PriceProvider)
        assert provider.name == "bundled"

    def test_table_is_built_once(self, provider: BundledPriceProvider) -> None:
        first = provider.offers_sync("azure", "eastus", OD)
        assert first is not None
        assert provider.offers_sync("azure", "eastus", OD) is first
        assert BundledPriceProvider().offers_sync("azure", "EastUS", OD) is first  # process-wide, case-folded
        assert len(first) > 1000
        with pytest.raises(ValueError, match="read-only"):
            first.price_usd_per_hour[0] = 0.0

    def test_table_columns(self, provider: BundledPriceProvider) -> None:
        table = provider.offers_sync("aws", "us-east-1", OD)
        assert table is not None
        assert (table.provider, table.region, table.price_type) == ("aws", "us-east-1", OD)
        assert table.vcpus.dtype == np.float64
        assert table.gpu_count.dtype == np.int64
        index = table.find("p4de.24xlarge")
        assert index is not None
        offer = table.offer(index)
        assert (offer.gpu_count, offer.gpu_model, offer.vcpus) == (8, "A100-80GB", 96)
        assert list(table.instance_types) == sorted(table.instance_types)

    async def test_async_offers(self, provider: BundledPriceProvider) -> None:
        table = await provider.offers("gcp", "europe-west1", PriceType.SPOT)
        assert table is not None
        assert table.price_type is PriceType.SPOT
        assert all(s == "bundled:2026-07-30" for s in table.sources)

    def test_missing(self, provider: BundledPriceProvider) -> None:
        assert provider.offers_sync("aws", "mars-north-1", OD) is None
        assert provider.offers_sync("aws", "us-east-1", PriceType.SPOT) is None
        assert provider.offers_sync("ovh", "gra", OD) is None
        assert provider.offers_sync("lambda", "antarctica-1", OD) is None

    def test_undated_rows(self, provider: BundledPriceProvider) -> None:
        table = provider.offers_sync("aws", "eu-west-3", OD)
        assert table is not None
        index = table.find("m6i.2xlarge")
        assert index is not None
        assert table.as_of[index] is None
        assert table.sources[index] == "bundled:undated"

    def test_lambda_star_means_every_region(self, provider: BundledPriceProvider) -> None:
        lambda_regions = {r.region for r in load_region_catalog().regions("lambda")}
        assert len(lambda_regions) == 11
        for region in lambda_regions:
            table = provider.offers_sync("lambda", region, OD)
            assert table is not None
            assert table.region == region
            assert len(table) == 16
        offer = estimate_lookup("lambda", "us-west-1", "8x NVIDIA H100 SXM", OD)
        assert offer is not None
        assert (offer.region, offer.price_usd_per_hour, offer.gpu_count) == ("us-west-1", 31.92, 8)


class TestListing:
    def test_filters(self) -> None:
        offers = list_offers("aws", "us-east-1", "m6i.2xlarge", OD)
        assert [(o.instance_type, o.price_usd_per_hour) for o in offers] == [("m6i.2xlarge", 0.384)]

    def test_region_without_provider_includes_lambda(self) -> None:
        offers = list_offers(None, "us-east-1", None, None)
        providers = {o.provider for o in offers}
        assert providers == {"aws", "lambda"}
        assert {o.region for o in offers} == {"us-east-1"}

    def test_lambda_without_region_keeps_star(self) -> None:
        offers = list_offers("lambda", None, None, None)
        assert len(offers) == 16
        assert {o.region for o in offers} == {"*"}

    def test_gcp_price_types(self) -> None:
        both = list_offers("gcp", "us-central1", "n2-standard-8", None)
        assert [o.price_type for o in both] == [OD, PriceType.SPOT]
        od = list_offers("gcp", "us-central1", "n2-standard-8", OD)
        assert len(od) == 1

    def test_unknown_filters(self) -> None:
        assert list_offers("ovh", None, None, None) == []
        assert list_offers("aws", "nowhere-1", None, None) == []
        assert list_offers(None, None, "no.such", None) == []

    def test_limit(self) -> None:
        assert len(list_offers("azure", None, None, None, limit=7)) == 7

    def test_regions_with_prices(self) -> None:
        lambda_regions = frozenset(r.region for r in load_region_catalog().regions("lambda"))
        assert regions_with_prices("lambda") == lambda_regions
        aws = regions_with_prices("aws")
        assert {"us-east-1", "eu-west-3", "us-east-1-bos-1"} <= aws
        assert "westeurope" in regions_with_prices("azure")
        assert regions_with_prices("ovh") == frozenset()

    def test_provider_methods_delegate(self, provider: BundledPriceProvider) -> None:
        assert provider.list_offers("aws", "us-east-1", "t3.large", OD) == list_offers(
            "aws", "us-east-1", "t3.large", OD
        )
        assert provider.regions_with_prices("gcp") == regions_with_prices("gcp")
        assert provider.estimate_lookup("aws", "us-east-1", "t3.large", OD) == estimate_lookup(
            "aws", "us-east-1", "t3.large", OD
        )

    def test_estimate_lookup_missing(self) -> None:
        assert estimate_lookup("aws", "us-east-1", "no.such", OD) is None
        assert estimate_lookup("aws", "mars-north-1", "t3.large", OD) is None


@pytest.mark.parametrize("provider", ["aws", "azure", "gcp", "lambda"])
def test_newest_as_of_matches_the_rows(provider: str) -> None:
    catalog = BundledPriceProvider()
    dated = [o.as_of for o in catalog.list_offers(provider, None, None, None) if o.as_of is not None]
    assert catalog.newest_as_of(provider) == max(dated)


def test_newest_as_of_of_an_unknown_provider_is_none() -> None:
    assert BundledPriceProvider().newest_as_of("ibm") is None
