"""`carbon-optimizer report`: the savings report as a terminal table (or CSV / JSON).

Local by default: reads the ledger database from the settings directly (all clients: whoever can
open the database file or URL sees everything, like an admin key). `--server` asks a running
service instead, with the caller's API key, so a client sees only its own placements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO

import httpx

from carbon_optimizer.settings import Settings

# Same as carbon_optimizer.ledger.reports.GROUP_BY (not imported: SQLAlchemy stays out of CLI start).
GROUP_BY = ("client", "location", "day", "week", "month")


def register(sub: Any) -> None:
    """Add `report` to the top-level subparsers."""
    parser = sub.add_parser("report", help="savings report from the ledger (same as GET /v1/reports/savings)")
    parser.add_argument(
        "--from", dest="start", help="first day (YYYY-MM-DD or RFC 3339; default 30 days ago)"
    )
    parser.add_argument("--to", dest="end", help="end, exclusive (default now)")
    parser.add_argument("--group-by", default="month", choices=GROUP_BY)
    parser.add_argument("--client", help="only this client id")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print CSV")
    output.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--server", help="ask a running server instead of opening the database")
    parser.add_argument("--api-key", help="API key for --server (or CARBON_OPTIMIZER_CLIENT_API_KEY)")
    parser.set_defaults(func=_run)


def _bound(text: str | None, default: datetime) -> datetime:
    if text is None:
        return default
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        end = _bound(args.end, datetime.now(UTC).replace(microsecond=0))
        start = _bound(args.start, end - timedelta(days=30))
    except ValueError:
        err.write("error: --from/--to must be YYYY-MM-DD or RFC 3339 times\n")
        return 2
    if end <= start:
        err.write("error: --to must be after --from\n")
        return 2
    try:
        if args.server:
            report = _remote(args, start, end)
        else:
            report = asyncio.run(_local(Settings(), args.group_by, start, end, args.client))
    except _Failed as exc:
        err.write(f"error: {exc}\n")
        return 1
    from carbon_optimizer.ledger.reports import to_csv, to_table

    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    elif args.csv:
        out.write(to_csv(report))
    else:
        out.write(to_table(report))
    return 0


class _Failed(Exception):
    pass


async def _local(
    settings: Settings, group_by: str, start: datetime, end: datetime, client: str | None
) -> dict[str, Any]:
    from carbon_optimizer.ledger import db
    from carbon_optimizer.ledger.reports import build_report
    from carbon_optimizer.ledger.repository import LedgerRepository

    engine = db.create_engine(settings.database)
    try:
        if await db.current_revision(engine) is None:
            raise _Failed(
                f"no ledger in {db.redacted(db.database_url(settings.database))} (nothing recorded yet)"
            )
        rows = await LedgerRepository(engine).aggregate(group_by, start, end, client)
    except _Failed:
        raise
    except Exception as exc:
        raise _Failed(f"ledger database unavailable: {type(exc).__name__}") from exc
    finally:
        await engine.dispose()
    scope = "all clients" if client is None else f"client {client}"
    return build_report(rows, group_by=group_by, start=start, end=end, scope=scope)


def _remote(args: argparse.Namespace, start: datetime, end: datetime) -> dict[str, Any]:
    key = args.api_key or os.environ.get("CARBON_OPTIMIZER_CLIENT_API_KEY")
    params = {"from": start.isoformat(), "to": end.isoformat(), "group_by": args.group_by}
    if args.client:
        params["client"] = args.client
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(
            args.server.rstrip("/") + "/v1/reports/savings", params=params, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        raise _Failed(f"cannot reach {args.server}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        detail = response.json().get("detail") if response.content else None
        raise _Failed(f"server answered {response.status_code}: {detail or response.reason_phrase}")
    result: dict[str, Any] = response.json()
    return result
