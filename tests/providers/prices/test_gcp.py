"""GCP Cloud Billing Catalog client: SKU paging and price composition per machine family.

`fixtures/gcp_skus_us_central1.json` holds one SKU per (family, resource, price type) in the
documented shape. N2 core/RAM are the values from docs/data-sources.md §2.3; the others were
derived from the bundled GCP table (Cyclenerd, 2026-07-30) so that composition can be checked
shape by shape against `fixtures/gcp_bundled_extract.csv` (see fixtures/README.md).
"""

from __future__ import annotations

import csv

import httpx
import pytest
import respx
from pydantic import SecretStr

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import ProviderAuthError
from carbon_optimizer.providers.prices._common import HttpPolicy
from carbon_optimizer.providers.prices.gcp import (
    MACHINE_TYPES,
    GcpCatalogPrices,
    classify_sku,
    parse_skus,
)

from .conftest import FIXTURES, SECRET, Clock, load

URL = "https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus"
FAST = HttpPolicy(timeout_s=1.0, max_retries=0, backoff_base_s=0.0)


def _extract() -> list[dict[str, str]]:
    with (FIXTURES / "gcp_bundled_extract.csv").open() as handle:
        return list(csv.DictReader(handle))


async def test_paging_and_n2_standard_8_is_0_388472(
    router: respx.Router, http: httpx.AsyncClient, clock: Clock
) -> None:
    route = router.get(URL).mock(
        side_effect=lambda request: httpx.Response(
            200,
            json=load(
                "gcp_skus_page2.json" if request.url.params.get("pageToken") else "gcp_skus_page1.json"
            ),
        )
    )
    gcp = GcpCatalogPrices(http, SecretStr(SECRET), policy=FAST, clock=clock)

    table = await gcp.offers("gcp", "us-central1", PriceType.ON_DEMAND)

    assert table is not None
    assert route.call_count == 2
    first, second = (call.request for call in route.calls)
    assert "pageToken" not in first.url.params
    assert second.url.params["pageToken"] == "page-2-token"
    assert first.headers["x-goog-api-key"] == SECRET
    assert "key" not in first.url.params  # the key never travels in a URL (URLs end up in logs)
    n2 = table.offer(table.find("n2-standard-8") or 0)
    assert n2.price_usd_per_hour == 0.388472
    assert (n2.vcpus, n2.memory_gib, n2.source, n2.as_of) == (8, 32.0, "live:gcp", clock.now.date())
    assert table.offer(table.find("n2-highmem-8") or 0).price_usd_per_hour == 0.524056
    # Only families with both core and RAM SKUs here are priced: no E2 or A2 from this catalog.
    assert all(name.startswith("n2-") for name in table.instance_types)

    spot = await gcp.offers("gcp", "us-east1", PriceType.SPOT)
    assert spot is not None
    assert spot.offer(spot.find("n2-standard-8") or 0).price_usd_per_hour == round(
        8 * 0.01499 + 32 * 0.00201, 6
    )
    assert route.call_count == 2  # one catalog download prices every region and price type


@pytest.mark.parametrize("price_type", ["on_demand", "spot"])
def test_composition_reproduces_the_bundled_table_for_every_family(price_type: str) -> None:
    catalog = parse_skus(load("gcp_skus_us_central1.json")["skus"])
    expected = [r for r in _extract() if r["region"] == "us-central1" and r["price_type"] == price_type]
    families = {r["instance_type"].split("-")[0] for r in expected}
    assert families >= {"n2", "n2d", "e2", "c2d", "c3", "g2", "a2", "a3"}
    for row in expected:
        machine = MACHINE_TYPES[row["instance_type"]]
        composed = catalog.compose(machine, "us-central1", price_type == "spot")
        # The bundled prices are rounded to 6 decimals by their source; so are ours.
        assert composed == pytest.approx(float(row["price_usd_per_hour"]), abs=1.5e-6), row["instance_type"]


def test_bundled_local_ssd_and_gpus_are_part_of_the_price() -> None:
    catalog = parse_skus(load("gcp_skus_us_central1.json")["skus"])
    ultra = MACHINE_TYPES["a2-ultragpu-1g"]
    without_ssd = 12 * 0.031611 + 170 * 0.004237 + 3.92808
    assert ultra.local_ssd_gib == 375
    assert (
        catalog.compose(ultra, "us-central1", False) == round(without_ssd + 375 * 0.08 / 730, 6) == 5.068798
    )
    assert catalog.compose(MACHINE_TYPES["c3-standard-4-lssd"], "us-central1", False) == 0.242704


def test_machine_type_sizes_match_the_bundled_table() -> None:
    rows = {r["instance_type"]: r for r in _extract()}
    assert set(MACHINE_TYPES) <= set(rows), "every composed shape exists in the bundled table"
    for name, machine in MACHINE_TYPES.items():
        row = rows[name]
        vcpus = float(row["vcpus"])
        assert machine.billed_vcpus == vcpus, name
        assert machine.vcpus == (int(vcpus) if vcpus >= 1 else None), name  # shared-core: never auto-picked
        assert machine.memory_gib == float(row["memory_gib"]), name
        assert machine.gpu_count == int(row["gpu_count"]), name
        assert (machine.gpu_model or "") == row["gpu_model"], name


def test_sku_classification() -> None:
    skus = {s["description"]: s for s in load("gcp_skus_us_central1.json")["skus"]}
    assert classify_sku(skus["N2D AMD Instance Core running in Americas"]) == ("core", "n2d")
    assert classify_sku(skus["Spot Preemptible N1 Predefined Instance Ram running in Americas"]) == (
        "ram",
        "n1",
    )
    assert classify_sku(skus["Nvidia Tesla A100 80GB GPU running in Americas"]) == ("gpu", "A100-80GB")
    assert classify_sku(skus["SSD backed Local Storage running in Americas"]) == ("ssd", "local")
    for ignored in (
        "Commitment v1: N2 Cpu in Americas for 1 Year",
        "N2 Custom Instance Core running in Americas",
        "Reserved A2 Instance Core running in Americas",
        "Licensing Fee for Windows Server 2019 Datacenter Edition on VM with 1 to 2 VCPU",
    ):
        assert classify_sku(skus[ignored]) is None, ignored


async def test_bundled_availability_drops_shapes_a_region_does_not_offer(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    router.get(URL).mock(return_value=httpx.Response(200, json=load("gcp_skus_us_central1.json")))

    async def listed(region: str) -> set[str]:
        return {"a2-highgpu-1g", "n2-standard-8"}

    gcp = GcpCatalogPrices(http, SecretStr(SECRET), policy=FAST, availability=listed)
    table = await gcp.offers("gcp", "us-central1", PriceType.ON_DEMAND)
    assert table is not None
    names = set(table.instance_types)
    assert {"a2-highgpu-1g", "n2-standard-8"} <= names
    assert "a2-highgpu-8g" not in names
    assert "n2-standard-4" not in names
    assert "a2-ultragpu-1g" in names
    assert "e2-standard-2" in names
    assert await gcp.regions() == ["us-central1"]  # São Paulo has a core SKU but no RAM SKU here


async def test_forbidden_key_is_an_auth_error(router: respx.Router, http: httpx.AsyncClient) -> None:
    router.get(URL).mock(
        return_value=httpx.Response(403, json={"error": {"message": f"API key {SECRET} invalid"}})
    )
    with pytest.raises(ProviderAuthError) as caught:
        await GcpCatalogPrices(http, SecretStr(SECRET), policy=FAST).offers(
            "gcp", "us-central1", PriceType.ON_DEMAND
        )
    assert SECRET not in str(caught.value)
