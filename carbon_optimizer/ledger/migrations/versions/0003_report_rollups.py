"""SQLite: daily rollups of the report sums, so whole-year reports need not sum every placement.

Why: a whole-year report across all clients aggregates every placement of the year. At 1 M
placements SQLite took 3.4–6.9 s for it (an index walk with a lookup per row, a sort for GROUP
BY and 17 conditional sums per row, all CPU in SQLite's VM). A report now reads sums per UTC day:

- `ledger_rollup_client` (day, client): time and client groupings, any scope;
- `ledger_rollup_location` (day, location): by location across all clients;
- `ledger_rollup_client_location` (client, day, location): by location for one client.

Each holds the same 17 sums the raw report query computes (`sums.CONTRIBUTIONS`; a test checks
that the two agree), so a group's figures are the sum of its days' rows.

How they stay right: a row-level INSERT trigger would add three upserts to every recorded row
on the writer thread, which the cached optimize path cannot afford (docs/ledger.md). So the
rollups trail the placements by a watermark, `ledger_rollup_state.last_rowid`: placements up to
it are in the rollups, later ones are not yet. `rollups.catch_up` moves it (the writer does,
about once a second). A report reads the rollups plus the raw placements past the watermark, in
one statement, so it is exact at any moment. Updates and deletes of rows at or below the
watermark apply their delta by the row-level triggers created here (the reconciler and outcome
paths); a deleted newest row lowers the watermark, since SQLite may reuse its rowid.

PostgreSQL: nothing. It sums 1 M placements in well under a second (hash aggregates, migration
0002), and the only upkeep that sees every write path there, statement-level triggers with
transition tables, measured 0.18–0.9 ms of server time per writer batch: more than recording
can spend (docs/ledger.md). `models.in_schema` says which tables each engine has.

The SQL here is a frozen copy: a later change to the sums needs a new migration, and the
agreement test will say so.

Revision ID: 0003_report_rollups
Revises: 0002_report_statistics
Create Date: 2026-12-04
"""

# ruff: noqa: S608 -- every SQL string here is built from this file's own constant names.
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003_report_rollups"
down_revision = "0002_report_statistics"
branch_labels = None
depends_on = None

_P = "ledger_placements"
_STATE = "ledger_rollup_state"
# name → its primary key. By client is read by day range across clients (all-client reports)
# and by client (one client's): the key serves the first, an index the second.
_ROLLUPS: dict[str, tuple[str, ...]] = {
    "ledger_rollup_client": ("day", "client_id"),
    "ledger_rollup_location": ("day", "location"),
    "ledger_rollup_client_location": ("client_id", "day", "location"),
}
_INDEXED = "ledger_rollup_client"  # also by (client_id, day)
_HAS_BASELINE = "{r}.baseline_emissions_g IS NOT NULL"
_REALISED = "{r}.realised_emissions_g IS NOT NULL"
_REALISED_PAIR = "({r}.realised_emissions_g IS NOT NULL AND {r}.realised_baseline_emissions_g IS NOT NULL)"
_PRICED = "({r}.cost_usd IS NOT NULL AND {r}.baseline_cost_usd IS NOT NULL)"


def _when(condition: str, value: str) -> str:
    return f"CASE WHEN {condition} THEN {value} ELSE 0 END"


# (column, per-row contribution with {r} for the row, is a count). Must equal reports.CONTRIBUTIONS.
_SUMS: tuple[tuple[str, str, bool], ...] = (
    ("placements", "1", True),
    ("with_baseline", _when(_HAS_BASELINE, "1"), True),
    ("reconciled", _when("{r}.status = 'reconciled'", "1"), True),
    (
        "reconciled_with_bundled_data",
        _when(f"({_REALISED} AND {{r}}.realised_source LIKE 'fallback:%')", "1"),
        True,
    ),
    ("energy_kwh", "{r}.energy_kwh", False),
    ("forecast_emissions_g", _when(_HAS_BASELINE, "{r}.emissions_g"), False),
    ("forecast_baseline_emissions_g", _when(_HAS_BASELINE, "{r}.baseline_emissions_g"), False),
    ("forecast_emissions_all_g", "{r}.emissions_g", False),
    ("realised_energy_kwh", _when(_REALISED, "COALESCE({r}.realised_energy_kwh, 0)"), False),
    ("realised_emissions_g", _when(_REALISED_PAIR, "{r}.realised_emissions_g"), False),
    ("realised_baseline_emissions_g", _when(_REALISED_PAIR, "{r}.realised_baseline_emissions_g"), False),
    ("realised_emissions_all_g", "COALESCE({r}.realised_emissions_g, 0)", False),
    ("forecast_emissions_reconciled_g", _when(_REALISED, "{r}.emissions_g"), False),
    ("forecast_abs_error_g", _when(_REALISED, "abs({r}.realised_emissions_g - {r}.emissions_g)"), False),
    ("cost_usd", _when(_PRICED, "{r}.cost_usd"), False),
    ("baseline_cost_usd", _when(_PRICED, "{r}.baseline_cost_usd"), False),
    ("priced_placements", _when(_PRICED, "1"), True),
)
# The placement columns the sums and keys read: an UPDATE of any other column changes no rollup.
_READS = (
    "client_id",
    "location",
    "start_at",
    "energy_kwh",
    "emissions_g",
    "cost_usd",
    "baseline_emissions_g",
    "baseline_cost_usd",
    "status",
    "realised_energy_kwh",
    "realised_emissions_g",
    "realised_baseline_emissions_g",
    "realised_source",
)


def _day(r: str) -> str:
    # SQLite stores datetimes as ISO text ("YYYY-MM-DD HH:MM:SS.ffffff"): its first ten characters.
    return f"substr({r}.start_at, 1, 10)"


def _keys(name: str) -> list[str]:
    return list(_ROLLUPS[name])


def _key_values(name: str, r: str) -> list[str]:
    return [_day(r) if k == "day" else f"{r}.{k}" for k in _keys(name)]


def _columns(name: str) -> str:
    return ", ".join([*_keys(name), *(column for column, _, _ in _SUMS)])


def _insert(name: str) -> str:
    return f"INSERT INTO {name} ({_columns(name)})"


def _upsert(name: str) -> str:
    sets = ", ".join(f"{c} = {name}.{c} + excluded.{c}" for c, _, _ in _SUMS)
    return f"ON CONFLICT ({', '.join(_keys(name))}) DO UPDATE SET {sets}"


def _aggregate_into(name: str, source: str, where: str) -> str:
    """INSERT the sums of `source` rows (alias r) grouped by the rollup's key, adding to what is there.

    NOT INDEXED: the planner would walk the client index to spare the GROUP BY its sort, with a
    lookup per row; a plain scan of the table is several times faster.
    """
    keys = _key_values(name, "r")
    sums = ", ".join(f"SUM({expr.format(r='r')})" for _, expr, _ in _SUMS)
    return (
        f"{_insert(name)} SELECT {', '.join(keys)}, {sums} "
        f"FROM {source} AS r NOT INDEXED WHERE {where} "
        f"GROUP BY {', '.join(keys)} "
        f"{_upsert(name)}"
    )


def _create_tables() -> None:
    for name in _ROLLUPS:
        columns: list[sa.Column[Any]] = []
        for key in _keys(name):
            kind: sa.types.TypeEngine[Any] = (
                sa.Date() if key == "day" else sa.String(160 if key == "location" else 64)
            )
            columns.append(sa.Column(key, kind, nullable=False))
        for column, _, count in _SUMS:
            columns.append(
                sa.Column(
                    column, sa.BigInteger() if count else sa.Float(), nullable=False, server_default="0"
                )
            )
        op.create_table(
            name, *columns, sa.PrimaryKeyConstraint(*_keys(name), name=f"pk_{name}"), sqlite_with_rowid=False
        )
        if name == _INDEXED:
            op.create_index(f"ix_{name}_client_day", name, ["client_id", "day"])
    op.create_table(
        _STATE,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_rowid", sa.BigInteger(), nullable=False),
    )


_BELOW = f"(SELECT last_rowid FROM {_STATE} WHERE id = 1)"
_MAX_ROWID = f"(SELECT COALESCE(MAX(rowid), 0) FROM {_P})"


def _row_delta(name: str, row: str, sign: str, where: str) -> str:
    """Add (sign '') or subtract (sign '-') one row's (NEW/OLD) sums; `where` gates it."""
    keys = _key_values(name, row)
    sums = ", ".join(f"{sign}({expr.format(r=row)})" for _, expr, _ in _SUMS)
    return f"{_insert(name)} SELECT {', '.join(keys)}, {sums} WHERE {where} {_upsert(name)};"


def _same_key(name: str) -> str:
    return " AND ".join(
        f"{new} = {old}" for new, old in zip(_key_values(name, "NEW"), _key_values(name, "OLD"), strict=True)
    )


def _sqlite_update_body() -> Iterator[str]:
    for name in _ROLLUPS:
        same = _same_key(name)
        keys = _key_values(name, "NEW")
        delta = ", ".join(f"({e.format(r='NEW')}) - ({e.format(r='OLD')})" for _, e, _ in _SUMS)
        yield f"{_insert(name)} SELECT {', '.join(keys)}, {delta} WHERE {same} {_upsert(name)};"
        yield _row_delta(name, "OLD", "-", f"NOT ({same})")
        yield _row_delta(name, "NEW", "", f"NOT ({same})")


def _sqlite_statements() -> Sequence[str]:
    subtract = " ".join(_row_delta(name, "OLD", "-", "true") for name in _ROLLUPS)
    return (
        # The backfill: every placement stored so far (later ones are past the watermark).
        f"INSERT INTO {_STATE} (id, last_rowid) VALUES (1, {_MAX_ROWID})",
        *(_aggregate_into(name, _P, f"r.rowid <= {_BELOW}") for name in _ROLLUPS),
        f"CREATE TRIGGER ledger_rollup_update AFTER UPDATE OF {', '.join(_READS)} ON {_P} "
        f"WHEN OLD.rowid <= {_BELOW} BEGIN {' '.join(_sqlite_update_body())} END",
        # A deleted row leaves; and if it was the newest, SQLite may hand its rowid to the next
        # insert, which must then count as past the watermark: lower it to the new maximum.
        f"CREATE TRIGGER ledger_rollup_delete AFTER DELETE ON {_P} WHEN OLD.rowid <= {_BELOW} "
        f"BEGIN {subtract} UPDATE {_STATE} SET last_rowid = {_MAX_ROWID} WHERE id = 1 "
        f"AND last_rowid > {_MAX_ROWID}; END",
    )


def upgrade() -> None:
    """SQLite: the rollup tables, the triggers for changes below the watermark, the backfill."""
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL sums the placements themselves (module docstring)
    _create_tables()
    for statement in _sqlite_statements():
        op.execute(statement)


def downgrade() -> None:
    """Drop the triggers and the tables (the placements are untouched)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS ledger_rollup_update")
    op.execute("DROP TRIGGER IF EXISTS ledger_rollup_delete")
    op.drop_table(_STATE)
    for name in _ROLLUPS:
        if name == _INDEXED:
            op.drop_index(f"ix_{name}_client_day", table_name=name)
        op.drop_table(name)
