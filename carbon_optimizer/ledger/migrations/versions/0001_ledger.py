"""Create the savings ledger: placements and the reconciler's lease.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_ledger"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create both tables and the report / work-queue indexes."""
    op.create_table(
        "ledger_placements",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("workload", sa.JSON(), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("location", sa.String(160), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(16), nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("instance_type", sa.String(128), nullable=True),
        sa.Column("start_at", sa.DateTime(), nullable=False),
        sa.Column("end_at", sa.DateTime(), nullable=False),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("intensity_g_per_kwh", sa.Float(), nullable=False),
        sa.Column("emissions_g", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("carbon_source", sa.String(255), nullable=True),
        sa.Column("price_source", sa.String(255), nullable=True),
        sa.Column("baseline_name", sa.String(255), nullable=True),
        sa.Column("baseline_location", sa.String(160), nullable=True),
        sa.Column("baseline_zone", sa.String(64), nullable=True),
        sa.Column("baseline_start_at", sa.DateTime(), nullable=True),
        sa.Column("baseline_end_at", sa.DateTime(), nullable=True),
        sa.Column("baseline_energy_kwh", sa.Float(), nullable=True),
        sa.Column("baseline_intensity_g_per_kwh", sa.Float(), nullable=True),
        sa.Column("baseline_emissions_g", sa.Float(), nullable=True),
        sa.Column("baseline_cost_usd", sa.Float(), nullable=True),
        sa.Column("baseline_carbon_source", sa.String(255), nullable=True),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("actual_location", sa.String(160), nullable=True),
        sa.Column("actual_zone", sa.String(64), nullable=True),
        sa.Column("actual_start_at", sa.DateTime(), nullable=True),
        sa.Column("actual_end_at", sa.DateTime(), nullable=True),
        sa.Column("measured_energy_kwh", sa.Float(), nullable=True),
        sa.Column("outcome_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reconcile_error", sa.Text(), nullable=True),
        sa.Column("reconciled_at", sa.DateTime(), nullable=True),
        sa.Column("realised_energy_kwh", sa.Float(), nullable=True),
        sa.Column("realised_intensity_g_per_kwh", sa.Float(), nullable=True),
        sa.Column("realised_emissions_g", sa.Float(), nullable=True),
        sa.Column("realised_baseline_intensity_g_per_kwh", sa.Float(), nullable=True),
        sa.Column("realised_baseline_emissions_g", sa.Float(), nullable=True),
        sa.Column("realised_source", sa.String(255), nullable=True),
        sa.Column("realised_baseline_source", sa.String(255), nullable=True),
        sa.UniqueConstraint("client_id", "idempotency_key", name="uq_ledger_placements_idempotency"),
    )
    op.create_index("ix_ledger_placements_client_start", "ledger_placements", ["client_id", "start_at"])
    op.create_index("ix_ledger_placements_start", "ledger_placements", ["start_at"])
    op.create_index("ix_ledger_placements_status_due", "ledger_placements", ["status", "due_at"])
    op.create_table(
        "ledger_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop everything `upgrade` created."""
    op.drop_table("ledger_leases")
    op.drop_index("ix_ledger_placements_status_due", table_name="ledger_placements")
    op.drop_index("ix_ledger_placements_start", table_name="ledger_placements")
    op.drop_index("ix_ledger_placements_client_start", table_name="ledger_placements")
    op.drop_table("ledger_placements")
