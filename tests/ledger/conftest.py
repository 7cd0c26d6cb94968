"""Real database engines for the ledger tests: SQLite in a temp dir and PostgreSQL on 127.0.0.1.

PostgreSQL: one uniquely named database per test session (created here, dropped at the end), and
fresh empty databases on demand for migration tests. When no server answers on 127.0.0.1:5432 the
PostgreSQL variants are skipped with that reason; SQLite always runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from carbon_optimizer.ledger import db
from carbon_optimizer.settings import DatabaseSettings

PG_HOST = os.environ.get("CO_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CO_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CO_TEST_PG_USER", "postgres")


async def _pg_admin(sql: str, database: str = "postgres") -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_admin(sql: str, database: str = "postgres") -> None:
    """Run one admin statement; works from sync code and from inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(_pg_admin(sql, database))).result()


def pg_unreachable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        pg_admin("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({type(exc).__name__}: {exc})"
    return None


_PG_REASON: list[str | None] = []


def _require_pg() -> None:
    if not _PG_REASON:
        _PG_REASON.append(pg_unreachable_reason())
    if _PG_REASON[0] is not None:
        pytest.skip(_PG_REASON[0])


class PgDatabases:
    """Creates uniquely named databases and drops every one of them at session end.

    Creating and dropping a database costs seconds on a busy machine, so tests share one per
    session and get it empty: `empty()` drops and recreates its `public` schema (milliseconds).
    """

    def __init__(self) -> None:
        self.created: list[str] = []
        self._shared: str | None = None

    def create(self) -> str:
        name = f"co_ledger_test_{uuid.uuid4().hex[:12]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url(name)

    def empty(self) -> str:
        """The session's shared database with nothing in it."""
        if self._shared is None:
            self._shared = self.create().rsplit("/", 1)[1]
        pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database=self._shared)
        return self.url(self._shared)

    @staticmethod
    def url(name: str) -> str:
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: PgDatabases
) -> DatabaseSettings:
    """Settings for an empty database on each real engine."""
    if request.param == "sqlite":
        return DatabaseSettings(data_dir=str(tmp_path), retry_interval_s=0.05)
    _require_pg()
    return DatabaseSettings(url=pg_databases.empty(), retry_interval_s=0.05)


@pytest.fixture
async def engine(database_settings: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each real engine, disposed afterwards."""
    eng = db.create_engine(database_settings)
    await db.upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


EngineFactory = Callable[[DatabaseSettings], AsyncEngine]
