"""Group commit against both real engines: gathering, idempotency within and across batches,
a failed batch retried whole and in order, the deadline → queued path, the stored form.

Failures and slowness are real: the table is renamed away (every INSERT fails as it would with a
broken schema or connection) or another connection holds the write lock (the database is slow).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon_optimizer.ledger import batch_insert, db
from carbon_optimizer.ledger.ledger import IdempotencyConflict, fingerprint
from carbon_optimizer.ledger.models import placements
from carbon_optimizer.ledger.recorder import Deferred, Recorder
from carbon_optimizer.ledger.repository import Existing, LedgerRepository
from carbon_optimizer.ledger.rows import OPTIMIZE_COLUMNS
from carbon_optimizer.settings import DatabaseSettings
from tests.ledger.helpers import T0, make_ledger, option, placement_row
from tests.support.polling import eventually

REQUEST = {"workload": {"duration_minutes": 120, "vcpus": 4}, "locations": [{"zone": "DE"}, {"zone": "FR"}]}
RESULT = {"best": option("FR", T0), "baseline": option("DE", T0, intensity=400), "warnings": []}


class Observed:
    """The real repository; notes the ids of every batch it was given and of those committed."""

    def __init__(self, repository: LedgerRepository) -> None:
        self.repository = repository
        self.attempted: list[list[str]] = []
        self.committed: list[list[str]] = []

    async def insert_placements(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Existing]:
        ids = [str(r["id"]) for r in rows]
        self.attempted.append(ids)
        existing = await self.repository.insert_placements(rows)
        self.committed.append(ids)
        return existing

    async def close(self) -> None:
        await self.repository.close()


async def _stored_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(placements.c.id))).scalars())


async def _stored_columns(engine: AsyncEngine, columns: str) -> dict[str, tuple[Any, ...]]:
    """Each stored row's raw values of `columns` (comma-separated names), by id."""
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"SELECT id, {columns} FROM ledger_placements")
        return {r[0]: tuple(r[1:]) for r in result}


@asynccontextmanager
async def _table_away(engine: AsyncEngine) -> AsyncIterator[None]:
    """The placements table is gone while inside: every write fails for real."""
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE ledger_placements RENAME TO ledger_placements_away"))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE ledger_placements_away RENAME TO ledger_placements"))


@asynccontextmanager
async def _write_locked(engine: AsyncEngine) -> AsyncIterator[None]:
    """Another connection holds the write lock while inside: the writer's commit waits (slow)."""
    if engine.dialect.name == "sqlite":
        other = sqlite3.connect(str(engine.url.database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    async with engine.connect() as conn:
        await conn.execute(text("LOCK TABLE ledger_placements IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await conn.rollback()


async def test_rows_gather_into_one_commit_and_a_waiter_flushes_at_once(engine: AsyncEngine) -> None:
    observed = Observed(LedgerRepository(engine))
    ledger, recorder = make_ledger(
        observed.repository,
        write_timeout_s=0,  # optimize does not wait (the default)
        caller_write_timeout_s=20,
        commit_interval_s=30,  # far longer than the test: only a waiter can make it write
        writer=observed,
    )
    try:
        answers = [
            await ledger.record_optimize(
                request=REQUEST, result=RESULT, client_id="alice", request_id=f"r{i}", idempotency_key=None
            )
            for i in range(5)
        ]
        keyed = [
            await ledger.record_optimize(
                request=REQUEST, result=RESULT, client_id="alice", request_id="rk", idempotency_key="k"
            )
            for _ in range(2)  # a retry while the first is still queued: joins it
        ]
        assert all(a["queued"] and not a["recorded"] for a in answers + keyed)
        assert keyed[0]["placement_id"] == keyed[1]["placement_id"]
        assert recorder.depth == 6
        assert observed.attempted == []  # gathering: nothing written yet

        began = time.monotonic()
        ack = await ledger.record_caller(
            body={"chosen": option("DE", T0)}, client_id="alice", request_id="rc", idempotency_key="c"
        )
        assert ack.recorded
        assert time.monotonic() - began < 10  # not the 30 s interval
        expected = [a["placement_id"] for a in answers] + [keyed[0]["placement_id"], ack.placement_id]
        assert observed.committed == [expected]  # one transaction, in submission order
        assert await _stored_ids(engine) == set(expected)
    finally:
        await recorder.aclose()


async def test_idempotency_within_one_batch_and_across_batches(engine: AsyncEngine) -> None:
    repository = LedgerRepository(engine)
    recorder = Recorder(
        repository, queue_max=100, write_timeout_s=20, retry_interval_s=0.05, commit_interval_s=30
    )
    recorder.start()
    try:
        first = placement_row("p-k", key="k", fingerprint="A")
        recorder.offer(first, origin="optimize")  # queued, gathering
        same, other = (
            asyncio.create_task(
                recorder.submit(placement_row("p-k", key="k", fingerprint="A"), origin="caller")
            ),
            asyncio.create_task(
                recorder.submit(placement_row("p-k", key="k", fingerprint="B"), origin="caller")
            ),
        )
        # Both retries joined the queued row; one batch writes it once and tells each what it was.
        replay, conflict = await asyncio.gather(same, other)
        assert replay.recorded
        assert replay.written is not None
        assert replay.written.replayed
        assert conflict.written is not None
        assert conflict.written.conflict
        assert not conflict.recorded
        assert await repository.count() == 1

        # Across batches: the id is in the database now.
        again = await recorder.submit(placement_row("p-k", key="k", fingerprint="A"), origin="caller")
        assert again.written is not None
        assert again.written.replayed
        reused = await recorder.submit(placement_row("p-k", key="k", fingerprint="C"), origin="caller")
        assert reused.written is not None
        assert reused.written.conflict
        # A batch mixing a stored id and a new one: the new one is written, the stored one left alone.
        recorder.offer(placement_row("p-k", key="k", fingerprint="A"), origin="optimize")
        fresh = await recorder.submit(placement_row("p-new", key="n"), origin="caller")
        assert fresh.written is not None
        assert not fresh.written.replayed
        assert await _stored_ids(engine) == {"p-k", "p-new"}
    finally:
        await recorder.aclose()


async def test_optimize_retry_with_a_reused_key_is_a_conflict_across_batches(engine: AsyncEngine) -> None:
    ledger, recorder = make_ledger(LedgerRepository(engine), write_timeout_s=20)
    try:
        args: dict[str, Any] = {
            "result": RESULT,
            "client_id": "alice",
            "request_id": "r",
            "idempotency_key": "k",
        }
        first = await ledger.record_optimize(request=REQUEST, **args)
        again = await ledger.record_optimize(request=REQUEST, **args)
        assert first["recorded"]
        assert again["recorded"]
        assert first["placement_id"] == again["placement_id"]
        with pytest.raises(IdempotencyConflict):
            await ledger.record_optimize(request={**REQUEST, "locations": [{"zone": "PL"}]}, **args)
        assert await ledger.repository.count() == 1
    finally:
        await recorder.aclose()


async def test_only_a_keyed_optimize_row_stores_the_fingerprint_its_retries_are_checked_by(
    engine: AsyncEngine,
) -> None:
    ledger, recorder = make_ledger(LedgerRepository(engine), write_timeout_s=20)
    try:
        args: dict[str, Any] = {"request": REQUEST, "result": RESULT, "client_id": "alice", "request_id": "r"}
        plain = await ledger.record_optimize(**args, idempotency_key=None)
        keyed = await ledger.record_optimize(**args, idempotency_key="k")
        assert plain["recorded"]
        assert keyed["recorded"]
        unkeyed_row = await ledger.repository.get(plain["placement_id"])
        keyed_row = await ledger.repository.get(keyed["placement_id"])
        assert unkeyed_row is not None
        assert keyed_row is not None
        assert unkeyed_row["fingerprint"] is None  # a new random id: nothing is ever compared with it
        assert keyed_row["fingerprint"] == fingerprint(REQUEST)
        assert unkeyed_row["workload"] == keyed_row["workload"] == REQUEST["workload"]
    finally:
        await recorder.aclose()


async def test_a_failed_batch_is_retried_whole_in_order_and_nothing_is_lost(engine: AsyncEngine) -> None:
    observed = Observed(LedgerRepository(engine))
    recorder = Recorder(observed, queue_max=100, write_timeout_s=0.05, retry_interval_s=0.05)
    recorder.start()
    ids = [f"p{i}" for i in range(9)]
    try:
        async with _table_away(engine):
            for pid in ids[:5]:
                recorder.offer(Deferred(pid, partial(placement_row, pid)), origin="optimize")
            await eventually(lambda: not recorder.healthy, 10.0)  # a batch failed for real
            for pid in ids[5:8]:
                recorder.offer(placement_row(pid), origin="optimize")
            # Waiting while the database fails: the deadline passes, the answer is "queued".
            late = await recorder.submit(placement_row(ids[8]), origin="caller")
            assert late.queued
            assert late.timed_out
            await eventually(lambda: len(observed.attempted) >= 3, 10.0)  # retried, still failing
            assert observed.committed == []
            assert recorder.depth == 9
        await eventually(lambda: recorder.depth == 0, 10.0)
        assert recorder.healthy
        # Every failed attempt started with the oldest row; what was committed is everything, in order.
        assert all(batch[0] == "p0" for batch in observed.attempted[: -len(observed.committed)])
        assert [pid for batch in observed.committed for pid in batch] == ids
        assert await _stored_ids(engine) == set(ids)
    finally:
        await recorder.aclose()


async def test_slow_database_deadline_answers_queued_then_commits(engine: AsyncEngine) -> None:
    repository = LedgerRepository(engine)
    ledger, recorder = make_ledger(repository, write_timeout_s=0.2)
    try:
        async with _write_locked(engine):
            began = time.monotonic()
            fields = await ledger.record_optimize(
                request=REQUEST, result=RESULT, client_id="alice", request_id="r", idempotency_key="slow"
            )
            assert time.monotonic() - began < 2.0  # the deadline, not the lock, decides
            assert fields["queued"] is True
            assert fields["recorded"] is False
            assert "queued in memory" in fields["warning"]
            assert recorder.depth == 1
        await eventually(lambda: recorder.depth == 0, 10.0)
        assert await _stored_ids(engine) == {fields["placement_id"]}
        # The client retries with the same key: an idempotent replay of the committed row.
        again = await ledger.record_optimize(
            request=REQUEST, result=RESULT, client_id="alice", request_id="r2", idempotency_key="slow"
        )
        assert again["recorded"] is True
        assert again["placement_id"] == fields["placement_id"]
        assert await repository.count() == 1
    finally:
        await recorder.aclose()


async def test_the_batch_path_stores_what_the_generic_path_stores(engine: AsyncEngine) -> None:
    fast, generic = LedgerRepository(engine), LedgerRepository(engine, fast_insert=False)
    try:
        row = placement_row("x", key="same")
        await fast.insert_placements([{**row, "id": "fast", "idempotency_key": "a", "quality": {"n": 1.5}}])
        await generic.insert_placements(
            [{**row, "id": "generic", "idempotency_key": "b", "quality": {"n": 1.5}}]
        )
        one, other = await fast.get("fast"), await generic.get("generic")
        assert one is not None
        assert other is not None
        skip = {"id", "idempotency_key"}
        assert {k: v for k, v in one.items() if k not in skip} == {
            k: v for k, v in other.items() if k not in skip
        }
        async with engine.connect() as conn:  # the raw stored values (datetime text on SQLite)
            raw: dict[str, tuple[Any, ...]] = {
                r[0]: tuple(r[1:])
                for r in await conn.exec_driver_sql(
                    "SELECT id, created_at, start_at, due_at, quality FROM ledger_placements"
                )
            }
        assert raw["fast"][:3] == raw["generic"][:3]
        quality = [v if isinstance(v, dict) else json.loads(v) for v in (raw["fast"][3], raw["generic"][3])]
        assert quality[0] == quality[1] == {"n": 1.5}
        # A JSON column may come as its text (the optimize path): both paths store the object.
        for repository, pid in ((fast, "fast-text"), (generic, "generic-text")):
            await repository.insert_placements(
                [{**row, "id": pid, "idempotency_key": pid, "quality": '{"n":1.5}'}]
            )
            got = await repository.get(pid)
            assert got is not None
            assert got["quality"] == {"n": 1.5}
    finally:
        await fast.close()


async def test_the_batch_path_stores_any_datetime_and_many_rows_as_the_generic_path(
    engine: AsyncEngine,
) -> None:
    # The batch path converts each distinct datetime once (memoised) and writes SQLite rows as
    # multi-row INSERTs of up to 64 rows: 150 rows take three statements, and the same instants
    # come again in other time zones and with microseconds; every one must be stored exactly as
    # SQLAlchemy's own bind processors store it.
    fast, generic = LedgerRepository(engine), LedgerRepository(engine, fast_insert=False)
    plus2 = timezone(timedelta(hours=2))

    def rows(prefix: str) -> list[dict[str, Any]]:
        out = []
        for i in range(150):
            row = placement_row(f"{prefix}-{i}")
            micro = T0 + timedelta(hours=i % 7, microseconds=(i * 7919) % 1_000_000)
            row.update(
                created_at=micro,
                start_at=(T0 + timedelta(hours=i % 5)).astimezone(plus2),  # the same instants, +02:00
                end_at=T0 + timedelta(hours=i % 5 + 2),
                due_at=micro.astimezone(plus2),
                energy_kwh=float(i),
            )
            out.append(row)
        return out

    try:
        await fast.insert_placements(rows("fast"))
        await generic.insert_placements(rows("generic"))
        stored = await _stored_columns(engine, "created_at, start_at, end_at, due_at, energy_kwh")
        assert len(stored) == 300
        for i in range(150):
            assert stored[f"fast-{i}"] == stored[f"generic-{i}"], i
        got = await fast.get("fast-149")
        assert got is not None
        assert got["created_at"] == T0 + timedelta(hours=149 % 7, microseconds=(149 * 7919) % 1_000_000)
        assert got["start_at"] == T0 + timedelta(hours=149 % 5)
    finally:
        await fast.close()


@pytest.mark.parametrize("created_zone", [UTC, timezone(timedelta(hours=2))], ids=["UTC", "+02:00"])
@pytest.mark.parametrize(
    ("answers", "variable_limit"),
    [(2, None), (1, None), (1, 999)],
    ids=["two answers and a caller's row", "one answer", "one answer under an old parameter limit"],
)
async def test_optimize_rows_sharing_answer_parts_are_stored_as_the_generic_path_stores_them(
    engine: AsyncEngine, answers: int, variable_limit: int | None, created_zone: timezone
) -> None:
    # An optimize row is its answer's shared part plus its own request's values, and the batch
    # path converts the shared part once per answer. Rows of two answers, keyed and not, and a
    # plain dict row (POST /v1/placements) in the same batch, or rows of one answer (on SQLite
    # its columns are then bound once per statement, `_shared_sql`, in chunks under SQLite's old
    # 999-parameter limit), must each be stored exactly as the generic path stores the same row.
    # `created_at` is converted per batch (`_sqlite_datetimes`: one orjson call when all are UTC,
    # some of them at a whole second), else one by one: both forms are checked.
    fast, generic = LedgerRepository(engine), LedgerRepository(engine, fast_insert=False)
    if variable_limit is not None:
        if not isinstance(fast._inserter, batch_insert._SqliteInserter):
            pytest.skip("a SQLite limit")
        fast._inserter._connect().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
    ledger, recorder = make_ledger(fast)
    other = {**RESULT, "best": option("PL", T0 + timedelta(hours=2), kwh=2.0), "warnings": ["w"]}

    def rows(prefix: str) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for i in range(140):
            micro = (i * 7919) % 1_000_000 if i % 5 else 0
            created = (T0 + timedelta(seconds=i, microseconds=micro)).astimezone(created_zone)
            key = f"{prefix}-k{i}" if i % 3 == 0 else None
            result = RESULT if i % 2 or answers == 1 else other
            out.append(ledger._optimize_row(f"{prefix}-{i}", REQUEST, result, "alice", created, f"r{i}", key))
        if answers == 2:  # a caller's row has the same columns (`Ledger._row`), as a plain dict
            out.append(dict.fromkeys(OPTIMIZE_COLUMNS) | placement_row(f"{prefix}-caller", key=f"{prefix}-c"))
        return out

    try:
        made = rows("fast")
        assert type(made[0]).__name__ == "OptimizeRow"
        await fast.insert_placements(made)
        await generic.insert_placements(rows("generic"))
        async with engine.connect() as conn:
            result = await conn.exec_driver_sql("SELECT * FROM ledger_placements")
            names = list(result.keys())
            stored = {r[0]: dict(zip(names, r, strict=True)) for r in result}
        assert len(stored) == 282 if answers == 2 else 280
        for suffix in [*(str(i) for i in range(140)), *(["caller"] if answers == 2 else [])]:
            one, two = stored[f"fast-{suffix}"], stored[f"generic-{suffix}"]
            for column in ("id", "idempotency_key", "request_id"):  # named after the prefix
                one.pop(column), two.pop(column)
            for column in ("quality", "workload"):  # JSON text: the same object, spacing aside
                one[column], two[column] = (
                    v if isinstance(v, dict) else json.loads(v) for v in (one[column], two[column])
                )
            assert one == two, suffix
        got = await fast.get("fast-1")
        assert got is not None
        assert got["created_at"] == T0 + timedelta(seconds=1, microseconds=7919)
        assert got["workload"] == REQUEST["workload"]
        assert got["zone"] == "FR"
        assert (await fast.get("fast-0") or {})["zone"] == ("PL" if answers == 2 else "FR")
    finally:
        await recorder.aclose()
        await fast.close()


def _same_stored(one: Any, two: Any) -> bool:
    return one == two or (
        isinstance(one, float) and isinstance(two, float) and math.isnan(one) and math.isnan(two)
    )


@pytest.mark.parametrize("shared", [False, True], ids=["plain rows", "rows of one answer part"])
async def test_non_finite_floats_are_stored_as_the_generic_path_stores_them(
    engine: AsyncEngine, shared: bool
) -> None:
    # On PostgreSQL a batch travels as one JSON document, and JSON has no NaN or infinity
    # (orjson writes null): such a batch must take `executemany` and keep the values. The floats
    # are in nullable columns, which SQLite stores NaN in as NULL; either way, both paths agree.
    fast, generic = LedgerRepository(engine), LedgerRepository(engine, fast_insert=False)
    ledger, recorder = make_ledger(fast)
    odd = {**RESULT, "best": {**option("FR", T0), "cost_usd": math.nan}}
    odd["baseline"] = {**option("DE", T0, intensity=400), "cost_usd": math.inf}

    def rows(prefix: str) -> list[Mapping[str, Any]]:
        if shared:
            return [
                ledger._optimize_row(f"{prefix}-{i}", REQUEST, odd, "alice", T0, f"r{i}", None)
                for i in range(3)
            ]
        return [
            {**placement_row(f"{prefix}-{i}"), "cost_usd": math.nan, "baseline_cost_usd": -math.inf}
            for i in range(3)
        ]

    try:
        await fast.insert_placements(rows("fast"))
        await generic.insert_placements(rows("generic"))
        stored = await _stored_columns(engine, "cost_usd, baseline_cost_usd")
        assert len(stored) == 6
        for i in range(3):
            one, two = stored[f"fast-{i}"], stored[f"generic-{i}"]
            assert all(_same_stored(a, b) for a, b in zip(one, two, strict=True)), (one, two)
        assert stored["fast-0"][1] == (math.inf if shared else -math.inf)
        if engine.dialect.name == "postgresql":
            assert math.isnan(stored["fast-0"][0])
    finally:
        await recorder.aclose()
        await fast.close()


async def test_of_two_rows_with_one_id_in_a_batch_the_first_is_kept(engine: AsyncEngine) -> None:
    # A batch is inserted in its order on both engines (one multi-row INSERT on SQLite, one
    # document unpacked in order on PostgreSQL): a row whose id comes again later in the batch
    # is the one stored, as with one INSERT per row.
    fast = LedgerRepository(engine)
    try:
        first = {**placement_row("same"), "request_id": "first"}
        rows = [
            placement_row("a"),
            first,
            {**placement_row("same"), "request_id": "second"},
            placement_row("b"),
        ]
        await fast.insert_placements(rows)
        got = await fast.get("same")
        assert got is not None
        assert got["request_id"] == "first"
        assert await _stored_ids(engine) == {"a", "same", "b"}
    finally:
        await fast.close()


@pytest.mark.parametrize("variable_limit", [None, 999], ids=["one statement", "chunks under an old limit"])
async def test_sqlite_batches_of_any_size_store_each_row_once(
    tmp_path: Path, variable_limit: int | None
) -> None:
    # A batch above 64 rows is one INSERT padded with copies of its last row (ignored as
    # conflicts) to a multiple of 64; under SQLite's old 999-parameter limit it is chunks in one
    # transaction. Either way each row is stored once, and a keyed row that exists is reported.
    engine = db.create_engine(DatabaseSettings(data_dir=str(tmp_path)))
    await db.upgrade(engine)
    repository = LedgerRepository(engine)
    try:
        inserter = repository._inserter
        assert isinstance(inserter, batch_insert._SqliteInserter)
        if variable_limit is not None:
            inserter._connect().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
        sizes = (1, 64, 65, 130, 500)
        for size in sizes:
            assert (
                await repository.insert_placements([placement_row(f"s{size}-{i}") for i in range(size)]) == {}
            )
        again = [placement_row("s130-7", key="k7", fingerprint="f"), placement_row("fresh", key="k8")]
        assert set(await repository.insert_placements(again)) == {"s130-7"}
        stored = await _stored_ids(engine)
        assert stored == {f"s{size}-{i}" for size in sizes for i in range(size)} | {"fresh"}
        assert await repository.count() == sum(sizes) + 1
    finally:
        await repository.close()
        await engine.dispose()


@given(
    st.lists(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
        max_size=70,
    ),
    st.booleans(),
)
def test_datetimes_one_by_one_and_a_batch_of_them_are_stored_as_sqlalchemy_stores_each(
    values: list[datetime], other_zone: bool
) -> None:
    # `_sqlite_datetimes` formats a batch of UTC datetimes in one orjson call and cuts the text
    # into SQLite's stored form; any other value in the batch sends the whole batch one by one.
    # `_sqlite_datetime` formats one the same way (orjson for aware UTC, else `isoformat`).
    # Both must give exactly what SQLAlchemy's own DateTime bind processor stores.
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    if other_zone and values:
        values = [*values[:-1], values[-1].astimezone(timezone(timedelta(hours=-5)))]
    dialect = sqlite.dialect()
    processor = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    expected = [processor(v.astimezone(UTC).replace(tzinfo=None)) for v in values]
    assert batch_insert._sqlite_datetimes(values) == expected
    assert [batch_insert._sqlite_datetime(v) for v in values] == expected
