"""The composed stack with the real bundled catalog: embedded default, total outage, refreshed cache."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.providers.base import PriceProvider
from carbon_optimizer.providers.prices import build_price_stack, refresh_prices
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.store import FileStore, PrefixedStore
from carbon_optimizer.settings import Settings

from .conftest import SECRET, Clock, FakeLive, live_table


def _settings(tmp_path: Path, **pricing: object) -> Settings:
    return Settings(_env_file=None, pricing={"file_cache_dir": str(tmp_path), **pricing})


class Offline:
    """A transport that fails every request, recording it: an outage of every upstream at once."""

    def __init__(self, status: int | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status is None:
            raise httpx.ConnectError("no route to host", request=request)
        return httpx.Response(self.status, json={"error": {"message": f"bad key {SECRET}"}})


@pytest.fixture
async def offline() -> AsyncIterator[tuple[Offline, httpx.AsyncClient]]:
    transport = Offline()
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        yield transport, client


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3 finds no credentials and never probes instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


async def test_embedded_default_makes_no_network_call(
    tmp_path: Path, offline: tuple[Offline, httpx.AsyncClient]
) -> None:
    transport, http = offline
    stack = await build_price_stack(
        _settings(tmp_path), http=http, bundled=BundledPriceProvider(), store=None
    )
    assert isinstance(stack.provider, PriceProvider)

    t3 = await stack.lookup("aws", "us-east-1", "t3.large")

    assert t3 is not None
    assert (t3.price_usd_per_hour, t3.source) == (0.0832, "bundled:2026-07-20")
    assert round(t3.price_usd_per_hour * 8, 6) == 0.6656
    assert transport.requests == []
    assert isinstance(stack.store, PrefixedStore)
    assert isinstance(stack.store.inner, FileStore)
    assert stack.store.inner.directory == tmp_path
    sources = stack.health()["sources"]
    assert isinstance(sources, dict)
    assert all(not s["enabled"] and "LIVE=false" in s["skipped_reason"] for s in sources.values())
    await stack.aclose()


@pytest.mark.usefixtures("no_aws_credentials")
@pytest.mark.parametrize("status", [None, 503, 401])
async def test_every_live_source_failing_still_answers_from_bundled(
    tmp_path: Path, status: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Offline(status)
    caplog.set_level(logging.DEBUG)
    settings = _settings(
        tmp_path, live=True, lambda_api_key=SECRET, gcp_api_key=SECRET, aws_enabled=True, live_wait_s=2.0
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as http:
        stack = await build_price_stack(settings, http=http, bundled=BundledPriceProvider(), store=None)
        found = await asyncio.gather(
            stack.lookup("aws", "us-east-1", "t3.large"),
            stack.lookup("azure", "eastus", "Standard_D8s_v5"),
            stack.lookup("gcp", "us-central1", "n2-standard-8"),
            stack.lookup("lambda", "us-west-1", "8x NVIDIA H100 SXM"),
        )
        answers = dict(zip(("aws", "azure", "gcp", "lambda"), found, strict=True))
        gcp_spot = await stack.provider.offers("gcp", "us-central1", PriceType.SPOT)
        health = stack.health()
        await stack.aclose()

    assert {k: (v.price_usd_per_hour, v.source) for k, v in answers.items() if v} == {
        "aws": (0.0832, "bundled:2026-07-20"),
        "azure": (0.384, "bundled:2026-06-18"),
        "gcp": (0.388472, "bundled:2026-07-30"),
        "lambda": (31.92, "bundled:2026-09-20"),
    }
    assert gcp_spot is not None
    assert all(s.startswith("bundled:") for s in gcp_spot.sources)
    assert {r.url.host for r in transport.requests} == {
        "prices.azure.com",
        "cloudbilling.googleapis.com",
        "cloud.lambda.ai",
    }
    sources = health["sources"]
    assert isinstance(sources, dict)
    assert sources["aws"]["enabled"] is False
    assert "credentials" in sources["aws"]["skipped_reason"]
    for name in ("azure", "gcp", "lambda"):
        assert sources[name]["last_error"], name
        assert sources[name]["last_success"] is None
    text = json.dumps(health) + caplog.text + "".join(str(r.url) for r in transport.requests)
    assert SECRET not in text


async def test_prices_refresh_then_embedded_server_serves_the_cache(
    tmp_path: Path, offline: tuple[Offline, httpx.AsyncClient], clock: Clock
) -> None:
    transport, http = offline
    azure = FakeLive(
        "azure",
        lambda region, pt: live_table(
            "azure", region, {"Standard_D8s_v5": 0.37}, pt, vcpus=None, memory=None
        ),
        regions=["eastus"],
    )
    settings = _settings(tmp_path)
    report = await refresh_prices(
        settings,
        http=http,
        store=FileStore(tmp_path),
        providers=["azure"],
        sources={"azure": azure},
        clock=clock,
    )
    assert report.ok_count == 2

    stack = await build_price_stack(
        settings, http=http, bundled=BundledPriceProvider(), store=None, clock=clock
    )
    table = await stack.provider.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert table is not None
    assert table.sources == ("cache:2026-11-24",)
    d8 = table.offer(table.find("Standard_D8s_v5") or 0)
    assert (d8.price_usd_per_hour, d8.vcpus, d8.memory_gib) == (0.37, 8, 32.0)  # sizes from the bundled table
    assert transport.requests == []
    sources = stack.health()["sources"]
    assert isinstance(sources, dict)
    assert sources["azure"]["as_of"] == "2026-11-24"
    await stack.aclose()
