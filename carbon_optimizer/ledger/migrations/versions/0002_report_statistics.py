"""PostgreSQL: expression statistics so day/week/month reports hash-aggregate instead of sorting.

Without them the planner assumes `date_trunc('month', start_at)` has as many distinct values as
rows, plans a sort of every placement (spilling to disk at 1 M rows) and a group aggregate; with
them it knows there are a few hundred groups at most and uses a hash aggregate (measured at 1 M
rows: 2.0 s → 0.85 s on a loaded 2-core machine, JIT off). SQLite: nothing to do.

Revision ID: 0002_report_statistics
Revises: 0001_ledger
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002_report_statistics"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None

_UNITS = ("day", "week", "month")


def upgrade() -> None:
    """Create one statistics object per truncation unit (PostgreSQL 14+)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for unit in _UNITS:
        op.execute(
            f"CREATE STATISTICS IF NOT EXISTS ledger_placements_{unit}_stats "
            f"ON (date_trunc('{unit}', start_at)) FROM ledger_placements"
        )
    op.execute("ANALYZE ledger_placements")


def downgrade() -> None:
    """Drop them again."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for unit in _UNITS:
        op.execute(f"DROP STATISTICS IF EXISTS ledger_placements_{unit}_stats")
