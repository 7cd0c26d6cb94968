"""AWS Price List (GetProducts) and spot history through boto3, stubbed with botocore's Stubber."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import ProviderAuthError, ProviderRateLimited
from carbon_optimizer.providers.prices._specs import SpecIndex
from carbon_optimizer.providers.prices.aws import (
    AwsPriceList,
    on_demand_filters,
    parse_price_item,
    pricing_endpoint_region,
)

from .conftest import Clock, FakeBundled, load, offer


def _client(service: str, region: str) -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        service,
        region_name=region,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-real-secret",
    )


class Stubs:
    """One stubbed client per (service, region), handed out by the provider's client factory."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, str], Any] = {}
        self.stubbers: dict[tuple[str, str], Stubber] = {}
        self.created: list[tuple[str, str]] = []

    def stub(self, service: str, region: str) -> Stubber:
        if (service, region) not in self.stubbers:
            client = _client(service, region)
            self.clients[(service, region)] = client
            self.stubbers[(service, region)] = Stubber(client)
            self.stubbers[(service, region)].activate()
        return self.stubbers[(service, region)]

    def factory(self, service: str, region: str) -> Any:
        self.created.append((service, region))
        self.stub(service, region)
        return self.clients[(service, region)]


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    s = Stubs()
    yield s
    for stubber in s.stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def _products_params(token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ServiceCode": "AmazonEC2",
        "Filters": on_demand_filters("us-east-1"),
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }
    if token:
        params["NextToken"] = token
    return params


async def test_get_products_pages_of_json_strings(stubs: Stubs, clock: Clock) -> None:
    pages = load("aws_products.json")
    pricing = stubs.stub("pricing", "us-east-1")
    pricing.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in pages["page1"]], "NextToken": "t2"},
        _products_params(),
    )
    pricing.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in pages["page2"]]},
        _products_params("t2"),
    )
    bundled = FakeBundled(
        [offer("aws", "us-east-1", "g5.xlarge", 1.0, vcpus=4, memory=16.0, gpus=1, model="A10G")]
    )
    aws = AwsPriceList(client_factory=stubs.factory, specs=SpecIndex(bundled), clock=clock)

    table = await aws.offers("aws", "us-east-1", PriceType.ON_DEMAND)

    assert table is not None
    assert table.instance_types == ("g5.xlarge", "m6i.2xlarge", "t3.large")  # zero price dropped
    t3 = table.offer(table.find("t3.large") or 0)
    assert (t3.price_usd_per_hour, t3.vcpus, t3.memory_gib, t3.source) == (0.0832, 2, 8.0, "live:aws")
    assert round(t3.price_usd_per_hour * 8, 6) == 0.6656
    g5 = table.offer(table.find("g5.xlarge") or 0)
    assert (g5.gpu_count, g5.gpu_model) == (1, "A10G")  # the model is joined from the bundled catalog
    assert stubs.created == [("pricing", "us-east-1")]
    await aws.aclose()


async def test_spot_takes_the_cheapest_zone_and_sizes_from_on_demand(stubs: Stubs, clock: Clock) -> None:
    pages = load("aws_products.json")
    stubs.stub("pricing", "us-east-1").add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in pages["page1"]]},
        _products_params(),
    )
    stubs.stub("ec2", "us-east-1").add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {**e, "Timestamp": datetime.fromisoformat(e["Timestamp"])}
                for e in load("aws_spot_history.json")["SpotPriceHistory"]
            ]
        },
        {"ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY, "MaxResults": 1000},
    )
    aws = AwsPriceList(client_factory=stubs.factory, clock=clock)
    await aws.offers("aws", "us-east-1", PriceType.ON_DEMAND)

    spot = await aws.offers("aws", "us-east-1", PriceType.SPOT)

    assert spot is not None
    m6i = spot.offer(spot.find("m6i.2xlarge") or 0)
    assert (m6i.price_usd_per_hour, m6i.vcpus, m6i.memory_gib) == (0.1399, 8, 32.0)
    assert spot.offer(spot.find("t3.large") or 0).price_usd_per_hour == 0.0312


async def test_access_denied_and_throttling_translate(stubs: Stubs) -> None:
    pricing = stubs.stub("pricing", "eu-central-1")
    pricing.add_client_error("get_products", "AccessDeniedException", "User is not authorized", 400)
    aws = AwsPriceList(client_factory=stubs.factory)
    with pytest.raises(ProviderAuthError, match="AccessDeniedException"):
        await aws.offers("aws", "eu-west-1", PriceType.ON_DEMAND)
    pricing.add_client_error("get_products", "ThrottlingException", "Rate exceeded", 400)
    with pytest.raises(ProviderRateLimited):
        await aws.offers("aws", "eu-west-3", PriceType.ON_DEMAND)


async def test_regions_come_from_attribute_values(stubs: Stubs) -> None:
    stubs.stub("pricing", "us-east-1").add_response(
        "get_attribute_values",
        {
            "AttributeValues": [
                {"Value": "us-east-1"},
                {"Value": "eu-west-1"},
                {"Value": "us-east-1-bos-1"},  # a Local Zone, not a region
                {"Value": "us-gov-west-1"},
            ]
        },
        {"ServiceCode": "AmazonEC2", "AttributeName": "regionCode"},
    )
    assert await AwsPriceList(client_factory=stubs.factory).regions() == [
        "eu-west-1",
        "us-east-1",
        "us-gov-west-1",
    ]


def test_price_item_parsing_and_endpoint_choice() -> None:
    product = load("aws_products.json")["page1"][0]
    parsed = parse_price_item(json.dumps(product))
    assert parsed is not None
    assert parsed[:2] == ("m6i.2xlarge", 0.384)
    product["terms"] = {"OnDemand": {}}
    assert parse_price_item(json.dumps(product)) is None
    assert [
        pricing_endpoint_region(r) for r in ("ap-northeast-1", "eu-west-1", "sa-east-1", "cn-north-1")
    ] == [
        "ap-south-1",
        "eu-central-1",
        "us-east-1",
        "cn-northwest-1",
    ]
