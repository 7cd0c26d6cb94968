"""Engine construction and migrations for the ledger database.

Why migrations run at start-up by default: the embedded quick start (SQLite in a data directory)
must work with nothing to run first, and every worker of every replica may start at once, so the
upgrade is serialised — a PostgreSQL advisory lock held for the migration's transaction, a file
lock next to the SQLite file — and a no-op once the schema is at head. Operators who want schema
changes as an explicit deploy step set `CARBON_OPTIMIZER_DATABASE__MIGRATE_ON_START=false` and run
`carbon-optimizer db upgrade` (same code path). The migrations ship inside the package
(`carbon_optimizer/ledger/migrations`), so an installed wheel can migrate without the source tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from carbon_optimizer.settings import DatabaseSettings

SCRIPT_LOCATION: Final = "carbon_optimizer.ledger:migrations"
# The newest migration shipped (a test checks it against the scripts). Knowing it without loading
# Alembic keeps the at-head check on every worker start to one SELECT.
HEAD: Final = "0003_report_rollups"
# Any fixed 64-bit number: every replica takes the same advisory lock while migrating.
_PG_MIGRATION_LOCK: Final = 0x6C656467657231  # "ledger1"
_SQLITE_BUSY_TIMEOUT_MS: Final = 5000


def default_data_dir() -> Path:
    """Per-user data directory ($XDG_DATA_HOME/carbon-optimizer, else ~/.local/share/carbon-optimizer)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "carbon-optimizer"


def database_url(settings: DatabaseSettings) -> str:
    """The configured URL, or a SQLite file `ledger.sqlite3` in the data directory."""
    if settings.url is not None:
        url = settings.url.get_secret_value()
        # Accept the plain forms people paste and pick the async drivers this package uses.
        if url.startswith(("postgres://", "postgresql://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        elif url.startswith("sqlite://"):
            url = "sqlite+aiosqlite://" + url.split("://", 1)[1]
        return url
    directory = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    return f"sqlite+aiosqlite:///{directory / 'ledger.sqlite3'}"


def redacted(url: str) -> str:
    """The URL with any password masked (for logs and CLI output)."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine for the ledger; connects lazily (nothing happens until first use)."""
    url = database_url(settings)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # sqlite3's own busy wait, from the first statement on (a migration may hold the file).
        kwargs["connect_args"] = {"timeout": max(settings.connect_timeout_s, _SQLITE_BUSY_TIMEOUT_MS / 1000)}
    else:
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            pool_timeout=settings.connect_timeout_s,
            # JIT compilation costs ~0.3 s per report query and buys nothing for these plans.
            connect_args={"timeout": settings.connect_timeout_s, "server_settings": {"jit": "off"}},
        )
    engine = create_async_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (reports) run while a worker writes; busy_timeout makes several gunicorn
    # workers on one file wait for each other instead of failing with "database is locked".
    # busy_timeout first: switching to WAL needs a brief exclusive lock, which must wait too.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Any:
    """Alembic configuration pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config  # local: Alembic is only needed to change the schema

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version."""
    return HEAD


def scripted_head() -> str | None:
    """The head according to the migration scripts themselves (loads Alembic; for tests and checks)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.contextmanager
def _file_lock(engine: AsyncEngine) -> Iterator[None]:
    """Exclusive lock beside a SQLite file (no-op for PostgreSQL and in-memory SQLite)."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(database + ".migrate.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
    from alembic import command

    def migrate(connection: Connection) -> None:
        config = alembic_config(connection)
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)

    async with engine.begin() as conn:  # the caller holds `_migration_lock`
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        await conn.run_sync(migrate)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to `revision`, one process at a time (a cheap no-op when at head).

    On SQLite the check for the head is made under the migration lock too: every connection
    switches the file to WAL when it opens (`_sqlite_pragmas`), and one opened while another
    engine migrated a brand-new file could deadlock with it (the new file still in rollback
    mode, its switch to WAL waiting for the migration's commit, which waited for the switch's
    read lock) until the 5 s busy timeout failed one of them with "database is locked".
    """
    async with _migration_lock(engine):
        if revision == "head" and await _at_head(engine):
            return
        await _run(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Revert migrations down to `revision` ("base" drops every ledger table)."""
    async with _migration_lock(engine):
        await _run(engine, "downgrade", revision)


@contextlib.asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """`_file_lock`, taken in a thread (it blocks) and released here."""
    lock = _file_lock(engine)
    await asyncio.to_thread(lock.__enter__)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


async def _at_head(engine: AsyncEngine) -> bool:
    return await current_revision(engine) == HEAD


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first upgrade)."""

    def read(connection: Connection) -> str | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        return str(rows[0]) if len(rows) == 1 else None

    async with engine.connect() as conn:
        return await conn.run_sync(read)
