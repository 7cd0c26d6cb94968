"""Ledger tables (SQLAlchemy Core: the write path inserts plain dicts in batches, reports aggregate).

Timestamps are stored as naive UTC (`DateTime` without time zone) on both engines so the same
day/week/month truncation works in SQLite and PostgreSQL; `repository` converts at the boundary.
A row handed to the writer may carry a JSON column (`workload`, `quality`, always objects) as its
JSON text instead (the optimize path does, see `Ledger._optimize_row`); both forms store the same.
The migration in `migrations/versions` creates exactly these tables; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Placement status values.
RECORDED = "recorded"  # waiting for its window to pass
RECONCILED = "reconciled"  # realised figures computed
FAILED = "unreconcilable"  # gave up after `reconcile_max_attempts` (reason in reconcile_error)

placements = Table(
    "ledger_placements",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("origin", String(16), nullable=False),  # "optimize" | "caller"
    Column("idempotency_key", String(255), nullable=True),
    Column("fingerprint", String(64), nullable=True),  # sha256 of the recorded request
    Column("workload", JSON, nullable=False),
    Column("signal", String(64), nullable=False),  # e.g. "location-based average, lifecycle"
    # The chosen option (forecast at decision time).
    Column("location", String(160), nullable=False),  # "aws/eu-west-1" or "zone/DE"
    Column("zone", String(64), nullable=False),
    Column("provider", String(16), nullable=True),
    Column("region", String(64), nullable=True),
    Column("instance_type", String(128), nullable=True),
    Column("start_at", DateTime(), nullable=False),
    Column("end_at", DateTime(), nullable=False),
    Column("energy_kwh", Float, nullable=False),
    Column("intensity_g_per_kwh", Float, nullable=False),
    Column("emissions_g", Float, nullable=False),
    Column("cost_usd", Float, nullable=True),
    Column("carbon_source", String(255), nullable=True),
    Column("price_source", String(255), nullable=True),
    # The baseline it is compared with (named per placement).
    Column("baseline_name", String(255), nullable=True),
    Column("baseline_location", String(160), nullable=True),
    Column("baseline_zone", String(64), nullable=True),
    Column("baseline_start_at", DateTime(), nullable=True),
    Column("baseline_end_at", DateTime(), nullable=True),
    Column("baseline_energy_kwh", Float, nullable=True),
    Column("baseline_intensity_g_per_kwh", Float, nullable=True),
    Column("baseline_emissions_g", Float, nullable=True),
    Column("baseline_cost_usd", Float, nullable=True),
    Column("baseline_carbon_source", String(255), nullable=True),
    Column("quality", JSON, nullable=False),  # warnings and data provenance at decision time
    # Outcome reported by the caller.
    Column("actual_location", String(160), nullable=True),
    Column("actual_zone", String(64), nullable=True),
    Column("actual_start_at", DateTime(), nullable=True),
    Column("actual_end_at", DateTime(), nullable=True),
    Column("measured_energy_kwh", Float, nullable=True),
    Column("outcome_at", DateTime(), nullable=True),
    # Reconciliation.
    Column("status", String(16), nullable=False),
    Column("due_at", DateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reconcile_error", Text, nullable=True),
    Column("reconciled_at", DateTime(), nullable=True),
    Column("realised_energy_kwh", Float, nullable=True),
    Column("realised_intensity_g_per_kwh", Float, nullable=True),
    Column("realised_emissions_g", Float, nullable=True),
    Column("realised_baseline_intensity_g_per_kwh", Float, nullable=True),
    Column("realised_baseline_emissions_g", Float, nullable=True),
    Column("realised_source", String(255), nullable=True),
    Column("realised_baseline_source", String(255), nullable=True),
    UniqueConstraint("client_id", "idempotency_key", name="uq_ledger_placements_idempotency"),
    # Reports filter by the planned start, per client or across all clients (admin).
    Index("ix_ledger_placements_client_start", "client_id", "start_at"),
    Index("ix_ledger_placements_start", "start_at"),
    # The reconciler's work queue.
    Index("ix_ledger_placements_status_due", "status", "due_at"),
)

leases = Table(
    "ledger_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", DateTime(), nullable=False),
)


# ----- SQLite's report rollups (migration 0003; how they are kept right: docs/ledger.md) -----

# The sums every report reads, in `sums.CONTRIBUTIONS` order (checked there); counts are integers.
ROLLUP_COUNTS = (
    "placements",
    "with_baseline",
    "reconciled",
    "reconciled_with_bundled_data",
    "priced_placements",
)
ROLLUP_SUMS = (
    "placements",
    "with_baseline",
    "reconciled",
    "reconciled_with_bundled_data",
    "energy_kwh",
    "forecast_emissions_g",
    "forecast_baseline_emissions_g",
    "forecast_emissions_all_g",
    "realised_energy_kwh",
    "realised_emissions_g",
    "realised_baseline_emissions_g",
    "realised_emissions_all_g",
    "forecast_emissions_reconciled_g",
    "forecast_abs_error_g",
    "cost_usd",
    "baseline_cost_usd",
    "priced_placements",
)


def _rollup(name: str, *keys: Column[object], client_index: bool = False) -> Table:
    sums = [
        Column(s, BigInteger if s in ROLLUP_COUNTS else Float, nullable=False, server_default="0")
        for s in ROLLUP_SUMS
    ]
    extra = [Index(f"ix_{name}_client_day", "client_id", "day")] if client_index else []
    return Table(
        name,
        metadata,
        *keys,
        *sums,
        PrimaryKeyConstraint(*(k.name for k in keys), name=f"pk_{name}"),
        *extra,
        sqlite_with_rowid=False,
    )


# Per UTC day of the planned start: by client (time and client groupings; keyed by day for
# all-client ranges, indexed by client for one client's), by location (all clients), by client
# and location (one client's report by location).
rollup_client = _rollup(
    "ledger_rollup_client", Column("day", Date), Column("client_id", String(64)), client_index=True
)
rollup_location = _rollup("ledger_rollup_location", Column("day", Date), Column("location", String(160)))
rollup_client_location = _rollup(
    "ledger_rollup_client_location",
    Column("client_id", String(64)),
    Column("day", Date),
    Column("location", String(160)),
)

# Placements with rowid <= last_rowid are in the rollups; `rollups.catch_up` takes the later
# ones in and moves it.
rollup_state = Table(
    "ledger_rollup_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_rowid", BigInteger, nullable=False),
)

SQLITE_ONLY: frozenset[str] = frozenset(
    t.name for t in (rollup_client, rollup_location, rollup_client_location, rollup_state)
)


def in_schema(dialect: str, table: str) -> bool:
    """Whether the migrations create `table` on this engine (PostgreSQL needs no rollups)."""
    return dialect == "sqlite" or table not in SQLITE_ONLY
