"""Recording, idempotency, reconciliation, leases and reports against both real engines."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.ledger.ledger import IdempotencyConflict, PlacementNotFound, Viewer
from carbon_optimizer.ledger.models import FAILED, RECONCILED, RECORDED
from carbon_optimizer.ledger.reconciler import Reconciler
from carbon_optimizer.ledger.reports import to_csv, to_table
from carbon_optimizer.ledger.repository import LedgerRepository
from carbon_optimizer.providers.carbon.base import SeriesResult, Signal
from carbon_optimizer.settings import LedgerSettings
from tests.fakes import FailingCarbon, FakeCarbon
from tests.ledger.helpers import T0, make_ledger, option, record

H = timedelta(hours=1)


def _carbon() -> FakeCarbon:
    # DE realised at 120 g/kWh (forecast said 100), FR at 50, PL (the baseline) at 600.
    return FakeCarbon({"DE": lambda h: 120.0, "FR": lambda h: 50.0, "PL": lambda h: 600.0})


async def test_record_is_idempotent_and_detects_reused_keys(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        chosen, base = option("DE", T0 + H), option("PL", T0, intensity=500)
        first = await record(ledger, "alice", chosen, base, key="k-1")
        again = await ledger.record_caller(
            body={"chosen": chosen, "baseline": {**base, "name": "test baseline"}},
            client_id="alice",
            request_id="rid-2",
            idempotency_key="k-1",
        )
        assert again.placement_id == first
        assert again.written is not None
        assert again.written.replayed
        assert await repo.count() == 1
        # The same key from another client is another placement (keys are per client).
        other = await record(ledger, "bob", chosen, base, key="k-1")
        assert other != first
        assert await repo.count() == 2
        with pytest.raises(IdempotencyConflict):
            await ledger.record_caller(
                body={"chosen": option("FR", T0)}, client_id="alice", request_id="r", idempotency_key="k-1"
            )
        assert await repo.count() == 2
    finally:
        await recorder.aclose()


async def test_concurrent_recordings_are_group_committed(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        ids = await asyncio.gather(
            *(record(ledger, f"c{i % 3}", option("DE", T0 + i * H), None) for i in range(40))
        )
        assert len(set(ids)) == 40
        assert await repo.count() == 40
    finally:
        await recorder.aclose()


async def test_reconcile_realised_savings_and_forecast_error(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(
            ledger,
            "alice",
            option("DE", T0, kwh=2.0, intensity=100),
            option("PL", T0, kwh=2.0, intensity=500),
        )
        no_base = await record(ledger, "alice", option("FR", T0, kwh=1.0, intensity=40), None)
        reconciler = Reconciler(
            repo, _carbon(), settings=LedgerSettings(reconcile_delay_s=0), clock=lambda: T0
        )
        assert await reconciler.run_once() == 0  # windows not over yet
        later = T0 + 3 * H
        reconciler.clock = lambda: later
        assert await reconciler.run_once() == 2
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == RECONCILED
        assert row["realised_intensity_g_per_kwh"] == pytest.approx(120.0)
        assert row["realised_emissions_g"] == pytest.approx(240.0)
        assert row["realised_baseline_emissions_g"] == pytest.approx(1200.0)
        assert row["realised_source"] == "fake:test"
        assert row["reconciled_at"] == later
        solo = await repo.get(no_base)
        assert solo is not None
        assert solo["realised_emissions_g"] == pytest.approx(50.0)
        assert solo["realised_baseline_emissions_g"] is None
        assert await reconciler.run_once() == 0  # nothing left: resumable, never twice

        report = await ledger.report(
            Viewer("alice", False), group_by="location", start=T0, end=T0 + 24 * H, client=None
        )
        de = next(g for g in report["groups"] if g["key"] == "zone/DE")
        assert de["forecast"] == {
            "emissions_all_g": 200.0,
            "emissions_g": 200.0,
            "baseline_emissions_g": 1000.0,
            "savings_g": 800.0,
            "savings_pct": 80.0,
        }
        assert de["realised"]["savings_g"] == pytest.approx(960.0)
        assert de["realised"]["savings_pct"] == pytest.approx(80.0)
        assert de["forecast_error"]["emissions_g"] == pytest.approx(40.0)  # 240 realised vs 200 forecast
        assert de["forecast_error"]["pct"] == pytest.approx(20.0)
        total = report["total"]
        assert total["placements"] == 2
        assert total["reconciled"] == 2
        assert total["with_baseline"] == 1
        # The FR placement has no baseline: it counts, but adds nothing to savings either way.
        assert total["realised"]["savings_g"] == pytest.approx(960.0)
        assert total["forecast_error"]["emissions_g"] == pytest.approx(40.0 + 10.0)
    finally:
        await recorder.aclose()


async def test_outcome_changes_what_is_reconciled(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    now = T0 + 10 * H
    ledger, recorder = make_ledger(repo, now=now)
    try:
        pid = await record(
            ledger, "alice", option("DE", T0, kwh=2.0), option("PL", T0, kwh=2.0, intensity=500)
        )
        viewer = Viewer("alice", False)
        # It really ran in FR, for 1 h, and the meter said 1.5 kWh.
        await ledger.outcome(
            viewer,
            pid,
            {
                "actual_start": T0 + H,
                "actual_end": T0 + 2 * H,
                "measured_energy_kwh": 1.5,
                "location": {"zone": "FR"},
            },
        )
        reconciler = Reconciler(
            repo, _carbon(), settings=LedgerSettings(reconcile_delay_s=0), clock=lambda: now
        )
        assert await reconciler.run_once() == 1
        row = await repo.get(pid)
        assert row is not None
        assert row["actual_zone"] == "FR"
        assert row["realised_energy_kwh"] == pytest.approx(1.5)
        assert row["realised_emissions_g"] == pytest.approx(75.0)
        # The counterfactual gets the same energy correction (1.5 of 2.0 estimated kWh).
        assert row["realised_baseline_emissions_g"] == pytest.approx(1.5 * 600.0)

        with pytest.raises(PlacementNotFound):
            await ledger.outcome(Viewer("bob", False), pid, {"actual_start": T0, "actual_end": T0 + H})
        with pytest.raises(PlacementNotFound):
            await ledger.outcome(viewer, "no-such-id", {"actual_start": T0, "actual_end": T0 + H})
        with pytest.raises(InvalidInput) as bad:
            await ledger.outcome(viewer, pid, {"actual_start": T0 + H, "actual_end": T0})
        assert bad.value.loc == ("body", "actual_end")
        with pytest.raises(InvalidInput):  # has not finished yet
            await ledger.outcome(viewer, pid, {"actual_start": now, "actual_end": now + 2 * H})
        assert (await Viewer_get(ledger, Viewer("root", True), pid))["id"] == pid  # an admin sees it
    finally:
        await recorder.aclose()


async def Viewer_get(ledger: Any, viewer: Viewer, pid: str) -> dict[str, Any]:
    result: dict[str, Any] = await ledger.get(viewer, pid)
    return result


async def test_provider_failure_retries_then_falls_back_on_the_last_attempt(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(ledger, "alice", option("DE", T0), None)
        failing = FailingCarbon()
        settings = LedgerSettings(reconcile_delay_s=0, reconcile_max_attempts=3, reconcile_interval_s=1)
        clock = [T0 + 3 * H]
        reconciler = Reconciler(
            repo,
            failing,
            settings=settings,
            clock=lambda: clock[0],
            fallback=FakeCarbon({}, "fallback:replay-2023"),
        )
        assert await reconciler.run_once() == 0
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == RECORDED
        assert row["attempts"] == 1
        assert row["due_at"] > clock[0]
        assert "ProviderUnavailable" in row["reconcile_error"]
        clock[0] = clock[0] + timedelta(days=2)
        assert await reconciler.run_once() == 0  # second attempt: live only, still failing
        clock[0] = clock[0] + timedelta(days=2)
        assert await reconciler.run_once() == 1  # last attempt: the bundled data, labelled
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == RECONCILED
        assert row["realised_source"] == "fallback:replay-2023"
        report = await ledger.report(
            Viewer("alice", False), group_by="day", start=T0, end=T0 + 24 * H, client=None
        )
        assert report["total"]["reconciled_with_bundled_data"] == 1
    finally:
        await recorder.aclose()


async def test_with_a_live_source_bundled_only_history_waits_until_the_last_attempt(
    engine: AsyncEngine,
) -> None:
    # The carbon chain never raises for an outage: it paints the window from the bundled data.
    # With a live source configured, that must delay the placement, not settle it on climatology.
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(ledger, "alice", option("DE", T0), None)
        chain = FakeCarbon({"DE": lambda h: 300.0}, "fallback:replay-2023")
        settings = LedgerSettings(reconcile_delay_s=0, reconcile_max_attempts=2, reconcile_interval_s=1)
        clock = [T0 + 3 * H]
        reconciler = Reconciler(repo, chain, settings=settings, clock=lambda: clock[0], wait_for_live=True)
        assert await reconciler.run_once() == 0
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == RECORDED
        assert "LiveHistoryMissing" in row["reconcile_error"]
        clock[0] = clock[0] + timedelta(days=2)
        assert await reconciler.run_once() == 1  # last attempt: settled on the bundled data, labelled
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == RECONCILED
        assert row["realised_source"] == "fallback:replay-2023"
        assert row["realised_intensity_g_per_kwh"] == 300.0
    finally:
        await recorder.aclose()


async def test_offline_bundled_history_settles_at_once(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(ledger, "alice", option("DE", T0), None)
        chain = FakeCarbon({"DE": lambda h: 300.0}, "fallback:replay-2023")
        settings = LedgerSettings(reconcile_delay_s=0, reconcile_max_attempts=5)
        reconciler = Reconciler(repo, chain, settings=settings, clock=lambda: T0 + 3 * H)
        assert await reconciler.run_once() == 1
        row = await repo.get(pid)
        assert row is not None
        assert row["attempts"] == 1
    finally:
        await recorder.aclose()


async def test_unknown_zone_is_unreconcilable(engine: AsyncEngine) -> None:
    class NoZone:
        name = "nozone"

        def signals(self, zone: str) -> frozenset[Signal]:
            return frozenset({Signal.AVERAGE})

        async def series(
            self, zone: str, start: datetime, end: datetime, signal: Signal = Signal.AVERAGE
        ) -> SeriesResult:
            from carbon_optimizer.errors import UnknownZone

            raise UnknownZone(f"unknown zone '{zone}'")

    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(ledger, "alice", option("DE", T0), None)
        reconciler = Reconciler(
            repo, NoZone(), settings=LedgerSettings(reconcile_delay_s=0), clock=lambda: T0 + 5 * H
        )
        await reconciler.run_once()
        row = await repo.get(pid)
        assert row is not None
        assert row["status"] == FAILED
    finally:
        await recorder.aclose()


async def test_one_reconciler_at_a_time_and_takeover_after_expiry(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        await record(ledger, "alice", option("DE", T0), None)
        now = [T0 + 5 * H]
        settings = LedgerSettings(reconcile_delay_s=0, lease_ttl_s=60)
        a = Reconciler(repo, _carbon(), settings=settings, clock=lambda: now[0], holder="replica-a")
        b = Reconciler(repo, _carbon(), settings=settings, clock=lambda: now[0], holder="replica-b")
        assert await repo.acquire_lease("reconciler", "replica-a", now[0], now[0] + timedelta(seconds=60))
        assert await b.run_once() == 0  # A holds the lease: B does nothing
        row = (await repo.due(now[0], 10))[0]
        assert row["status"] == RECORDED
        now[0] = now[0] + timedelta(seconds=61)  # A died and stopped renewing
        assert await b.run_once() == 1
        assert not await repo.acquire_lease("reconciler", "replica-a", now[0], now[0] + timedelta(seconds=60))
        await b.release()
        assert await a.run_once() == 0  # lease free again, nothing due
    finally:
        await recorder.aclose()


async def test_reports_group_by_and_client_isolation(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    ledger, recorder = make_ledger(repo)
    try:
        # Mon 2026-06-01, Sun 2026-06-07, Mon 2026-06-08, and July.
        starts = [T0, T0 + timedelta(days=6, hours=23), T0 + timedelta(days=7), T0 + timedelta(days=31)]
        for i, start in enumerate(starts):
            await record(
                ledger,
                "alice" if i % 2 == 0 else "bob",
                option("DE", start, kwh=1.0, intensity=100, cost=2.0),
                option("PL", start, kwh=1.0, intensity=300, cost=1.5),
            )
        end = T0 + timedelta(days=60)
        admin = Viewer("root", True)
        weeks = await ledger.report(admin, group_by="week", start=T0, end=end, client=None)
        assert [(g["key"], g["placements"]) for g in weeks["groups"]] == [
            ("2026-06-01", 2),
            ("2026-06-08", 1),
            ("2026-06-29", 1),
        ]
        months = await ledger.report(admin, group_by="month", start=T0, end=end, client=None)
        assert [(g["key"], g["placements"]) for g in months["groups"]] == [("2026-06", 3), ("2026-07", 1)]
        days = await ledger.report(admin, group_by="day", start=T0, end=end, client=None)
        assert [g["key"] for g in days["groups"]] == ["2026-06-01", "2026-06-07", "2026-06-08", "2026-07-02"]
        clients = await ledger.report(admin, group_by="client", start=T0, end=end, client=None)
        assert [(g["key"], g["placements"]) for g in clients["groups"]] == [("alice", 2), ("bob", 2)]
        assert clients["total"]["forecast"]["savings_g"] == pytest.approx(800.0)
        assert clients["total"]["cost"]["delta_usd"] == pytest.approx(2.0)  # paid 0.5 more each time
        # A client sees only its own; asking for another client is refused; an admin may narrow.
        own = await ledger.report(Viewer("bob", False), group_by="client", start=T0, end=end, client=None)
        assert [g["key"] for g in own["groups"]] == ["bob"]
        assert own["scope"] == "client bob"
        with pytest.raises(InvalidInput):
            await ledger.report(Viewer("bob", False), group_by="client", start=T0, end=end, client="alice")
        narrowed = await ledger.report(admin, group_by="client", start=T0, end=end, client="alice")
        assert [g["key"] for g in narrowed["groups"]] == ["alice"]
        # [from, to) on the planned start.
        june = await ledger.report(
            admin, group_by="month", start=T0, end=T0 + timedelta(days=30), client=None
        )
        assert june["total"]["placements"] == 3
        csv_text = to_csv(clients)
        lines = csv_text.splitlines()
        assert lines[0].startswith("group,placements,")
        assert lines[1].startswith("alice,2,")
        assert lines[-1].startswith("TOTAL,4,")
        assert "alice" in to_table(clients)
        assert "TOTAL" in to_table(clients)
    finally:
        await recorder.aclose()


async def test_result_from_stale_inputs_is_not_saved(engine: AsyncEngine) -> None:
    """An outcome reported while a batch was being reconciled wins over that batch's result."""
    repo = LedgerRepository(engine)
    now = T0 + 10 * H
    ledger, recorder = make_ledger(repo, now=now)
    try:
        pid = await record(ledger, "alice", option("DE", T0, kwh=2.0), None)
        reconciler = Reconciler(
            repo, _carbon(), settings=LedgerSettings(reconcile_delay_s=0), clock=lambda: now
        )
        (row,) = await repo.due(now, 10)
        stale = await reconciler._reconcile(row, now)
        await ledger.outcome(
            Viewer("alice", False),
            pid,
            {"actual_start": T0, "actual_end": T0 + H, "measured_energy_kwh": 0.5},
        )
        await repo.save_reconciliation([(pid, row["outcome_at"], stale)])
        fresh = await repo.get(pid)
        assert fresh is not None
        assert fresh["status"] == RECORDED  # not overwritten with the result for 2.0 kWh
        assert await reconciler.run_once() == 1
        done = await repo.get(pid)
        assert done is not None
        assert done["realised_emissions_g"] == pytest.approx(0.5 * 120.0)
    finally:
        await recorder.aclose()
