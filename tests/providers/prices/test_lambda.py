"""Lambda Cloud instance-types client against the OpenAPI example shape."""

from __future__ import annotations

import httpx
import pytest
import respx
from pydantic import SecretStr

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import ProviderAuthError
from carbon_optimizer.providers.prices._common import HttpPolicy
from carbon_optimizer.providers.prices.lambda_cloud import LambdaCloudPrices, normalize_lambda_gpu

from .conftest import SECRET, Clock, load

URL = "https://cloud.lambda.ai/api/v1/instance-types"
FAST = HttpPolicy(timeout_s=1.0, max_retries=0, backoff_base_s=0.0)


async def test_cents_to_usd_bearer_key_and_sold_out_types_kept(
    router: respx.Router, http: httpx.AsyncClient, clock: Clock
) -> None:
    route = router.get(URL).mock(return_value=httpx.Response(200, json=load("lambda_instance_types.json")))
    client = LambdaCloudPrices(http, SecretStr(SECRET), policy=FAST, clock=clock)

    table = await client.offers("lambda", "us-west-1", PriceType.ON_DEMAND)

    assert table is not None
    assert route.calls[0].request.headers["authorization"] == f"Bearer {SECRET}"
    example = table.offer(table.find("gpu_8x_example") or 0)
    assert example.price_usd_per_hour == pytest.approx(15.92)
    assert (example.vcpus, example.memory_gib, example.gpu_count) == (124, 1800.0, 8)
    assert example.gpu_model is None  # "Example GPU" is no real model: unknown, not invented
    # Empty regions_with_capacity_available means sold out now, not "not offered".
    a10 = table.offer(table.find("gpu_1x_a10") or 0)
    assert (a10.price_usd_per_hour, a10.gpu_model) == (1.29, "A10")
    assert a10.source == "live:lambda"
    assert a10.region == "us-west-1"
    assert len(table) == 7


async def test_one_call_prices_every_region(router: respx.Router, http: httpx.AsyncClient) -> None:
    route = router.get(URL).mock(return_value=httpx.Response(200, json=load("lambda_instance_types.json")))
    client = LambdaCloudPrices(http, SecretStr(SECRET), policy=FAST)
    east = await client.offers("lambda", "us-east-1", PriceType.ON_DEMAND)
    west = await client.offers("lambda", "us-west-2", PriceType.ON_DEMAND)
    assert east is not None
    assert west is not None
    assert east.instance_types == west.instance_types
    assert route.call_count == 1
    assert await client.offers("lambda", "us-east-1", PriceType.SPOT) is None  # no spot market
    assert await client.regions() == ["*"]


async def test_rejected_key_is_an_auth_error_without_the_key(
    router: respx.Router, http: httpx.AsyncClient
) -> None:
    router.get(URL).mock(
        return_value=httpx.Response(
            401, json={"error": {"code": "global/invalid-api-key", "message": SECRET}}
        )
    )
    with pytest.raises(ProviderAuthError) as caught:
        await LambdaCloudPrices(http, SecretStr(SECRET), policy=FAST).offers(
            "lambda", "us-east-1", PriceType.ON_DEMAND
        )
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.parametrize(
    ("description", "model"),
    [
        ("A10 (24 GB PCIe)", "A10"),
        ("A100 (40 GB SXM4)", "A100-40GB"),
        ("A100 (80 GB SXM4)", "A100-80GB"),
        ("H100 (80 GB SXM5)", "H100-80GB"),
        ("H100 (80 GB PCIe)", "H100-80GB-PCIe"),
        ("GH200 (96 GB)", "GH200"),
        ("B200 (180 GB SXM6)", "B200"),
        ("A6000 (48 GB)", "RTX-A6000"),
        ("RTX 6000 (24 GB)", "Quadro-RTX-6000"),
        ("Tesla V100 (16 GB)", "V100-16GB"),
        ("Example GPU (40 GB SXM4)", None),
    ],
)
def test_gpu_descriptions_map_to_the_bundled_names(description: str, model: str | None) -> None:
    assert normalize_lambda_gpu(description) == model
