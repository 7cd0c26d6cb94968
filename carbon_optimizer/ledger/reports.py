"""Savings reports: one aggregate query per request, grouped in the database, rounded on output.

Every figure is a sum over placements whose *planned* start lies in [from, to); ratios are computed
from those sums (never averages of per-placement percentages), so groups add up to the totals.
Forecast figures cover every placement with the data; realised figures only reconciled ones, and
the forecast error compares the two over exactly the reconciled set. Rules: docs/ledger.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import (
    DateTime,
    Select,
    String,
    Table,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from carbon_optimizer.ledger.models import (
    placements,
    rollup_client,
    rollup_client_location,
    rollup_location,
    rollup_state,
)
from carbon_optimizer.ledger.sums import CONTRIBUTIONS, NAMES

GroupBy = Literal["client", "location", "day", "week", "month"]
GROUP_BY: Final = ("client", "location", "day", "week", "month")

p = placements.c
_ROWID: Final[ColumnElement[int]] = literal_column(f"{placements.name}.rowid")
# SQLite's unary + makes the start a value its planner cannot look up in the start index: the
# placements past the watermark are a short rowid range, the start range could be a year.
_START_NOT_INDEXED: Final = type_coerce(literal_column(f"+{placements.name}.start_at"), DateTime())


def group_expression(dialect: str, group_by: str) -> ColumnElement[Any]:
    """A placement's group key in SQL; day/week/month as ISO text (2026-06-03, a week's Monday, 2026-06)."""
    return _group(dialect, group_by, p.start_at, p.client_id, p.location)


def _group(
    dialect: str,
    group_by: str,
    when: ColumnElement[Any],
    client: ColumnElement[Any],
    location: ColumnElement[Any],
) -> ColumnElement[Any]:
    # The same expression over a placement (its start) and over a rollup row (its day), so
    # both halves of a report land in the same groups.
    if group_by == "client":
        return client
    if group_by == "location":
        return location
    if dialect == "postgresql":
        # The bare truncation (formatted in `group_key`): the planner has statistics on exactly
        # these expressions (migration 0002) and hash-aggregates; to_char() per row would not.
        return func.date_trunc(group_by, when)
    if group_by == "day":
        return type_coerce(func.strftime("%Y-%m-%d", when), String())
    if group_by == "week":
        # Monday of the week: forward to the week's Sunday ('weekday 0'), then back six days.
        return type_coerce(func.date(when, "weekday 0", "-6 days"), String())
    if group_by == "month":
        return type_coerce(func.strftime("%Y-%m", when), String())
    raise ValueError(f"unknown group_by {group_by!r}")


def raw_aggregate_query(
    dialect: str, group_by: str, start: datetime, end: datetime, client_id: str | None
) -> Select[Any]:
    """SELECT group, sums… over the placements themselves (no rollups; the tests' oracle)."""
    key = group_expression(dialect, group_by).label("group")
    query = select(key, *(func.sum(expr).label(name) for name, expr in CONTRIBUTIONS)).where(
        p.start_at >= start, p.start_at < end
    )
    if client_id is not None:
        query = query.where(p.client_id == client_id)
    return query.group_by(key).order_by(key)


def rollup_for(group_by: str, client_id: str | None) -> Table:
    """The daily rollup a report reads: the narrowest one that holds its groups and its scope."""
    if group_by != "location":
        return rollup_client
    return rollup_location if client_id is None else rollup_client_location


def _day_floor(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def aggregate_query(
    dialect: str, group_by: str, start: datetime, end: datetime, client_id: str | None
) -> Select[Any]:
    """SQLite: SELECT group, sums… over placements planned to start in [start, end) [of one client].

    One statement (one snapshot, so a concurrent write is counted once or not at all): the
    daily rollup for the whole days of the range, plus the raw placements of the partial days
    at either end, plus the raw placements the rollups have not taken in yet (past the
    watermark, see `rollups`). `start` and `end` are naive UTC. Any other engine: the raw sums.
    """
    first = _day_floor(start) if start == _day_floor(start) else _day_floor(start) + timedelta(days=1)
    last = _day_floor(end)

    def raw(*conditions: ColumnElement[bool]) -> Select[Any]:
        query = select(
            group_expression(dialect, group_by).label("group"), *(expr.label(n) for n, expr in CONTRIBUTIONS)
        ).where(*conditions)
        return query if client_id is None else query.where(p.client_id == client_id)

    if first >= last or dialect != "sqlite":  # no whole day, or no rollups (PostgreSQL)
        return raw_aggregate_query(dialect, group_by, start, end, client_id)
    table = rollup_for(group_by, client_id)
    r = table.c
    location = r.location if "location" in r else literal(None)
    client = r.client_id if "client_id" in r else literal(None)
    rolled = select(
        _group(dialect, group_by, r.day, client, location).label("group"), *(r[n] for n in NAMES)
    ).where(r.day >= first.date(), r.day < last.date())
    if client_id is not None:
        rolled = rolled.where(r.client_id == client_id)
    parts: list[Select[Any]] = [rolled]
    if start < first:
        parts.append(raw(p.start_at >= start, p.start_at < first))
    if last < end:
        parts.append(raw(p.start_at >= last, p.start_at < end))
    # The whole days' placements the rollups have not taken in yet.
    watermark = select(rollup_state.c.last_rowid).where(rollup_state.c.id == 1).scalar_subquery()
    parts.append(raw(watermark < _ROWID, first <= _START_NOT_INDEXED, last > _START_NOT_INDEXED))
    both = union_all(*parts).subquery("parts")
    return (
        select(both.c.group, *(func.sum(both.c[n]).label(n) for n in NAMES))
        .group_by(both.c.group)
        .order_by(both.c.group)
    )


# ----- shaping -----


def _f(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole > 0 else None


def shape(sums: Mapping[str, Any]) -> dict[str, Any]:
    """Sums of one group (or the total) → the report's figures, rounded for output."""
    forecast_base = _f(sums.get("forecast_baseline_emissions_g"))
    forecast_chosen = _f(sums.get("forecast_emissions_g"))
    realised_base = _f(sums.get("realised_baseline_emissions_g"))
    realised_chosen = _f(sums.get("realised_emissions_g"))
    forecast_reconciled = _f(sums.get("forecast_emissions_reconciled_g"))
    realised_all = _f(sums.get("realised_emissions_all_g"))
    error = realised_all - forecast_reconciled
    cost, base_cost = _f(sums.get("cost_usd")), _f(sums.get("baseline_cost_usd"))
    return {
        "placements": int(sums.get("placements") or 0),
        "with_baseline": int(sums.get("with_baseline") or 0),
        "reconciled": int(sums.get("reconciled") or 0),
        "reconciled_with_bundled_data": int(sums.get("reconciled_with_bundled_data") or 0),
        "energy_kwh": round(_f(sums.get("energy_kwh")), 6),
        "forecast": {
            # Chosen vs baseline over placements that have a baseline (comparable); all_g: every one.
            "emissions_all_g": round(_f(sums.get("forecast_emissions_all_g")), 3),
            "emissions_g": round(forecast_chosen, 3),
            "baseline_emissions_g": round(forecast_base, 3),
            "savings_g": round(forecast_base - forecast_chosen, 3),
            "savings_pct": _pct(forecast_base - forecast_chosen, forecast_base),
        },
        "realised": {
            "energy_kwh": round(_f(sums.get("realised_energy_kwh")), 6),
            "emissions_all_g": round(realised_all, 3),
            "emissions_g": round(realised_chosen, 3),
            "baseline_emissions_g": round(realised_base, 3),
            "savings_g": round(realised_base - realised_chosen, 3),
            "savings_pct": _pct(realised_base - realised_chosen, realised_base),
        },
        "forecast_error": {
            "emissions_g": round(error, 3),
            "pct": _pct(error, forecast_reconciled),
            "abs_emissions_g": round(_f(sums.get("forecast_abs_error_g")), 3),
        },
        "cost": {
            "priced_placements": int(sums.get("priced_placements") or 0),
            "cost_usd": round(cost, 6),
            "baseline_cost_usd": round(base_cost, 6),
            "delta_usd": round(cost - base_cost, 6),
        },
    }


def group_key(value: Any, group_by: str) -> str:
    """A group value as the report prints it (PostgreSQL returns timestamps, SQLite text)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m" if group_by == "month" else "%Y-%m-%d")
    return str(value)


def build_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    group_by: str,
    start: datetime,
    end: datetime,
    scope: str,
) -> dict[str, Any]:
    """The JSON body of GET /v1/reports/savings."""
    totals: dict[str, float] = {}
    for row in rows:
        for name in NAMES:
            totals[name] = totals.get(name, 0.0) + _f(row.get(name))
    return {
        "from": start.isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z"),
        "group_by": group_by,
        "scope": scope,
        "units": {"emissions": "gCO2e", "energy": "kWh", "cost": "USD"},
        "signal": "location-based, average grid intensity (see docs/ledger.md)",
        "groups": [{"key": group_key(row["group"], group_by), **shape(row)} for row in rows],
        "total": shape(totals),
    }


CSV_COLUMNS: Final = (
    "group",
    "placements",
    "with_baseline",
    "reconciled",
    "reconciled_with_bundled_data",
    "energy_kwh",
    "forecast_emissions_g",
    "forecast_baseline_emissions_g",
    "forecast_savings_g",
    "forecast_savings_pct",
    "realised_emissions_g",
    "realised_baseline_emissions_g",
    "realised_savings_g",
    "realised_savings_pct",
    "forecast_error_g",
    "forecast_error_pct",
    "cost_usd",
    "baseline_cost_usd",
    "cost_delta_usd",
)


def flat(key: str, figures: Mapping[str, Any]) -> list[Any]:
    """One report group as a CSV/table row in `CSV_COLUMNS` order."""
    f, r, e, c = figures["forecast"], figures["realised"], figures["forecast_error"], figures["cost"]
    return [
        key,
        figures["placements"],
        figures["with_baseline"],
        figures["reconciled"],
        figures["reconciled_with_bundled_data"],
        figures["energy_kwh"],
        f["emissions_g"],
        f["baseline_emissions_g"],
        f["savings_g"],
        f["savings_pct"],
        r["emissions_g"],
        r["baseline_emissions_g"],
        r["savings_g"],
        r["savings_pct"],
        e["emissions_g"],
        e["pct"],
        c["cost_usd"],
        c["baseline_cost_usd"],
        c["delta_usd"],
    ]


def rows_of(report: Mapping[str, Any]) -> Iterable[list[Any]]:
    """Every group row, then the total row."""
    for group in report["groups"]:
        yield flat(group["key"], group)
    yield flat("TOTAL", report["total"])


def to_csv(report: Mapping[str, Any]) -> str:
    """The report as CSV (header + one row per group + a TOTAL row; empty cells for n/a)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows_of(report):
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


_TABLE_COLUMNS: Final = (
    ("group", "group"),
    ("n", "placements"),
    ("recon", "reconciled"),
    ("kWh", "energy_kwh"),
    ("fc base g", "forecast_baseline_emissions_g"),
    ("fc chosen g", "forecast_emissions_g"),
    ("fc saved %", "forecast_savings_pct"),
    ("real base g", "realised_baseline_emissions_g"),
    ("real chosen g", "realised_emissions_g"),
    ("real saved g", "realised_savings_g"),
    ("real saved %", "realised_savings_pct"),
    ("fc err %", "forecast_error_pct"),
    ("cost Δ USD", "cost_delta_usd"),
)


def to_table(report: Mapping[str, Any]) -> str:
    """A fixed-width text table for the terminal (`carbon-optimizer report`)."""
    index = {name: i for i, name in enumerate(CSV_COLUMNS)}
    cells: list[list[str]] = [[title for title, _ in _TABLE_COLUMNS]]
    for row in rows_of(report):
        cells.append([_cell(row[index[col]]) for _, col in _TABLE_COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(_TABLE_COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (
        f"Savings {report['from']} → {report['to']} by {report['group_by']} ({report['scope']}); "
        "gCO2e, kWh, USD"
    )
    return "\n".join([head, *lines]) + "\n"


def _pad(cell: str, width: int, *, left: bool) -> str:
    return cell.ljust(width) if left else cell.rjust(width)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
