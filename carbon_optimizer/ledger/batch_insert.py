"""The writer's fast path: one multi-row INSERT per batch over a connection it keeps.

Why: the writer commits every few milliseconds, so what each commit costs besides the rows
themselves is paid again and again: a pool checkout with its pre-ping, the reset on return,
SQLAlchemy's statement execution and, on SQLite, one aiosqlite thread hop per DBAPI call. Here
each batch is a single round of work:

- SQLite (a file): the stdlib driver on one dedicated thread; the id check, the INSERT of all rows
  and the COMMIT happen in one hop to that thread. The rows go in as one multi-row INSERT (a
  batch without Idempotency-Keys needs no id check, and one statement is its own transaction),
  not `executemany`: the driver releases the GIL around every statement step, and the thread
  then has to take it back from the event loop — once per row with `executemany`, a forced GIL
  hand-over (two context switches) that stalls the loop each time. One statement per batch
  takes it back a few times per batch.
- PostgreSQL (asyncpg): a connection held by the writer (taken from the engine's pool, so it has
  the engine's settings and JSON codecs); the batch goes as one JSON document that one
  INSERT … SELECT unpacks on the server, inside one transaction (`_AsyncpgInserter`).

Values go through the very bind processors SQLAlchemy would use for these columns and dialect, so
the stored form (e.g. SQLite's datetime text, JSON text) is the same as the generic path's and
every reader (reports, reconciler, GET) is unaffected. Any other engine (or an in-memory SQLite
database, which a second connection would not see) uses the generic SQLAlchemy path.

A failure closes the connection; the next batch opens a new one (the recorder retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, Final, Protocol, cast

import orjson
from sqlalchemy import JSON, Float, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_optimizer.ledger import rollups
from carbon_optimizer.ledger.models import placements
from carbon_optimizer.ledger.rows import OPTIMIZE_COLUMNS, OWN, SHARED_FROM, OptimizeRow

log = logging.getLogger(__name__)
_SQLITE_BUSY_TIMEOUT_MS: Final = 5000
_SQLITE_CHECKPOINT_PAGES: Final = 4000
# Rows per INSERT below which a statement has its batch's exact size (larger batches are padded
# to a multiple of it: `_SqliteInserter._statements`).
_SQLITE_ROWS_PER_STATEMENT: Final = 64
_MEMO_MAX: Final = 4096  # converted datetimes remembered per column set (cleared when full)
Existing = tuple[str, str | None]  # (id, fingerprint) of a row already stored


class BatchInserter(Protocol):
    """Insert rows (all with the same keys) in one transaction; rows whose id exists are left alone."""

    async def insert(self, rows: Sequence[Mapping[str, Any]], check_ids: Sequence[str]) -> list[Existing]:
        """Insert; return (id, fingerprint) of the ids in `check_ids` that were stored before."""
        ...

    async def close(self) -> None:
        """Release the connection (and thread)."""
        ...

    async def roll_up(self) -> int:
        """SQLite: take every placement past the rollups' watermark in (`rollups`); else 0."""
        ...


def for_engine(engine: AsyncEngine) -> BatchInserter | None:
    """The fast inserter for this engine, or None (use the generic path)."""
    url = engine.url
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite" and driver == "aiosqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            return _SqliteInserter(database, engine.dialect)
    if backend == "postgresql" and driver == "asyncpg":
        return _AsyncpgInserter(engine)
    return None


def _converters(table: Table, dialect: Dialect) -> dict[str, Callable[[Any], Any] | None]:
    """Per column: a function giving the value the driver is handed, or None (as is).

    The stored form equals what SQLAlchemy's bind processors give (a test compares them); two of
    them are replaced by faster equivalents because they run for every row of every batch
    (and SQLite's float coercion is left to the column's REAL affinity):
    SQLite's datetime text (`isoformat` gives the same `YYYY-MM-DD HH:MM:SS.ffffff`) and the
    JSON text (orjson; both engines store the text as given and every reader parses it).
    Datetimes are converted once per distinct value (`_memoised`): a row has six, and all but
    `created_at` (the request's clock reading, unique) lie on the plan's time grid, so they
    repeat across requests.
    """
    out: dict[str, Callable[[Any], Any] | None] = {}
    for column in table.columns:
        if column.type.python_type is datetime:
            convert = _sqlite_datetime if dialect.name == "sqlite" else _naive_utc
            out[column.name] = convert if column.name == "created_at" else _memoised(convert)
        elif isinstance(column.type, JSON):
            out[column.name] = _json_text
        elif isinstance(column.type, Float):
            out[column.name] = None  # floats and ints bind as they are (REAL / float8 take both)
        else:
            out[column.name] = column.type.dialect_impl(dialect).bind_processor(dialect)
    return out


def _memoised(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert` remembering its answers (bounded): a dict lookup instead of a conversion.

    Why: on the shared VM a datetime's `replace` + `isoformat` costs 3–5 µs, six times per row,
    on the event loop — more than the rest of the row's values together. Equal datetimes (the
    same instant; the key is the value, not the object) always convert to the same stored form.
    """
    memo: dict[Any, Any] = {}

    def converted(value: Any) -> Any:
        if value is None:
            return None
        out = memo.get(value)
        if out is None:
            out = convert(value)
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[value] = out
        return out

    return converted


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is UTC:  # the usual case: skip the conversion
            return value.replace(tzinfo=None)
        if value.tzinfo is None:
            raise ValueError("ledger datetimes must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _sqlite_datetime(value: Any) -> Any:
    """SQLAlchemy's SQLite datetime text, `YYYY-MM-DD HH:MM:SS.ffffff` (naive UTC).

    An aware UTC datetime (every one the ledger makes) is formatted by orjson, in C: ~0.5
    instead of ~1.3 µs for `replace` + `isoformat` (a row's datetimes repeat only when its
    answer's times do; with every body different they do not). See `_sqlite_datetimes`.
    """
    if type(value) is datetime and value.tzinfo is UTC:
        return _stored_text(orjson.dumps(value).decode()[1:-1])
    value = _naive_utc(value)
    return value.isoformat(" ", "microseconds") if isinstance(value, datetime) else value


def _sqlite_datetimes(values: list[Any]) -> list[Any]:
    """`_sqlite_datetime` of a batch's `created_at` values: one orjson call for aware UTC datetimes.

    Why: `created_at` is the one datetime of a row that never repeats (the others are memoised),
    and `replace` + `isoformat` cost ~1.3 µs a row warm, ~3 µs on the event loop of the running
    server; orjson formats the whole batch in C (~0.25 µs a row). orjson writes
    `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` (no fraction at a whole second); the stored form is
    SQLAlchemy's `YYYY-MM-DD HH:MM:SS.ffffff` (a test compares the two on many values).
    """
    if not all(type(v) is datetime and v.tzinfo is UTC for v in values):
        return [_sqlite_datetime(v) for v in values]
    texts = orjson.dumps(values).decode()[2:-2].split('","') if values else []
    return [_stored_text(t) for t in texts]


def _stored_text(t: str) -> str:
    """SQLite's stored form of orjson's `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` (no fraction at 0 µs)."""
    return f"{t[:10]} {t[11:26]}" if t[19] == "." else f"{t[:10]} {t[11:19]}.000000"


def _naive_utcs(values: list[Any]) -> list[Any]:
    return [_naive_utc(v) for v in values]


def _json_text(value: Any) -> str:
    # A str is JSON text already (see `models`: JSON columns take an object or its JSON text).
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class _Columns:
    """The column order of a batch (the first row's keys, in table order) and its converters."""

    def __init__(self, dialect: Dialect) -> None:
        self._converters = _converters(placements, dialect)
        self._order = [c.name for c in placements.columns]
        # Optimize rows (`rows.OptimizeRow`): their own columns' positions and converters; the
        # answer part's columns are converted once per part (`AnswerPart.tail`).
        self._own = [
            (i, f) for i, name in enumerate(OPTIMIZE_COLUMNS[:SHARED_FROM]) if (f := self._converters[name])
        ]
        # `created_at` (the request's own clock reading, unique per row) is converted for the
        # whole batch at once (`_sqlite_datetimes`); the other own columns one by one.
        self._created_many = _sqlite_datetimes if dialect.name == "sqlite" else _naive_utcs
        self._own_rest = [
            (i, f) for i, name in enumerate(OWN) if name != "created_at" and (f := self._converters[name])
        ]
        self._own_head_rest = [(i, f) for i, f in self._own if OPTIMIZE_COLUMNS[i] != "created_at"]
        # The answer part's columns: fetched in C, then only the six with a converter touched
        # (a call per column cost ~10 µs per unique answer in the running server).
        shared_names = OPTIMIZE_COLUMNS[SHARED_FROM:]
        self._tail_values = itemgetter(*shared_names)
        self._tail_converters = [
            (i, f) for i, name in enumerate(shared_names) if (f := self._converters[name]) is not None
        ]

    def _tail(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The stored form of an answer part's columns from `SHARED_FROM` on (`AnswerPart.tail`)."""
        out = list(self._tail_values(values))
        for i, f in self._tail_converters:
            out[i] = f(out[i])
        return tuple(out)

    def layout(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        if all(type(row) is OptimizeRow for row in rows):  # the same columns by construction
            return list(OPTIMIZE_COLUMNS)
        keys = rows[0].keys()
        names = [name for name in self._order if name in keys]
        if len(names) != len(keys) or any(row.keys() != keys for row in rows):
            raise ValueError("ledger batch rows must share one set of known column names")
        return names

    def shared(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[Any]]] | None:
        """(the shared columns' stored values, each row's own) when every row has one answer part.

        A result-cache hit repeats its answer, so a batch of its rows shares one `AnswerPart`:
        its 30 columns are then bound once per statement (`_SqliteInserter._shared_sql`), not
        once per row. None for any other batch.
        """
        first = rows[0]
        if type(first) is not OptimizeRow:
            return None
        part = first.part
        if any(type(row) is not OptimizeRow or row.part is not part for row in rows):
            return None
        same = cast("Sequence[OptimizeRow]", rows)
        shared = [self._convert("origin", part.values["origin"]), *part.tail(self, self._tail)]
        created = self._created_many([row.created_at for row in same])
        convert = self._own_rest
        own: list[list[Any]] = []
        for row, at in zip(same, created, strict=True):
            values = [
                row.id,
                row.client_id,
                at,
                row.request_id,
                row.idempotency_key,
                row.fingerprint,
                row.workload,
            ]  # rows.OWN
            for i, f in convert:
                values[i] = f(values[i])
            own.append(values)
        return shared, own

    def _convert(self, name: str, value: Any) -> Any:
        convert = self._converters[name]
        return value if convert is None else convert(value)

    def values(self, rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[list[Any]]:
        # itemgetter fetches a row's values in C; only the few columns with a converter
        # (datetimes, JSON) are touched in Python. An optimize row converts its own eight values
        # and takes the rest, converted once, from its answer part.
        split = tuple(names) == OPTIMIZE_COLUMNS
        getter = itemgetter(*names)
        convert = [(i, f) for i, name in enumerate(names) if (f := self._converters[name]) is not None]
        own = self._own_head_rest
        created = (
            iter(self._created_many([row.created_at for row in rows if type(row) is OptimizeRow]))
            if split
            else iter(())
        )
        out: list[list[Any]] = []
        for row in rows:
            if split and type(row) is OptimizeRow:
                part = row.part
                head = [
                    row.id,
                    row.client_id,
                    next(created),
                    row.request_id,
                    part.values["origin"],
                    row.idempotency_key,
                    row.fingerprint,
                    row.workload,
                ]  # OPTIMIZE_COLUMNS[:SHARED_FROM]
                for i, f in own:
                    head[i] = f(head[i])
                head.extend(part.tail(self, self._tail))
                out.append(head)
                continue
            values = list(getter(row))
            for i, f in convert:
                values[i] = f(values[i])
            out.append(values)
        return out


_SHARED_NAMES: Final = ("origin", *OPTIMIZE_COLUMNS[SHARED_FROM:])  # `_Columns.shared`'s order
_PG_TYPES: Final = {
    column.name: (
        "json"
        if isinstance(column.type, JSON)
        else "timestamp"
        if column.type.python_type is datetime
        else "float8"
        if isinstance(column.type, Float)
        else "integer"
        if column.type.python_type is int
        else "text"  # no varchar(n) cast: an explicit one truncates, the INSERT's own refuses
    )
    for column in placements.columns
}


def _pg_value(source: str, name: str) -> str:
    """The SQL giving column `name` from `source` (a document field's text, or a parameter)."""
    if source.startswith("$"):
        return f"{source}::{_PG_TYPES[name]}"
    return source if _PG_TYPES[name] == "text" else f"({source})::{_PG_TYPES[name]}"


def _all_finite(values: Iterable[Any]) -> bool:
    """No NaN or infinity among `values` (numbers or None), checked in C: their sum is finite.

    A sum of finite values that overflows reads as non-finite too; that batch then merely takes
    the slower `executemany`.
    """
    return math.isfinite(sum(filter(None, values)))


def _tuple_getter(at: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """`itemgetter(*at)`, always giving a tuple (itemgetter of one index gives the bare value)."""
    if len(at) == 1:
        only = at[0]
        return lambda row: (row[only],)
    return itemgetter(*at) if at else (lambda row: ())


class _SqliteInserter:
    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._columns = _Columns(dialect)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._sql: dict[tuple[tuple[str, ...], int], str] = {}  # used on the writer thread only
        self._roll_due = rollups.Due()  # writer thread only

    async def insert(self, rows: Sequence[Mapping[str, Any]], check_ids: Sequence[str]) -> list[Existing]:
        split = self._columns.shared(rows)
        if split is None:
            names = self._columns.layout(rows)
            shared, values = None, self._columns.values(rows, names)
        else:
            names, (shared, values) = [], split
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread(), self._write, names, values, list(check_ids), shared)

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite-writer")
        return self._executor

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=_SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,  # the INSERT of each chunk size, the id checks
            )
            conn.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint (copy the WAL into the database, fsync) every ~16 MB of WAL instead of
            # SQLite's 4 MB: a page the writer appends to is rewritten by several commits, and
            # a checkpoint copies only its last version.
            conn.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_CHECKPOINT_PAGES}")
            self._conn = conn
        return self._conn

    def _write(
        self,
        names: list[str],
        values: list[list[Any]],
        check_ids: list[str],
        shared: list[Any] | None = None,
    ) -> list[Existing]:
        """Insert the batch; then, about once a second, bring the report rollups up to date."""
        found = self._insert(names, values, check_ids, shared)
        if self._roll_due.written(len(values)):
            try:
                rollups.catch_up(rollups.Sqlite3Sql(self._connect()))
            except sqlite3.Error as exc:
                # The batch is committed; the rollups just trail further (reports stay exact).
                log.warning("ledger rollup catch-up failed (%s); retrying later", type(exc).__name__)
        return found

    def _roll_up_all(self) -> int:
        return rollups.catch_up_all(rollups.Sqlite3Sql(self._connect()))

    async def roll_up(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._thread(), self._roll_up_all)

    def _insert(
        self,
        names: list[str],
        values: list[list[Any]],
        check_ids: list[str],
        shared: list[Any] | None = None,
    ) -> list[Existing]:
        """Insert `values` (rows of `names`; or, with `shared`, the own columns `rows.OWN`)."""
        conn = self._connect()
        try:
            statements = (
                self._statements(conn, names, values)
                if shared is None
                else self._shared(conn, shared, values)
            )
            if len(statements) == 1 and not check_ids:
                # One statement is a transaction of its own: no BEGIN and COMMIT. Each statement
                # hands the GIL over to the event loop and takes it back up to three times
                # (reset, step, reset), and at c=16 the loop then waits for it: a batch as one
                # statement cut those waits by 4× and the recorded req/s lost on the cached
                # path by ~4 points (bench/bench_ledger.py).
                conn.execute(*statements[0])
                return []
            conn.execute("BEGIN IMMEDIATE")  # take the write lock first: check and insert agree
            found: list[Existing] = []
            if check_ids:
                marks = ",".join("?" * len(check_ids))
                found = conn.execute(
                    f"SELECT id, fingerprint FROM {placements.name} WHERE id IN ({marks})",  # noqa: S608 (our names)
                    check_ids,
                ).fetchall()
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            self._close_now()
            raise
        return [(str(i), f) for i, f in found]

    def _statements(
        self, conn: sqlite3.Connection, names: list[str], values: list[list[Any]]
    ) -> list[tuple[str, list[Any]]]:
        """The INSERTs for a batch: one, unless the bound-parameter limit forbids it.

        A batch of up to `_SQLITE_ROWS_PER_STATEMENT` rows is one statement of exactly that
        many rows. A larger one is padded with copies of its last row up to the next multiple of
        that size (the copies conflict with the row and are ignored, `ON CONFLICT DO NOTHING`),
        so that at most 64 + 7 distinct statements are ever prepared and cached (a prepared
        512-row INSERT holds ~1.5 MB). Within the library's bound-parameter limit (999 in SQLite
        builds before 3.32), else chunks of the largest size that fits, in one transaction.
        """
        fits = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(names))
        n, per = len(values), _SQLITE_ROWS_PER_STATEMENT
        size = n if n <= per else -(-n // per) * per
        if size <= fits:
            rows = values if size == n else [*values, *([values[-1]] * (size - n))]
            return [(self._insert_sql(names, size), list(chain.from_iterable(rows)))]
        step = min(per, fits)
        return [
            (self._insert_sql(names, len(chunk)), list(chain.from_iterable(chunk)))
            for chunk in (values[at : at + step] for at in range(0, n, step))
        ]

    def _shared(
        self, conn: sqlite3.Connection, shared: list[Any], own: list[list[Any]]
    ) -> list[tuple[str, list[Any]]]:
        """As `_statements`, for rows that share one answer part: it is bound once per statement."""
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        n, per = len(own), _SQLITE_ROWS_PER_STATEMENT
        size = n if n <= per else -(-n // per) * per
        if len(shared) + len(OWN) * size > limit:  # an old parameter limit: chunks
            step = max(1, min(per, (limit - len(shared)) // len(OWN)))
            if len(shared) + len(OWN) > limit:
                raise ValueError("SQLite's parameter limit is too low for one placement row")
            return [
                (self._shared_sql(len(chunk)), [*shared, *chain.from_iterable(chunk)])
                for chunk in (own[at : at + step] for at in range(0, n, step))
            ]
        rows = own if size == n else [*own, *([own[-1]] * (size - n))]
        return [(self._shared_sql(size), [*shared, *chain.from_iterable(rows)])]

    def _shared_sql(self, rows: int) -> str:
        """INSERT … SELECT: the shared columns as parameters ?1…?30, each row's own from VALUES."""
        key = (("shared",), rows)
        sql = self._sql.get(key)
        if sql is None:
            shared_names = ("origin", *OPTIMIZE_COLUMNS[SHARED_FROM:])
            first = len(shared_names) + 1
            own = len(OWN)
            select = ",".join(
                [*(f"column{i}" for i in range(1, own + 1)), *(f"?{i}" for i in range(1, first))]
            )
            values = ",".join(
                "(" + ",".join(f"?{first + r * own + k}" for k in range(own)) + ")" for r in range(rows)
            )
            sql = (
                f"INSERT INTO {placements.name} ({','.join((*OWN, *shared_names))}) "  # noqa: S608 (column names from the table)
                f"SELECT {select} FROM (VALUES {values}) WHERE 1 ON CONFLICT DO NOTHING"
            )
            self._sql[key] = sql
        return sql

    def _insert_sql(self, names: list[str], rows: int) -> str:
        key = (tuple(names), rows)
        sql = self._sql.get(key)
        if sql is None:
            one = f"({','.join('?' * len(names))})"
            sql = (
                f"INSERT INTO {placements.name} ({','.join(names)}) "  # noqa: S608 (column names from the table)
                f"VALUES {','.join([one] * rows)} ON CONFLICT DO NOTHING"
            )
            self._sql[key] = sql
        return sql

    def _close_now(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # an open transaction is rolled back

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_now)
            executor.shutdown(wait=False)


class _AsyncpgInserter:
    """PostgreSQL: a batch is one JSON document, unpacked by one INSERT … SELECT on the server.

    Why not `executemany`: it encodes every value of every row on the event loop (asyncpg's
    codecs) and sends a Bind and an Execute per row, which the server then runs one at a time.
    At c=16 that cost the result-cache path 12–14 % of its throughput when recorded
    (bench/bench_ledger.py --postgresql). Here the loop makes one orjson call per batch, in C,
    and the server unpacks the rows itself (`jsonb_array_elements`), in their batch order (the
    first of two rows with one id is the one kept, as with `executemany`). Rows sharing one
    answer part send its columns once, as the statement's typed parameters; the document then
    holds each row's own seven values only.

    The document's values are the converted ones (`_Columns`): naive UTC datetimes, which orjson
    writes as ISO text and PostgreSQL reads back exactly, JSON columns as their text, floats as
    their shortest repr. JSON has no NaN or infinity (orjson would write null), so a batch with
    a non-finite float in its document takes `executemany`, which stores them as the generic path
    does (a shared part's floats are parameters, and keep them either way).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._columns = _Columns(engine.dialect)
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._sql: dict[tuple[str, ...], str] = {}
        self._float_getters: dict[tuple[str, ...], Callable[[Sequence[Any]], tuple[Any, ...]]] = {}

    async def _connect(self) -> Any:
        if self._driver is None:
            conn = await self._engine.connect()
            try:
                raw = await conn.get_raw_connection()
                self._driver = raw.driver_connection  # asyncpg.Connection
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._driver

    def _insert_sql(self, names: list[str]) -> str:
        key = tuple(names)
        sql = self._sql.get(key)
        if sql is None:
            marks = ",".join(f"${i}" for i in range(1, len(names) + 1))
            sql = (
                f"INSERT INTO {placements.name} ({','.join(names)}) "  # noqa: S608 (column names from the table)
                f"VALUES ({marks}) ON CONFLICT DO NOTHING"
            )
            self._sql[key] = sql
        return sql

    def _document_sql(self, names: Sequence[str], shared: Sequence[str] = ()) -> str:
        """The INSERT … SELECT of a document of rows of `names`, with `shared` as $2, $3 and on."""
        key = ("document", *names, "shared", *shared)
        sql = self._sql.get(key)
        if sql is None:
            own = [_pg_value(f"e->>{i}", name) for i, name in enumerate(names)]
            common = [_pg_value(f"${i}", name) for i, name in enumerate(shared, start=2)]
            sql = (
                f"INSERT INTO {placements.name} ({','.join((*names, *shared))}) "  # noqa: S608 (column names from the table)
                f"SELECT {','.join((*own, *common))} "
                "FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS r(e, n) "
                "ORDER BY n ON CONFLICT DO NOTHING"
            )
            self._sql[key] = sql
        return sql

    def _statement(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any], bool]:
        """(SQL, parameters, whether to `executemany` them): the document, unless a float is not finite."""
        split = self._columns.shared(rows)
        if split is not None:
            shared, own = split  # every float is the part's: a typed parameter, not in JSON
            return self._document_sql(OWN, _SHARED_NAMES), [orjson.dumps(own).decode(), *shared], False
        names = self._columns.layout(rows)
        values = self._columns.values(rows, names)
        if not _all_finite(chain.from_iterable(map(self._floats_of(names), values))):
            return self._insert_sql(names), values, True
        return self._document_sql(names), [orjson.dumps(values).decode()], False

    def _floats_of(self, names: Sequence[str]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """A getter of the float columns' values from a row of `names` (as a tuple)."""
        key = tuple(names)
        getter = self._float_getters.get(key)
        if getter is None:
            at = [i for i, name in enumerate(names) if _PG_TYPES[name] == "float8"]
            getter = self._float_getters[key] = _tuple_getter(at)
        return getter

    async def insert(self, rows: Sequence[Mapping[str, Any]], check_ids: Sequence[str]) -> list[Existing]:
        statement = self._statement(rows)
        driver = await self._connect()
        try:
            async with driver.transaction():
                found = []
                if check_ids:
                    found = await driver.fetch(
                        f"SELECT id, fingerprint FROM {placements.name} WHERE id = ANY($1::varchar[])",  # noqa: S608
                        list(check_ids),
                    )
                sql, params, many = statement
                if many:
                    await driver.executemany(sql, params)
                else:
                    await driver.execute(sql, *params)
        except BaseException:
            await self._drop(invalidate=True)
            raise
        return [(str(r["id"]), r["fingerprint"]) for r in found]

    async def _drop(self, *, invalidate: bool) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is None:
            return
        try:
            if invalidate:
                await conn.invalidate()
            else:
                await conn.close()
        except Exception as exc:  # the connection is gone either way
            log.debug("ledger writer connection close failed: %s", type(exc).__name__)

    async def roll_up(self) -> int:
        return 0  # the rollups are SQLite's alone (migration 0003)

    async def close(self) -> None:
        await self._drop(invalidate=False)
