"""The ledger through the HTTP API: optimize with record, placements, outcomes, reports, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY

from carbon_optimizer.api.schemas_ledger import PlacementOut, SavingsReportOut
from carbon_optimizer.api.security import client_id_for
from carbon_optimizer.api.state import AppState
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.ledger.ledger import Ledger
from carbon_optimizer.providers.carbon.base import Signal
from carbon_optimizer.settings import DatabaseSettings, LedgerSettings, Settings
from tests.fakes import FIXED_NOW, FakeCarbon, fixed_clock
from tests.ledger.conftest import PgDatabases, _require_pg

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef00"
ROOT = "root-key-0123456789abcdef0"
NOW = FIXED_NOW


def _settings(database: DatabaseSettings, **ledger: Any) -> Settings:
    return Settings(
        _env_file=None,
        api_keys=[ALICE, BOB, ROOT],
        rate_limit_enabled=False,
        database=database,
        ledger=LedgerSettings(admin_client_ids=[client_id_for(ROOT)], reconcile_delay_s=0, **ledger),
    )


@asynccontextmanager
async def _client(settings: Settings, now: Any = NOW) -> AsyncIterator[tuple[httpx.AsyncClient, Ledger]]:
    carbon = FakeCarbon({"DE": lambda h: 400.0 if h % 24 < 12 else 100.0, "FR": lambda h: 50.0})
    app = create_app(settings, AppOverrides(carbon=carbon, clock=fixed_clock(now)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            # None when the ledger is disabled (one test checks exactly that).
            yield client, cast(Ledger, _app_state(manager).ledger)


def _app_state(manager: LifespanManager) -> AppState:
    """The AppState the lifespan yielded (the manager holds the lifespan's state mapping)."""
    state: AppState = manager._state["co"]
    return state


def _auth(key: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8, "power_watts": 1000},
        "locations": [{"zone": "DE"}, {"zone": "FR"}],
        "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
        "objective": {"mode": "carbon"},
        "record": True,
    }
    body.update(overrides)
    return body


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_optimize_records_idempotently_and_reports(tmp_path: Path) -> None:
    settings = _settings(
        DatabaseSettings(data_dir=str(tmp_path), write_timeout_s=10, caller_write_timeout_s=20)
    )
    before = _metric("carbon_optimizer_ledger_placements_recorded_total", origin="optimize")
    async with _client(settings) as (client, ledger):
        plain = await client.post("/v1/optimize", json=_body(record=False), headers=_auth(ALICE))
        assert plain.status_code == 200
        assert "placement_id" not in plain.json()

        key = {"idempotency-key": "job-42"}
        first = await client.post("/v1/optimize", json=_body(), headers=_auth(ALICE, **key))
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["recorded"] is True
        assert answer["queued"] is False
        pid = answer["placement_id"]
        retry = await client.post("/v1/optimize", json=_body(), headers=_auth(ALICE, **key))
        assert retry.json()["placement_id"] == pid
        assert retry.json()["recorded"] is True
        assert await ledger.repository.count() == 1
        assert _metric("carbon_optimizer_ledger_placements_recorded_total", origin="optimize") == before + 1
        # Same key, different request → 409 problem.
        clash = await client.post("/v1/optimize", json=_body(max_results=2), headers=_auth(ALICE, **key))
        assert clash.status_code == 409
        assert clash.headers["content-type"] == "application/problem+json"

        stored = await client.get(f"/v1/placements/{pid}", headers=_auth(ALICE))
        assert stored.status_code == 200
        row = stored.json()
        PlacementOut.model_validate(row)  # the documented 200 body is what the route serves
        assert row["location"] == answer["best"]["location"]["zone"].join(["zone/", ""])
        assert row["emissions_g"] == answer["best"]["emissions_g"]
        assert row["baseline_emissions_g"] == answer["baseline"]["emissions_g"]
        assert row["baseline_name"] == "first requested location at the earliest start"
        assert row["signal"] == "location-based average, lifecycle"
        assert row["client_id"] == client_id_for(ALICE)
        assert ALICE not in stored.text
        # Bob cannot see or touch Alice's placement: the same 404 as an unknown id.
        bodies = []
        for path in (f"/v1/placements/{pid}", "/v1/placements/not-a-real-id"):
            got = await client.get(path, headers=_auth(BOB))
            assert got.status_code == 404
            assert got.headers["content-type"] == "application/problem+json"
            bodies.append({k: v for k, v in got.json().items() if k != "instance"})
        assert bodies[0] == bodies[1]  # nothing tells another client's id from an unknown one
        assert "queued" in bodies[0]["detail"]  # why a just-answered placement may be missing
        outcome = {"actual_start": "2026-06-03T10:00:00Z", "actual_end": "2026-06-03T09:00:00Z"}
        denied = await client.post(f"/v1/placements/{pid}/outcome", json=outcome, headers=_auth(BOB))
        assert denied.status_code == 404
        backwards = await client.post(f"/v1/placements/{pid}/outcome", json=outcome, headers=_auth(ALICE))
        assert backwards.status_code == 422
        assert backwards.json()["errors"][0]["loc"] == ["body", "actual_end"]
        future = {"actual_start": "2026-06-03T10:00:00Z", "actual_end": "2026-06-03T23:00:00Z"}
        early = await client.post(f"/v1/placements/{pid}/outcome", json=future, headers=_auth(ALICE))
        assert early.status_code == 422  # outcome before the run could have ended
        missing = await client.post("/v1/placements/nope/outcome", json=future, headers=_auth(ALICE))
        assert missing.status_code == 404

        query = {"from": "2026-06-01", "to": "2026-07-01", "group_by": "client"}
        mine = (await client.get("/v1/reports/savings", params=query, headers=_auth(ALICE))).json()
        SavingsReportOut.model_validate(mine)
        assert [g["key"] for g in mine["groups"]] == [client_id_for(ALICE)]
        assert mine["total"]["placements"] == 1
        assert mine["total"]["forecast"]["savings_g"] == answer["savings"]["emissions_g"]
        theirs = (await client.get("/v1/reports/savings", params=query, headers=_auth(BOB))).json()
        assert theirs["total"]["placements"] == 0
        assert theirs["groups"] == []
        spying = await client.get(
            "/v1/reports/savings", params={**query, "client": client_id_for(ALICE)}, headers=_auth(BOB)
        )
        assert spying.status_code == 422
        everyone = (await client.get("/v1/reports/savings", params=query, headers=_auth(ROOT))).json()
        assert everyone["scope"] == "all clients"
        assert everyone["total"]["placements"] == 1
        csv = await client.get("/v1/reports/savings", params=query, headers=_auth(ALICE, accept="text/csv"))
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[1].startswith(client_id_for(ALICE) + ",1,")
        bad = await client.get("/v1/reports/savings", params={"from": "June"}, headers=_auth(ALICE))
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["loc"] == ["query", "from"]
        wrong_group = await client.get(
            "/v1/reports/savings", params={"group_by": "year"}, headers=_auth(ALICE)
        )
        assert wrong_group.status_code == 422


async def test_caller_placement_outcome_and_reconciliation(tmp_path: Path) -> None:
    settings = _settings(
        DatabaseSettings(data_dir=str(tmp_path), caller_write_timeout_s=20), reconcile_interval_s=0.05
    )
    later = NOW + timedelta(days=1)
    async with _client(settings, now=later) as (client, ledger):
        chosen = {
            "location": {"zone": "FR"},
            "start": "2026-06-03T10:00:00Z",
            "end": "2026-06-03T12:00:00Z",
            "energy_kwh": 2.0,
            "avg_carbon_intensity_g_per_kwh": 60.0,
            "rank": 3,  # copied from an optimize answer: extra fields are ignored
            "score": 0.1,
        }
        baseline = {
            **chosen,
            "location": {"zone": "DE"},
            "avg_carbon_intensity_g_per_kwh": 350,
            "name": "DE now",
        }
        body = {"chosen": chosen, "baseline": baseline, "workload": {"duration_minutes": 120}}
        key = {"idempotency-key": "caller-1"}
        made = await client.post("/v1/placements", json=body, headers=_auth(BOB, **key))
        assert made.status_code == 201, made.text
        pid = made.json()["placement_id"]
        replay = await client.post("/v1/placements", json=body, headers=_auth(BOB, **key))
        assert replay.status_code == 200
        assert replay.json() == {**made.json(), "replayed": True}
        unknown_zone = {**body, "chosen": {**chosen, "location": {"zone": "XX-NOWHERE"}}}
        refused = await client.post("/v1/placements", json=unknown_zone, headers=_auth(BOB))
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "chosen", "location", "zone"]

        outcome = {
            "actual_start": "2026-06-03T10:00:00Z",
            "actual_end": "2026-06-03T11:00:00Z",
            "measured_energy_kwh": 1.0,
        }
        done = await client.post(f"/v1/placements/{pid}/outcome", json=outcome, headers=_auth(BOB))
        assert done.status_code == 200
        assert done.json()["measured_energy_kwh"] == 1.0
        # The background reconciler picks it up (FakeCarbon: FR 50, DE 400 before noon).
        deadline = time.monotonic() + 5
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            row = (await client.get(f"/v1/placements/{pid}", headers=_auth(BOB))).json()
            if row["status"] == "reconciled":
                break
            await asyncio.sleep(0.05)
        assert row["status"] == "reconciled"
        PlacementOut.model_validate(row)
        PlacementOut.model_validate(done.json())
        assert row["realised_emissions_g"] == 50.0
        assert row["realised_baseline_emissions_g"] == 400.0  # same 1.0/2.0 energy correction, 2 h at 400
        health = (await client.get("/health", headers=_auth(ALICE))).json()["components"]["ledger"]
        assert health["status"] == "ok"
        assert health["queued"] == 0


async def test_database_down_optimize_still_answers_and_nothing_is_lost(pg_databases: PgDatabases) -> None:
    """A PostgreSQL database that does not exist yet: optimize answers, queues, and flushes later."""
    _require_pg()
    import asyncpg

    from tests.ledger.conftest import PG_HOST, PG_PORT, PG_USER

    name = f"co_ledger_test_late_{int(time.time() * 1000) % 10**9}"
    pg_databases.created.append(name)  # dropped at session end
    database = DatabaseSettings(
        url=pg_databases.url(name),
        retry_interval_s=0.05,
        caller_write_timeout_s=0.1,
        connect_timeout_s=0.5,
    )
    async with _client(_settings(database)) as (client, ledger):
        for _ in range(200):  # the start-up task finds out the database is missing
            if not ledger.recorder.healthy:
                break
            await asyncio.sleep(0.02)
        assert not ledger.recorder.healthy
        started = time.monotonic()
        answer = await client.post(
            "/v1/optimize", json=_body(), headers=_auth(ALICE, **{"idempotency-key": "k"})
        )
        elapsed = time.monotonic() - started
        assert answer.status_code == 200
        data = answer.json()
        assert data["recorded"] is False
        assert data["queued"] is True
        assert data["placement_id"]
        assert any("queued in memory" in w for w in data["warnings"])
        assert elapsed < 1.0
        queued = await client.post(
            "/v1/placements",
            json={"chosen": data["best"], "baseline": data["baseline"]},
            headers=_auth(ALICE),
        )
        assert queued.status_code == 202
        assert queued.json()["queued"] is True
        unavailable = await client.get("/v1/reports/savings", headers=_auth(ALICE))
        assert unavailable.status_code == 503
        assert "retry-after" in unavailable.headers
        assert (await client.get("/health", headers=_auth(ALICE))).json()["components"]["ledger"][
            "status"
        ] == "degraded"

        # The database comes up: the start-up task migrates it and the writer flushes the queue.
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ledger.recorder.depth:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert ledger.recorder.depth == 0
        assert await ledger.repository.count() == 2
        got = await client.get(f"/v1/placements/{data['placement_id']}", headers=_auth(ALICE))
        assert got.status_code == 200
        assert got.json()["request_id"] == data["request_id"]


async def test_client_default_and_disabled_ledger(tmp_path: Path) -> None:
    settings = _settings(
        DatabaseSettings(data_dir=str(tmp_path), write_timeout_s=10, caller_write_timeout_s=20),
        record_clients=[client_id_for(BOB)],
    )
    async with _client(settings) as (client, ledger):
        body = _body()
        del body["record"]
        by_default = (await client.post("/v1/optimize", json=body, headers=_auth(BOB))).json()
        assert by_default["recorded"] is True
        not_alice = (await client.post("/v1/optimize", json=body, headers=_auth(ALICE))).json()
        assert "placement_id" not in not_alice
        opted_out = (
            await client.post("/v1/optimize", json={**body, "record": False}, headers=_auth(BOB))
        ).json()
        assert "placement_id" not in opted_out
        assert await ledger.repository.count() == 1
    off = _settings(DatabaseSettings(enabled=False))
    async with _client(off) as (client, ledger):
        assert ledger is None
        answer = (await client.post("/v1/optimize", json=_body(), headers=_auth(ALICE))).json()
        assert "placement_id" not in answer
        assert "savings ledger disabled; not recorded" in answer["warnings"]
        gone = await client.get("/v1/reports/savings", headers=_auth(ALICE))
        assert gone.status_code == 503


async def _committed(client: httpx.AsyncClient, placement_id: str, key: str) -> httpx.Response:
    """GET a queued placement until the writer has committed it (up to ~2 s), the last answer."""
    for _ in range(200):
        got = await client.get(f"/v1/placements/{placement_id}", headers=_auth(key))
        if got.status_code == 200:
            break
        await asyncio.sleep(0.01)
    return got


async def test_default_answers_queued_without_waiting_and_commits_soon(tmp_path: Path) -> None:
    async with _client(_settings(DatabaseSettings(data_dir=str(tmp_path)))) as (client, ledger):
        data = (await client.post("/v1/optimize", json=_body(), headers=_auth(ALICE))).json()
        assert data["queued"] is True
        assert data["recorded"] is False
        assert not any("queued in memory" in w for w in data["warnings"])  # not a degradation
        assert (await _committed(client, data["placement_id"], ALICE)).status_code == 200


async def test_result_cache_hits_are_recorded_each_and_never_carry_another_request_s_placement(
    tmp_path: Path,
) -> None:
    # The default (no write timeout): a hit's own copy of the cached answer gets its placement
    # fields in place, the cached answer itself never. Bob records by default, Alice does not:
    # her hit of the body Bob's requests cached must carry no placement of his.
    settings = _settings(DatabaseSettings(data_dir=str(tmp_path)), record_clients=[client_id_for(BOB)])
    async with _client(settings) as (client, ledger):
        body = _body()
        del body["record"]
        answers = [await client.post("/v1/optimize", json=body, headers=_auth(BOB)) for _ in range(3)]
        assert [a.headers["x-result-cache"] for a in answers] == ["miss", "hit", "hit"]
        ids = [a.json()["placement_id"] for a in answers]
        assert len(set(ids)) == 3
        alice = await client.post("/v1/optimize", json=body, headers=_auth(ALICE))
        assert alice.headers["x-result-cache"] == "hit"
        assert not {"placement_id", "recorded", "queued"} & set(alice.json())
        assert alice.json()["best"] == answers[0].json()["best"]
        for pid in ids:
            assert (await _committed(client, pid, BOB)).status_code == 200
        assert await ledger.repository.count() == 3


class _BrokenLedger:
    """A ledger whose recording blows up in an unforeseen way."""

    def wants_record(self, requested: bool | None, client_id: str | None) -> bool:
        return True

    def queue_optimize(self, *_: Any) -> dict[str, Any] | None:
        raise RuntimeError("unforeseen")

    async def record_optimize(self, **_: Any) -> dict[str, Any]:
        raise RuntimeError("unforeseen")

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "queued": 0}


async def test_a_failing_ledger_never_fails_the_optimize_answer(tmp_path: Path) -> None:
    broken = cast(Ledger, _BrokenLedger())
    app = create_app(
        _settings(DatabaseSettings(enabled=False)), AppOverrides(clock=fixed_clock(NOW), ledger=broken)
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.post("/v1/optimize", json=_body(), headers=_auth(ALICE))
    assert answer.status_code == 200
    assert "placement not recorded (ledger error)" in answer.json()["warnings"]
    assert answer.json()["best"]["location"]["zone"] in ("DE", "FR")


class _MarginalCarbon(FakeCarbon):
    """Answers the marginal signal too (as WattTime would)."""

    def signals(self, zone: str) -> frozenset[Signal]:
        return frozenset({Signal.AVERAGE, Signal.MARGINAL})


async def test_a_marginal_plan_is_answered_but_not_recorded(tmp_path: Path) -> None:
    settings = _settings(DatabaseSettings(data_dir=str(tmp_path), write_timeout_s=10))
    carbon = _MarginalCarbon({"DE": lambda h: 700.0, "FR": lambda h: 300.0})
    before = _metric("carbon_optimizer_ledger_placements_recorded_total", origin="optimize")
    app = create_app(settings, AppOverrides(carbon=carbon, clock=fixed_clock(NOW)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.post("/v1/optimize", json=_body(signal="marginal"), headers=_auth(ALICE))
        ledger = _app_state(manager).ledger
        assert ledger is not None
        assert ledger.recorder.depth == 0  # nothing waits in the queue
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["best"]["location"]["zone"] == "FR"
    assert data["placement_id"] is None
    assert data["recorded"] is False
    assert "placement not recorded: the savings ledger accounts in average intensity only" in data["warnings"]
    assert _metric("carbon_optimizer_ledger_placements_recorded_total", origin="optimize") == before
