"""Catalog, price, estimate, series and probe endpoints on the embedded default."""

from __future__ import annotations

import httpx
import pytest

from carbon_optimizer.api.http_metrics import HttpMetrics
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.settings import ElectricityMapsSettings, Settings
from tests.api.conftest import ClientFactory
from tests.fakes import fixed_clock
from tests.support.http import mocked_upstream


async def test_regions_catalog(client: httpx.AsyncClient) -> None:
    data = (await client.get("/v1/regions")).json()
    assert data["count"] == len(data["regions"]) > 100
    by_key = {(r["provider"], r["region"]): r for r in data["regions"]}
    assert by_key[("aws", "us-east-1")]["zone"] == "US-MIDA-PJM"
    assert by_key[("gcp", "europe-west1")]["zone"] == "BE"
    assert {r["provider"] for r in data["regions"]} <= {"aws", "azure", "gcp", "lambda"}
    only_azure = (await client.get("/v1/regions", params={"provider": "azure"})).json()
    assert {r["provider"] for r in only_azure["regions"]} == {"azure"}
    bad = await client.get("/v1/regions", params={"provider": "ibm"})
    assert bad.status_code == 422


async def test_zone_series_forecasts_hourly_zones_offline(client: httpx.AsyncClient) -> None:
    # Offline, hourly zones are forecast from the replayed history (measured better than the bare
    # replay: docs/forecasting.md "Offline"); the label says so.
    params = {"start": "2026-06-03T10:00:00Z", "end": "2026-06-03T16:00:00Z"}
    data = (await client.get("/v1/zones/DE/carbon-intensity", params=params)).json()
    assert data["zone"] == "DE"
    assert data["sources"] == ["forecast:profile-ar"]
    assert [p["datetime"][11:13] for p in data["points"]] == ["10", "11", "12", "13", "14", "15"]
    assert all(p["carbon_intensity_g_per_kwh"] > 0 for p in data["points"])
    annual = (await client.get("/v1/zones/PL/carbon-intensity", params=params)).json()
    assert annual["sources"][0].startswith("fallback:annual-")
    assert len({p["carbon_intensity_g_per_kwh"] for p in annual["points"]}) == 1


async def test_zone_series_is_case_insensitive_on_the_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/zones/de/carbon-intensity")
    assert response.status_code == 200
    assert response.json()["zone"] == "DE"


async def test_prices_listing_and_filters(client: httpx.AsyncClient) -> None:
    data = (
        await client.get(
            "/v1/prices", params={"provider": "aws", "region": "us-east-1", "instance_type": "t3.large"}
        )
    ).json()
    assert data["count"] == 1
    row = data["prices"][0]
    assert row["price_usd_per_hour"] == pytest.approx(0.0832)
    assert row["source"] == "bundled:2026-07-20"
    assert row["as_of"] == "2026-07-20"
    limited = (await client.get("/v1/prices", params={"provider": "azure", "limit": 3})).json()
    assert limited["count"] == 3
    assert limited["truncated"] is True


async def test_estimate_t3_large_for_8_hours(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/estimate",
        json={"provider": "aws", "region": "us-east-1", "instance_type": "t3.large", "hours": 8},
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["cost_usd"] == pytest.approx(0.6656)
    assert data["price_source"] == "bundled:2026-07-20"
    assert data["zone"] == "US-MIDA-PJM"
    assert data["energy_kwh"] > 0
    assert data["emissions_g"] == pytest.approx(
        data["energy_kwh"] * data["avg_carbon_intensity_g_per_kwh"], rel=1e-3
    )
    unknown = await client.post(
        "/v1/estimate",
        json={"provider": "aws", "region": "us-east-1", "instance_type": "z9.huge", "hours": 1},
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "instance_type"]


async def test_probes_and_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert {"carbon", "prices", "cache"} <= set(health["components"])
    assert health["version"]


async def test_metrics_and_docs(client: httpx.AsyncClient) -> None:
    await client.post(
        "/v1/optimize",
        json={
            "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
            "locations": [{"zone": "FR"}],
        },
    )
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text or "http_request_duration" in metrics.text
    assert "carbon_optimizer_candidates_evaluated" in metrics.text
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/optimize" in schema["paths"]


async def test_docs_can_be_switched_off(client_factory: ClientFactory) -> None:
    from carbon_optimizer.settings import Settings

    async with client_factory(Settings(_env_file=None, docs_enabled=False)) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404


async def test_estimate_survives_carbon_outage(client_factory: ClientFactory) -> None:
    async with mocked_upstream() as (router, http):
        router.route(host="api.electricitymaps.com").mock(side_effect=httpx.ConnectError("refused"))
        settings = Settings(
            _env_file=None,
            electricitymaps=ElectricityMapsSettings(api_key="k-test", request_deadline_s=1.0, max_retries=0),
        )
        async with client_factory(settings, AppOverrides(clock=fixed_clock(), http=http)) as client:
            response = await client.post(
                "/v1/estimate",
                json={
                    "provider": "gcp",
                    "region": "europe-west1",
                    "instance_type": "n2-standard-8",
                    "hours": 2,
                },
            )
    assert response.status_code == 200
    assert response.json()["carbon_source"].startswith("fallback:")
    assert any("electricitymaps unavailable" in w for w in response.json()["warnings"])


async def test_prices_truncated_flag_at_the_limit_boundary(client: httpx.AsyncClient) -> None:
    full = (await client.get("/v1/prices", params={"provider": "lambda", "limit": 10000})).json()
    n = full["count"]
    assert n > 1
    assert full["truncated"] is False
    exact = (await client.get("/v1/prices", params={"provider": "lambda", "limit": n})).json()
    assert (exact["count"], exact["truncated"]) == (n, False)
    cut = (await client.get("/v1/prices", params={"provider": "lambda", "limit": n - 1})).json()
    assert (cut["count"], cut["truncated"]) == (n - 1, True)
    assert cut["prices"] == full["prices"][: n - 1]


def test_the_memoised_route_lookup_names_each_path_by_its_own_template() -> None:
    """The metrics' route lookup, memoised: templated names per path; misses not kept."""
    app = create_app(Settings(_env_file=None))
    metrics = HttpMetrics()

    def handler(method: str, path: str) -> tuple[str, bool]:
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": app, "headers": []}
        return metrics.handler(scope)

    for _ in range(2):  # the second round answers from the memo: the same names
        assert handler("GET", "/v1/placements/a1") == ("/v1/placements/{placement_id}", False)
        assert handler("GET", "/v1/placements/b2") == ("/v1/placements/{placement_id}", False)
        assert handler("POST", "/v1/optimize") == ("/v1/optimize", False)
        assert handler("GET", "/v1/regions") == ("/v1/regions", False)
        assert handler("GET", "/v1/no-such-route") == ("none", False)
        assert handler("GET", "/healthz") == ("/healthz", True)  # probes are not measured
        assert handler("GET", "/x/metrics") == ("none", True)  # the instrumentator's `search` rule
    assert ("GET", "/v1/no-such-route", "") not in metrics._routes  # a scan cannot grow it
    assert len(metrics._routes) == 5


async def test_the_start_up_heap_is_frozen_while_the_app_runs_and_released_after() -> None:
    """Old-generation collections skip the start-up heap in a running worker; nothing leaks after."""
    import gc

    from asgi_lifespan import LifespanManager

    app = create_app(Settings(_env_file=None, database={"enabled": False}))
    assert gc.get_freeze_count() == 0
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        assert gc.get_freeze_count() > 10_000  # catalogs, tables, series, fits: all frozen
    assert gc.get_freeze_count() == 0  # an app that stopped leaves nothing uncollectable
