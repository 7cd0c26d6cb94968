"""`signal` in the request: average by default; marginal only where a source has it, else 422."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import ClientFactory

BODY: dict[str, Any] = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [{"zone": "DE"}, {"zone": "FR"}],
    "objective": {"mode": "carbon"},
}


async def test_average_is_the_default_and_explicit_average_gives_the_same_answer(
    client_factory: ClientFactory,
) -> None:
    async with client_factory() as client:
        default = await client.post("/v1/optimize", json=BODY)
        explicit = await client.post("/v1/optimize", json={**BODY, "signal": "average"})
    assert default.status_code == explicit.status_code == 200
    assert default.json()["best"] == explicit.json()["best"]


async def test_marginal_without_a_marginal_source_is_a_422_naming_every_zone(
    client_factory: ClientFactory,
) -> None:
    async with client_factory() as client:
        response = await client.post("/v1/optimize", json={**BODY, "signal": "marginal"})
    assert response.status_code == 422
    problem = response.json()
    assert "zone(s) DE, FR" in problem["detail"]
    assert "marginal" in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["body", "signal"]]


async def test_an_unknown_signal_is_rejected_by_the_schema(client_factory: ClientFactory) -> None:
    async with client_factory() as client:
        response = await client.post("/v1/optimize", json={**BODY, "signal": "hourly"})
    assert response.status_code == 422
    assert "signal" in response.text
