"""Alembic environment: migrates the connection `carbon_optimizer.ledger.db` hands over.

There is no alembic.ini and no URL here on purpose: the package's own code opens the engine from
settings (so secrets stay in `SecretStr`) and serialises concurrent upgrades before calling in.
"""

from __future__ import annotations

from alembic import context

from carbon_optimizer.ledger.models import in_schema, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run ledger migrations with `carbon-optimizer db upgrade`, not the alembic CLI")
dialect = str(connection.dialect.name)
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode recreates tables for later migrations.
    render_as_batch=dialect == "sqlite",
    compare_type=True,
    # Autogenerate and comparisons: only the tables this engine has (models.in_schema).
    include_object=lambda obj, name, type_, reflected, compare_to: (
        type_ != "table" or in_schema(dialect, str(name))
    ),
)
with context.begin_transaction():
    context.run_migrations()
