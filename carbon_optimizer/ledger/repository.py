"""Every SQL statement of the ledger, for SQLite and PostgreSQL alike.

Rows travel as plain dicts keyed by column name (see `models.placements`); datetimes are aware UTC
outside this module and naive UTC inside the database. Nothing here retries or queues: callers
(`recorder`, `reconciler`, the routes) decide what a failure means.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon_optimizer.ledger import batch_insert, rollups
from carbon_optimizer.ledger.models import RECORDED, leases, placements
from carbon_optimizer.ledger.rows import OptimizeRow

log = logging.getLogger(__name__)
_DATETIME_COLUMNS = frozenset(c.name for c in placements.columns if c.type.python_type is datetime)
_JSON_COLUMNS = frozenset(c.name for c in placements.columns if isinstance(c.type, JSON))


def to_db(value: datetime) -> datetime:
    """Aware → naive UTC (the stored form)."""
    if value.tzinfo is None:
        raise ValueError("ledger datetimes must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db(value: datetime | None) -> datetime | None:
    """Naive UTC (stored) → aware UTC."""
    return None if value is None else value.replace(tzinfo=UTC)


def _row_to_db(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: to_db(v) if k in _DATETIME_COLUMNS and isinstance(v, datetime) else v for k, v in row.items()
    }
    for name in _JSON_COLUMNS.intersection(out):
        text = out[name]
        if isinstance(text, str):  # JSON text already (see `models`): SQLAlchemy encodes again
            out[name] = orjson.loads(text)
    return out


def _row_from_db(row: Mapping[str, Any]) -> dict[str, Any]:
    # str(k): column keys are `quoted_name` (a str subclass orjson refuses as a dict key).
    return {str(k): from_db(v) if k in _DATETIME_COLUMNS else v for k, v in row.items()}


@dataclass(frozen=True, slots=True)
class Existing:
    """A placement that was already stored under the same id (an idempotent retry)."""

    id: str
    fingerprint: str | None


class LedgerRepository:
    """Async data access for placements, leases and reports."""

    def __init__(self, engine: AsyncEngine, *, fast_insert: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # The writer's own connection and one-INSERT-per-batch path (None: the generic one below).
        self._inserter = batch_insert.for_engine(engine) if fast_insert else None
        self._roll_due = rollups.Due()  # the generic path's (the fast inserter keeps its own)

    async def close(self) -> None:
        """Release the writer's connection (before the engine is disposed)."""
        if self._inserter is not None:
            await self._inserter.close()

    # ----- placements -----

    async def insert_placements(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Existing]:
        """Insert rows in one transaction; rows whose id exists are left alone.

        Returns the already-stored placements among `rows` (by id) so the caller can tell an
        idempotent replay (same fingerprint) from a key reused for a different request.
        """
        if not rows:
            return {}
        # Only ids derived from an Idempotency-Key can exist already (the others are random UUIDs).
        # (An optimize row's own attribute, read directly: `OptimizeRow.get` is a Python call.)
        ids = [
            str(r["id"])
            for r in rows
            if (r.idempotency_key if type(r) is OptimizeRow else r.get("idempotency_key")) is not None
        ]
        if self._inserter is not None:
            stored = await self._inserter.insert(rows, ids)
            return {pid: Existing(pid, fp) for pid, fp in stored}
        async with self.engine.begin() as conn:
            existing: dict[str, Existing] = {}
            if ids:
                found = await conn.execute(
                    select(placements.c.id, placements.c.fingerprint).where(placements.c.id.in_(ids))
                )
                existing = {row.id: Existing(row.id, row.fingerprint) for row in found}
            fresh = [_row_to_db(r) for r in rows if r["id"] not in existing]
            if fresh:
                await conn.execute(self._insert_ignoring_duplicates(), fresh)
        if self.dialect == "sqlite" and self._roll_due.written(len(rows)):
            try:
                await self.roll_up()
            except DBAPIError as exc:  # committed already: the rollups just trail (reports stay exact)
                log.warning("ledger rollup catch-up failed (%s); retrying later", type(exc).__name__)
        return existing

    async def roll_up(self) -> int:
        """SQLite: bring the report rollups up to every stored placement (`rollups`); return rows passed.

        PostgreSQL has no rollups: nothing to do. Reports are exact either way; this keeps the
        raw part of a SQLite report small (the writer calls it about once a second).
        """
        if self.dialect != "sqlite":
            return 0
        if self._inserter is not None:
            return await self._inserter.roll_up()
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda sync: rollups.catch_up_all(rollups.ConnectionSql(sync)))

    def _insert_ignoring_duplicates(self) -> Any:
        # Another replica may insert the same idempotent id between our SELECT and INSERT.
        if self.dialect == "postgresql":
            return postgresql.insert(placements).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            return sqlite.insert(placements).on_conflict_do_nothing()
        return insert(placements)

    async def get(self, placement_id: str) -> dict[str, Any] | None:
        """One placement, or None."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(placements).where(placements.c.id == placement_id))
            row = result.mappings().first()
        return None if row is None else _row_from_db(dict(row))

    async def set_outcome(self, placement_id: str, values: Mapping[str, Any]) -> None:
        """Store a reported outcome and queue the placement for (re-)reconciliation."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(placements).where(placements.c.id == placement_id).values(**_row_to_db(values))
            )

    # ----- reconciliation -----

    async def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Placements waiting for reconciliation whose time has come, oldest first."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                select(placements)
                .where(placements.c.status == RECORDED, placements.c.due_at <= to_db(now))
                .order_by(placements.c.due_at)
                .limit(limit)
            )
            return [_row_from_db(dict(r)) for r in result.mappings()]

    async def save_reconciliation(
        self, updates: Sequence[tuple[str, datetime | None, Mapping[str, Any]]]
    ) -> None:
        """Write the reconciler's results for one batch (one transaction).

        Each update is (id, the `outcome_at` the reconciler read, values). A row whose outcome
        changed meanwhile is left alone: its result was computed from stale inputs, and the row
        is due again with the new ones.
        """
        if not updates:
            return
        async with self.engine.begin() as conn:
            for placement_id, seen_outcome, values in updates:
                same_outcome = (
                    placements.c.outcome_at.is_(None)
                    if seen_outcome is None
                    else placements.c.outcome_at == to_db(seen_outcome)
                )
                await conn.execute(
                    update(placements)
                    .where(placements.c.id == placement_id, placements.c.status == RECORDED, same_outcome)
                    .values(**_row_to_db(values))
                )

    # ----- lease -----

    async def acquire_lease(self, name: str, holder: str, now: datetime, expires: datetime) -> bool:
        """Take or renew the named lease; False when another holder's lease has not expired."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    or_(leases.c.holder == holder, leases.c.expires_at < to_db(now)),
                )
                .values(holder=holder, expires_at=to_db(expires))
            )
            if result.rowcount:
                return True
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(leases).values(name=name, holder=holder, expires_at=to_db(expires)))
        except IntegrityError:
            return False  # someone else holds it
        return True

    async def release_lease(self, name: str, holder: str, now: datetime) -> None:
        """Give the lease up early (on shutdown) so another replica need not wait for expiry."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(leases)
                .where(and_(leases.c.name == name, leases.c.holder == holder))
                .values(expires_at=to_db(now))
            )

    # ----- reports -----

    async def aggregate(
        self, group_by: str, start: datetime, end: datetime, client_id: str | None, *, rollups: bool = True
    ) -> list[dict[str, Any]]:
        """Sums per group over placements planned to start in [start, end) (see `reports`).

        SQLite reads its daily rollups for whole days (migration 0003); PostgreSQL, and
        `rollups=False`, sum the placements themselves: the same figures (tests, bench).
        """
        from carbon_optimizer.ledger import reports  # local: reports imports us

        # `aggregate_query` itself falls back to the raw sums off SQLite (no rollups there).
        build = reports.aggregate_query if rollups else reports.raw_aggregate_query
        query = build(self.dialect, group_by, to_db(start), to_db(end), client_id)
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [{str(k): v for k, v in r.items()} for r in result.mappings()]

    async def count(self) -> int:
        """Number of placements stored (health and tests)."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(placements))).scalar_one())
