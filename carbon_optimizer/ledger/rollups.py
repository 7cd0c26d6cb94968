"""SQLite: taking newly stored placements into the daily report rollups.

Why not a trigger per inserted row: three upserts per recorded row on the writer would cost the
cached optimize path more than its margin (docs/ledger.md). So the rollups trail the placements
by a watermark, `ledger_rollup_state.last_rowid`, and `catch_up` moves it forward in one
transaction: one pass over the new rows (grouped by client, day and location into a temporary
table), three small upserts from that, and the new watermark. Reports add the placements past the
watermark raw (`reports`), so they are exact whatever the watermark; the writer calls this about
once a second, the reconciler's loop when idle. Updates and deletes below the watermark are
applied by the triggers of migration 0003.

The SQL is built from `sums.CONTRIBUTIONS` and the tables in `models`, compiled once for SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    MetaData,
    String,
    Table,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.elements import ColumnElement

from carbon_optimizer.ledger.models import (
    ROLLUP_COUNTS,
    placements,
    rollup_client,
    rollup_client_location,
    rollup_location,
    rollup_state,
)
from carbon_optimizer.ledger.sums import CONTRIBUTIONS, NAMES

# Rows per catch-up transaction: bounds how long it holds SQLite's write lock (~0.1–0.5 s).
CHUNK_ROWS: Final = 50_000
# The writer catches up after this long or this many rows, whichever comes first: what a report
# then reads raw (past the watermark) stays small, and the cost is one transaction a second.
INTERVAL_S: Final = 1.0
EVERY_ROWS: Final = 10_000

_fresh = Table(
    "ledger_rollup_fresh",
    MetaData(),
    Column("client_id", String),
    Column("day", String),
    Column("location", String),
    *(Column(n, BigInteger if n in ROLLUP_COUNTS else Float) for n in NAMES),
    prefixes=["TEMPORARY"],
)


class Sql(Protocol):
    """Where the statements run: a sqlite3 connection or a SQLAlchemy one, in autocommit mode."""

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        ...

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run a statement."""
        ...


def _compile(statement: Any) -> str:
    # Constants inline; the only parameters are the `?` placeholders written as such below.
    return str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def _statements() -> tuple[str, ...]:
    p = placements.c
    rowid: ColumnElement[int] = literal_column(f"{placements.name}.rowid")
    day = func.substr(p.start_at, 1, 10)
    fill = _fresh.insert().from_select(
        ["client_id", "day", "location", *NAMES],
        select(p.client_id, day, p.location, *(func.sum(expr) for _, expr in CONTRIBUTIONS))
        .where(rowid > literal_column("?"), rowid <= literal_column("?"))  # low, high
        .group_by(p.client_id, day, p.location),
    )
    # A rowid range, read in rowid order: NOT INDEXED keeps the planner off the client index
    # (which it picks to avoid the GROUP BY sort, and which would walk every placement).
    fill_sql = _compile(fill).replace(f"FROM {placements.name} ", f"FROM {placements.name} NOT INDEXED ", 1)
    upserts = []
    for table in (rollup_client, rollup_location, rollup_client_location):
        keys = [c.name for c in table.primary_key.columns]
        src = select(*(_fresh.c[k] for k in keys), *(func.sum(_fresh.c[n]).label(n) for n in NAMES))
        # SQLite's upsert wants a WHERE on an INSERT … SELECT (a parsing rule), if only `1 = 1`.
        src = src.where(literal_column("1") == 1).group_by(*(_fresh.c[k] for k in keys))
        stmt = sqlite.insert(table).from_select([*keys, *NAMES], src)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={n: table.c[n] + stmt.excluded[n] for n in NAMES}
        )
        upserts.append(_compile(stmt))
    return (
        _compile(CreateTable(_fresh, if_not_exists=True)),
        f"DELETE FROM {_fresh.name}",  # noqa: S608 (our name)
        fill_sql,
        *upserts,
    )


_CREATE, _CLEAR, _FILL, *_UPSERTS = _statements()
_WATERMARK: Final = f"SELECT last_rowid FROM {rollup_state.name} WHERE id = 1"  # noqa: S608
_NEWEST: Final = f"SELECT COALESCE(MAX(rowid), 0) FROM {placements.name}"  # noqa: S608
_ADVANCE: Final = f"UPDATE {rollup_state.name} SET last_rowid = ? WHERE id = 1"  # noqa: S608


def catch_up(sql: Sql, chunk: int = CHUNK_ROWS) -> int:
    """Take up to `chunk` placements past the watermark into the rollups; return how many rowids it passed.

    One transaction, begun IMMEDIATE (the write lock first), so no other writer can insert or
    move the watermark between reading it and moving it.
    """
    sql.run("BEGIN IMMEDIATE")  # may wait (busy_timeout) or fail: then nothing has begun
    try:
        (low,) = sql.rows(_WATERMARK)[0]
        (newest,) = sql.rows(_NEWEST)[0]
        high = min(int(newest), int(low) + chunk)
        if high > low:
            sql.run(_CREATE)
            sql.run(_CLEAR)
            sql.run(_FILL, (low, high))
            for upsert in _UPSERTS:
                sql.run(upsert)
            sql.run(_ADVANCE, (high,))
        sql.run("COMMIT")
    except BaseException:
        sql.run("ROLLBACK")
        raise
    return max(0, high - int(low))


def catch_up_all(sql: Sql) -> int:
    """Chunk by chunk until the rollups hold every placement (a bulk import, the bench's seed)."""
    total = 0
    while passed := catch_up(sql):
        total += passed
    return total


class Due:
    """When the writer should catch up next (`INTERVAL_S` or `EVERY_ROWS`, whichever first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._rows = 0

    def written(self, rows: int) -> bool:
        """Count a committed batch; True when it is time to catch up (the count then restarts)."""
        self._rows += rows
        now = self._clock()
        if self._rows < EVERY_ROWS and now - self._since < INTERVAL_S:
            return False
        self._rows, self._since = 0, now
        return True


class Sqlite3Sql:
    """`Sql` over a stdlib sqlite3 connection in autocommit mode (the writer's own)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run a statement."""
        self._conn.execute(sql, params)


class ConnectionSql:
    """`Sql` over a SQLAlchemy (sync-facing) connection, for `AsyncConnection.run_sync`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        return [tuple(r) for r in self._conn.exec_driver_sql(sql, params).fetchall()]

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run a statement."""
        self._conn.exec_driver_sql(sql, params)
