"""Migrations up and down on both real engines, and the migrated schema equals the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from carbon_optimizer.ledger import db
from carbon_optimizer.ledger.models import SQLITE_ONLY, in_schema, metadata
from carbon_optimizer.settings import DatabaseSettings


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _diff(connection: Connection) -> list[object]:
    def ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return type_ != "table" or in_schema(connection.dialect.name, str(name))

    context = MigrationContext.configure(connection, opts={"include_object": ours})
    return list(compare_metadata(context, metadata))


async def test_upgrade_downgrade_upgrade(database_settings: DatabaseSettings) -> None:
    engine = db.create_engine(database_settings)
    try:
        assert await db.current_revision(engine) is None
        await db.upgrade(engine)
        assert await db.current_revision(engine) == db.head_revision()
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert {"ledger_placements", "ledger_leases", "alembic_version"} <= tables
            # The report rollups are SQLite's alone (PostgreSQL sums the placements).
            assert (tables >= SQLITE_ONLY) == (conn.dialect.name == "sqlite")
            assert not (SQLITE_ONLY & tables) or conn.dialect.name == "sqlite"
            # The migration creates exactly what the models describe (columns, types, indexes).
            assert await conn.run_sync(_diff) == []
        await db.upgrade(engine)  # idempotent at head
        await db.downgrade(engine, "base")
        assert await db.current_revision(engine) is None
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
        assert not {"ledger_placements", "ledger_leases", *SQLITE_ONLY} & tables
        await db.upgrade(engine)
        assert await db.current_revision(engine) == db.head_revision()
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_are_serialised(database_settings: DatabaseSettings) -> None:
    # Every worker of every replica may migrate at start-up at once; all must succeed.
    import asyncio

    engines = [db.create_engine(database_settings) for _ in range(3)]
    try:
        await asyncio.gather(*(db.upgrade(e) for e in engines))
        for engine in engines:
            assert await db.current_revision(engine) == db.head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


def test_head_constant_matches_the_scripts() -> None:
    assert db.scripted_head() == db.head_revision()


def test_plain_urls_get_async_drivers() -> None:
    pg = DatabaseSettings(url="postgresql://u:secret@db/x")
    assert db.database_url(pg).startswith("postgresql+asyncpg://")
    assert "secret" not in db.redacted(db.database_url(pg))
    lite = DatabaseSettings(url="sqlite:////tmp/x.db")
    assert db.database_url(lite) == "sqlite+aiosqlite:////tmp/x.db"
    assert DatabaseSettings(data_dir="/srv/co").url is None
    assert (
        db.database_url(DatabaseSettings(data_dir="/srv/co")) == "sqlite+aiosqlite:////srv/co/ledger.sqlite3"
    )
