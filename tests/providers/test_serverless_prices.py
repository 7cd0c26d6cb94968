"""The bundled serverless price tables: every price dated and sourced, every region answerable."""

from __future__ import annotations

import pytest

from carbon_optimizer.domain.serverless import OPTION_PROVIDER, SERVERLESS_OPTIONS, Option
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.serverless_prices import bundled_egress, bundled_prices, load_tables


def test_every_source_key_used_by_the_tables_is_defined() -> None:
    doc = load_tables()
    used: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("source") and isinstance(value, str):
                    used.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in doc.items() if k != "sources"})
    assert used <= set(doc["sources"])
    assert all(s["url"] and s["seen"] for s in doc["sources"].values())


@pytest.mark.parametrize("option", SERVERLESS_OPTIONS)
def test_every_catalogued_region_gets_a_priced_table_with_provenance(option: Option) -> None:
    regions = load_region_catalog().regions(OPTION_PROVIDER[option])
    assert regions
    for region in regions:
        prices = bundled_prices(option, region.region)
        assert prices.source.startswith("bundled:20")
        assert prices.request_price > 0
        assert all(t.first > 0 for t in prices.compute.values())
        assert prices.items
        assert all(i.source and i.reference for i in prices.items)


def test_unlisted_regions_say_which_price_was_assumed() -> None:
    lambda_notes = bundled_prices(Option.LAMBDA_X86, "ca-central-1").notes
    assert any("us-east-1 price is applied" in n for n in lambda_notes)
    listed = bundled_prices(Option.LAMBDA_X86, "eu-west-1").notes
    assert not any("price is applied" in n for n in listed)  # a listed region: its own price
    assert any("egress" in n for n in listed)  # but egress has no regional figure: said so


def test_egress_readings_for_gcp_both_available() -> None:
    new = bundled_egress("gcp", "us-central1")
    legacy = bundled_egress("gcp", "us-central1", gcp_egress="legacy_premium")
    assert new.tiers.first == 0.105
    assert legacy.tiers.first == 0.12
    assert new.free_units == 1.0  # 1 GiB from North America
    assert bundled_egress("gcp", "europe-west1").free_units == 0.0
    assert bundled_egress("aws", "us-east-1").free_units == 100.0
    assert bundled_egress("lambda", "us-east-1").tiers.first == 0.0
