"""/health's top-level status in every deployment mode, through the real app and real Redis.

Before the shared `ComponentStatus`, a healthy live deployment (key set, no Redis) said "degraded"
because the carbon cache reported "healthy", a word the route did not accept.
"""

from __future__ import annotations

from typing import Any

import pytest

from carbon_optimizer.app import AppOverrides
from carbon_optimizer.health import ComponentStatus, overall
from carbon_optimizer.settings import Settings
from tests.api.conftest import make_client
from tests.support.redis import RedisServer
from tests.support.stub_upstream import StubUpstream, live_settings

pytestmark = pytest.mark.integration

OPTIMIZE = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [{"zone": "DE"}, {"zone": "FR"}],
    "objective": {"mode": "carbon"},
}


async def health_after_one_request(settings: Settings) -> dict[str, Any]:
    # The real wall clock: the stub answers around "now".
    async with make_client(settings, AppOverrides()) as client:
        answer = await client.post("/v1/optimize", json=OPTIMIZE)
        assert answer.status_code == 200, answer.text
        response = await client.get("/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_embedded_is_ok() -> None:
    health = await health_after_one_request(Settings(_env_file=None))
    assert health["status"] == "ok"
    assert health["components"]["carbon"]["mode"] == "offline"
    assert health["components"]["cache"] == {"backend": "memory", "status": "embedded"}


async def test_live_without_redis_is_ok(stub_upstream: StubUpstream) -> None:
    health = await health_after_one_request(live_settings(stub_upstream.base_url, None))
    assert stub_upstream.count("forecast") + stub_upstream.count("history") > 0  # really live
    assert health["components"]["carbon"]["mode"] == "live"
    assert health["components"]["cache"]["backend"] == "memory"
    assert health["components"]["cache"]["status"] == "ok"
    assert health["status"] == "ok"


async def test_live_with_redis_is_ok(stub_upstream: StubUpstream, redis_server: RedisServer) -> None:
    health = await health_after_one_request(live_settings(stub_upstream.base_url, redis_server.url))
    assert health["components"]["cache"]["backend"] == "redis"
    assert health["components"]["cache"]["status"] == "ok"
    assert health["status"] == "ok"


async def test_live_with_redis_down_is_degraded(
    stub_upstream: StubUpstream, redis_server: RedisServer
) -> None:
    url = redis_server.url
    redis_server.kill()
    health = await health_after_one_request(live_settings(stub_upstream.base_url, url))
    assert health["components"]["cache"]["status"] == "degraded"
    assert health["status"] == "degraded"


async def test_open_circuit_is_degraded(stub_upstream: StubUpstream) -> None:
    stub_upstream.mode = "error"
    health = await health_after_one_request(
        live_settings(stub_upstream.base_url, None, breaker_failure_threshold=1)
    )
    assert health["components"]["carbon"]["circuit"] == {"electricitymaps": "open"}
    assert health["status"] == "degraded"


def test_overall_rule_and_unknown_words() -> None:
    healthy = [ComponentStatus.OK, ComponentStatus.EMBEDDED, ComponentStatus.DISABLED]
    assert overall(healthy) is ComponentStatus.OK
    assert overall([ComponentStatus.OK, ComponentStatus.DEGRADED]) is ComponentStatus.DEGRADED
    assert ComponentStatus.parse("healthy") is ComponentStatus.UNKNOWN  # outside the vocabulary: visible
    assert overall([ComponentStatus.parse(None)]) is ComponentStatus.DEGRADED
