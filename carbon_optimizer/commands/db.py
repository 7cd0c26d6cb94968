"""`carbon-optimizer db upgrade|downgrade|current`: the ledger's schema, as a deploy step.

Workers migrate at start-up by default; set CARBON_OPTIMIZER_DATABASE__MIGRATE_ON_START=false and
run `carbon-optimizer db upgrade` (e.g. a Kubernetes Job or init container) to make schema
changes an explicit step instead. Both paths take the same lock, so running both is safe.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, TextIO

from carbon_optimizer.settings import Settings


def register(sub: Any) -> None:
    """Add `db` and its actions to the top-level subparsers."""
    parser = sub.add_parser("db", help="savings-ledger database schema (migrations)")
    actions = parser.add_subparsers(dest="db_command", required=True)
    upgrade = actions.add_parser("upgrade", help="apply migrations (default: to the newest)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=_run)
    downgrade = actions.add_parser(
        "downgrade", help="revert migrations to REVISION ('base' drops the ledger)"
    )
    downgrade.add_argument("revision")
    downgrade.set_defaults(func=_run)
    current = actions.add_parser("current", help="print the database's revision and the newest one")
    current.set_defaults(func=_run, revision=None)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = Settings()
    return asyncio.run(_act(settings, args.db_command, args.revision, out, err))


async def _act(settings: Settings, action: str, revision: str | None, out: TextIO, err: TextIO) -> int:
    from carbon_optimizer.ledger import db  # local: keeps SQLAlchemy/Alembic out of every CLI start

    engine = db.create_engine(settings.database)
    where = db.redacted(db.database_url(settings.database))
    try:
        if action == "upgrade":
            await db.upgrade(engine, revision or "head")
        elif action == "downgrade":
            assert revision is not None
            await db.downgrade(engine, revision)
        current = await db.current_revision(engine)
    except Exception as exc:
        err.write(f"error: ledger database {where}: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        await engine.dispose()
    out.write(f"database: {where}\nrevision: {current or '(empty)'}\nnewest:   {db.head_revision()}\n")
    return 0
