"""SQLite's daily report rollups give the very sums the placements give, whatever wrote them.

The oracle is the raw query (`aggregate(..., rollups=False)`), which sums the placements
themselves. Each test drives a real engine through the paths that change placements: the
writer's fast path, the generic path, a statement that goes around the repository, the
reconciler's updates, a reported outcome, deletes, and (SQLite) the watermark's catch-up at
any point or not at all. After every step, every grouping, scope and kind of range must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon_optimizer.ledger import db, rollups
from carbon_optimizer.ledger.models import RECONCILED, placements, rollup_client, rollup_state
from carbon_optimizer.ledger.reconciler import Reconciler
from carbon_optimizer.ledger.reports import GROUP_BY, group_key
from carbon_optimizer.ledger.repository import LedgerRepository, to_db
from carbon_optimizer.settings import DatabaseSettings, LedgerSettings
from tests.fakes import FakeCarbon
from tests.ledger.helpers import T0, make_ledger, option, placement_row, record

CLIENTS = ("alice", "bob", "carol")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite ledger (the rollups are SQLite's alone: migration 0003)."""
    eng = db.create_engine(DatabaseSettings(data_dir=str(tmp_path)))
    await db.upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


LOCATIONS = ("zone/DE", "zone/FR", "aws/eu-west-1")


def _row(rng: random.Random, n: int) -> dict[str, Any]:
    start = T0 + timedelta(minutes=rng.randrange(0, 9 * 24 * 60))  # nine days from a Monday
    row = placement_row(f"p{n:05d}", client=rng.choice(CLIENTS))
    kwh = rng.uniform(0.1, 5.0)
    row.update(
        location=rng.choice(LOCATIONS),
        start_at=start,
        end_at=start + timedelta(hours=2),
        due_at=start + timedelta(hours=2),
        energy_kwh=kwh,
        emissions_g=kwh * rng.uniform(20, 500),
    )
    # Every row has every key (one executemany needs one shape); None where there is no value.
    with_baseline = rng.random() < 0.7
    row.update(
        baseline_emissions_g=kwh * rng.uniform(20, 500) if with_baseline else None,
        baseline_name="b" if with_baseline else None,
        cost_usd=rng.uniform(0, 3) if rng.random() < 0.6 else None,
        baseline_cost_usd=rng.uniform(0, 3) if rng.random() < 0.6 else None,
    )
    return row


def _realised(rng: random.Random, row: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": RECONCILED,
        "reconciled_at": T0 + timedelta(days=10),
        "realised_energy_kwh": row["energy_kwh"] * rng.uniform(0.8, 1.2),
        "realised_emissions_g": row["emissions_g"] * rng.uniform(0.7, 1.3),
        "realised_source": rng.choice(["fallback:bundled", "electricitymaps"]),
    }
    if rng.random() < 0.8:
        values["realised_baseline_emissions_g"] = rng.uniform(10, 900)
    return values


def _ranges(rng: random.Random) -> list[tuple[datetime, datetime]]:
    odd = T0 + timedelta(hours=rng.randrange(1, 40), minutes=rng.randrange(60))
    return [
        (T0, T0 + timedelta(days=14)),  # whole days only
        (odd, odd + timedelta(days=rng.randrange(2, 8), hours=rng.randrange(1, 23))),  # partial edges
        (odd, odd + timedelta(hours=5)),  # inside one day
        (T0 + timedelta(days=2), T0 + timedelta(days=3)),  # exactly one day
    ]


def _same(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]], where: str) -> None:
    def keyed(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        # A group whose placements all left (deleted) may stay in a rollup as zeros.
        return {str(r["group"]): dict(r) for r in rows if r["placements"]}  # keys as the engine returns them

    g, w = keyed(got), keyed(want)
    assert g.keys() == w.keys(), where
    for key, expected in w.items():
        for name, value in expected.items():
            if name == "group":
                continue
            assert g[key][name] == pytest.approx(float(value or 0), rel=1e-9, abs=1e-6), (where, key, name)


async def _agree(repo: LedgerRepository, rng: random.Random, step: str) -> None:
    for start, end in _ranges(rng):
        for group_by in GROUP_BY:
            for client in (None, rng.choice(CLIENTS)):
                got = await repo.aggregate(group_by, start, end, client)
                want = await repo.aggregate(group_by, start, end, client, rollups=False)
                _same(got, want, f"{step}: {group_by} {client} {start}..{end}")


async def _raw_insert(engine: AsyncEngine, rows: Sequence[Mapping[str, Any]]) -> None:
    """Around the repository (a manual import): the rollups must notice all the same."""
    from carbon_optimizer.ledger.repository import _row_to_db

    async with engine.begin() as conn:
        await conn.execute(insert(placements), [_row_to_db(r) for r in rows])


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_rollups_agree_with_the_placements_through_every_write_path(
    engine: AsyncEngine, seed: int
) -> None:
    rng = random.Random(seed)
    fast, generic = LedgerRepository(engine), LedgerRepository(engine, fast_insert=False)
    stored: dict[str, dict[str, Any]] = {}
    n = 0
    try:
        for step in range(14):
            action = rng.choice(["fast", "fast", "generic", "raw", "reconcile", "outcome", "delete", "roll"])
            if action in ("fast", "generic", "raw"):
                rows = [_row(rng, n + i) for i in range(rng.randrange(1, 40))]
                n += len(rows)
                if action == "raw":
                    await _raw_insert(engine, rows)
                else:
                    await (fast if action == "fast" else generic).insert_placements(rows)
                    # A retried batch: the stored rows are left alone, and not counted twice.
                    await fast.insert_placements(rows[: rng.randrange(0, 3)])
                stored.update((r["id"], r) for r in rows)
            elif action == "reconcile" and stored:
                picked = rng.sample(sorted(stored), min(len(stored), rng.randrange(1, 15)))
                await fast.save_reconciliation([(i, None, _realised(rng, stored[i])) for i in picked])
            elif action == "outcome" and stored:
                pid = rng.choice(sorted(stored))
                # An outcome re-queues the placement: its realised figures are cleared.
                await fast.set_outcome(
                    pid,
                    {
                        "measured_energy_kwh": 2.5,
                        "outcome_at": T0 + timedelta(days=11),
                        "status": "recorded",
                        "realised_emissions_g": None,
                        "realised_baseline_emissions_g": None,
                        "realised_energy_kwh": None,
                        "realised_source": None,
                    },
                )
            elif action == "delete" and stored:
                gone = rng.sample(sorted(stored), min(len(stored), rng.randrange(1, 4)))
                async with engine.begin() as conn:
                    await conn.execute(delete(placements).where(placements.c.id.in_(gone)))
                for pid in gone:
                    stored.pop(pid)
            elif action == "roll":
                await fast.roll_up()
            await _agree(fast, rng, f"seed {seed} step {step} {action}")
        await fast.roll_up()
        await _agree(fast, rng, f"seed {seed} after roll_up")
        totals = await fast.aggregate("client", T0 - timedelta(days=1), T0 + timedelta(days=30), None)
        assert sum(r["placements"] for r in totals) == len(stored)
    finally:
        await fast.close()
        await generic.close()


async def test_a_start_field_change_moves_the_placement_between_rollup_rows(engine: AsyncEngine) -> None:
    # The app never moves a placement's planned start, client or location, but a manual fix may:
    # the old day's row gives it up, the new day's takes it.
    repo = LedgerRepository(engine)
    try:
        await repo.insert_placements([placement_row("a"), placement_row("b")])
        await repo.roll_up()
        async with engine.begin() as conn:
            await conn.execute(
                update(placements)
                .where(placements.c.id == "a")
                .values(start_at=to_db(T0 + timedelta(days=3)), client_id="bob", location="zone/FR")
            )
        days = await repo.aggregate("day", T0, T0 + timedelta(days=7), None)
        assert [(group_key(r["group"], "day"), r["placements"]) for r in days if r["placements"]] == [
            ("2026-06-01", 1),
            ("2026-06-04", 1),
        ]
        for group_by in GROUP_BY:
            _same(
                await repo.aggregate(group_by, T0, T0 + timedelta(days=7), None),
                await repo.aggregate(group_by, T0, T0 + timedelta(days=7), None, rollups=False),
                group_by,
            )
    finally:
        await repo.close()


async def test_sqlite_reports_count_rows_past_the_watermark_once(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    try:
        await repo.insert_placements([placement_row("r0")])
        await _raw_insert(engine, [placement_row(f"r{i}") for i in range(1, 5)])  # around the writer
        async with engine.connect() as conn:
            mark = (await conn.execute(select(rollup_state.c.last_rowid))).scalar_one()
            newest = (await conn.execute(text("SELECT max(rowid) FROM ledger_placements"))).scalar_one()
        assert mark < newest  # not rolled up yet: the report's raw part counts them
        week = (T0, T0 + timedelta(days=7))
        assert [r["placements"] for r in await repo.aggregate("day", *week, None)] == [5]
        assert await repo.roll_up() == newest - mark
        assert await repo.roll_up() == 0  # nothing new
        assert [r["placements"] for r in await repo.aggregate("day", *week, None)] == [5]
        async with engine.connect() as conn:
            rolled = (await conn.execute(select(func.sum(rollup_client.c.placements)))).scalar_one()
        assert rolled == 5
    finally:
        await repo.close()


async def test_sqlite_a_deleted_newest_row_does_not_hide_the_next_insert(engine: AsyncEngine) -> None:
    # SQLite may give the next row the rowid of a deleted newest row; the watermark must then
    # fall back, or that new row would count as rolled up when it is not.
    repo = LedgerRepository(engine)
    try:
        await repo.insert_placements([placement_row("old"), placement_row("newest")])
        await repo.roll_up()
        async with engine.begin() as conn:
            await conn.execute(delete(placements).where(placements.c.id == "newest"))
        await repo.insert_placements([placement_row("next")])
        async with engine.connect() as conn:
            reused = (
                await conn.execute(text("SELECT rowid FROM ledger_placements WHERE id = 'next'"))
            ).scalar_one()
        assert reused == 2  # the case this guards against
        week = (T0, T0 + timedelta(days=7))
        for group_by in GROUP_BY:
            got = await repo.aggregate(group_by, *week, None)
            assert sum(r["placements"] for r in got) == 2, group_by
        await repo.roll_up()
        assert sum(r["placements"] for r in await repo.aggregate("month", *week, None)) == 2
    finally:
        await repo.close()


async def test_the_sqlite_writer_catches_up_on_its_own(engine: AsyncEngine) -> None:
    repo = LedgerRepository(engine)
    try:
        await repo.insert_placements([placement_row("first")])
        await asyncio.sleep(rollups.INTERVAL_S + 0.1)
        await repo.insert_placements([placement_row("second")])  # a second later: catches up
        async with engine.connect() as conn:
            mark = (await conn.execute(select(rollup_state.c.last_rowid))).scalar_one()
            rolled = (await conn.execute(select(func.sum(rollup_client.c.placements)))).scalar_one()
        assert (mark, rolled) == (2, 2)
    finally:
        await repo.close()


def test_catch_up_is_due_after_an_interval_or_enough_rows() -> None:
    now = [100.0]
    due = rollups.Due(clock=lambda: now[0])
    assert not due.written(10)
    now[0] += rollups.INTERVAL_S
    assert due.written(1)
    assert not due.written(rollups.EVERY_ROWS - 1)
    assert due.written(1)  # the rows since the last catch-up reached EVERY_ROWS
    assert not due.written(1)


async def test_concurrent_writers_keep_the_rollups_exact(engine: AsyncEngine) -> None:
    # Two writers at once (two replicas, or two gunicorn workers on one SQLite file).
    rng = random.Random(7)
    repos = [LedgerRepository(engine), LedgerRepository(engine)]
    try:

        async def write(repo: LedgerRepository, base: int) -> None:
            for k in range(8):
                await repo.insert_placements([_row(rng, base + 100 * k + i) for i in range(25)])

        await asyncio.gather(write(repos[0], 0), write(repos[1], 50))
        await _agree(repos[0], rng, "after concurrent writes")
        await repos[0].roll_up()
        await _agree(repos[0], rng, "after roll_up")
    finally:
        for repo in repos:
            await repo.close()


async def test_the_migration_backfills_what_was_stored_before_it(tmp_path: Path) -> None:
    engine = db.create_engine(DatabaseSettings(data_dir=str(tmp_path)))
    rng = random.Random(11)
    try:
        await db.upgrade(engine, "0002_report_statistics")
        rows = [_row(rng, i) for i in range(60)]
        await _raw_insert(engine, rows)
        async with engine.begin() as conn:  # some of them reconciled already
            for row in rows[:20]:
                values = _realised(rng, row)
                stored = {**values, "reconciled_at": to_db(values["reconciled_at"])}
                await conn.execute(update(placements).where(placements.c.id == row["id"]).values(**stored))
        await db.upgrade(engine)
        repo = LedgerRepository(engine)
        try:
            async with engine.connect() as conn:
                rolled = (await conn.execute(select(func.sum(rollup_client.c.placements)))).scalar_one()
            assert rolled == 60  # in the rollups themselves, not only through the raw part
            await _agree(repo, rng, "after the migration")
            await repo.insert_placements([_row(rng, 100 + i) for i in range(5)])
            await _agree(repo, rng, "a write after the migration")
        finally:
            await repo.close()
        await db.downgrade(engine, "0002_report_statistics")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(__import__("sqlalchemy").inspect(c).get_table_names()))
            count = (await conn.execute(select(func.count()).select_from(placements))).scalar_one()
        assert not {t for t in tables if t.startswith("ledger_rollup")}
        assert count == 65  # the placements stay; and with the triggers gone, writes still work
        await _raw_insert(engine, [_row(rng, 200)])
    finally:
        await engine.dispose()


async def test_report_periods_use_utc_days(engine: AsyncEngine) -> None:
    # 23:30 UTC on 1 June is 2 June in Berlin: it belongs to 1 June's rollup row.
    repo = LedgerRepository(engine)
    try:
        late = {**placement_row("late"), "start_at": datetime(2026, 6, 1, 23, 30, tzinfo=UTC)}
        await repo.insert_placements([late])
        await repo.roll_up()
        days = await repo.aggregate("day", T0, T0 + timedelta(days=3), None)
        assert [(group_key(r["group"], "day"), r["placements"]) for r in days] == [("2026-06-01", 1)]
        # A range that starts at 23:00 reads that day's placements raw, not the day's rollup row.
        evening = await repo.aggregate(
            "day", T0 + timedelta(hours=23, minutes=45), T0 + timedelta(days=3), None
        )
        assert [r["placements"] for r in evening] == []
    finally:
        await repo.close()


class _CatchUpFails(LedgerRepository):
    """A repository whose rollup catch-up always fails (a locked file, say)."""

    async def roll_up(self) -> int:
        raise sqlite3.OperationalError("database is locked")


@pytest.mark.parametrize("catch_up_fails", [False, True])
async def test_the_reconcilers_loop_catches_up_and_a_failed_catch_up_costs_no_reconciliation(
    engine: AsyncEngine, catch_up_fails: bool
) -> None:
    repo = (_CatchUpFails if catch_up_fails else LedgerRepository)(engine)
    ledger, recorder = make_ledger(repo)
    try:
        pid = await record(ledger, "alice", option("DE", T0), None)
        await recorder.aclose()  # flushed; the writer stays idle from here on
        settings = LedgerSettings(reconcile_delay_s=0, reconcile_interval_s=0.05)
        carbon = FakeCarbon({"DE": lambda h: 120.0})
        reconciler = Reconciler(repo, carbon, settings=settings, clock=lambda: T0 + timedelta(hours=3))
        task = asyncio.create_task(reconciler.run_forever())
        status = None
        try:
            for _ in range(200):
                row = await repo.get(pid)
                status = None if row is None else row["status"]
                if status == RECONCILED:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert status == RECONCILED
        async with engine.connect() as conn:
            rolled = (await conn.execute(select(func.sum(rollup_client.c.placements)))).scalar()
        if not catch_up_fails:  # (failing, only the writer's own catch-up could have run)
            assert rolled == 1
        got = await repo.aggregate("client", T0, T0 + timedelta(days=1), None)
        assert [(r["placements"], r["reconciled"]) for r in got] == [(1, 1)]
    finally:
        await recorder.aclose()
        await repo.close()
