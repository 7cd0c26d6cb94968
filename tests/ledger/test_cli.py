"""`carbon-optimizer db …` and `carbon-optimizer report` against a real SQLite ledger."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from carbon_optimizer.cli import main
from carbon_optimizer.commands import report as report_command
from carbon_optimizer.ledger import db, reports
from carbon_optimizer.ledger.repository import LedgerRepository
from carbon_optimizer.settings import DatabaseSettings
from tests.ledger.helpers import T0, make_ledger, option, record


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def _seed(directory: Path) -> None:
    engine = db.create_engine(DatabaseSettings(data_dir=str(directory)))
    ledger, recorder = make_ledger(LedgerRepository(engine))
    try:
        await record(ledger, "alice", option("DE", T0, intensity=100), option("PL", T0, intensity=400))
        await record(ledger, "bob", option("FR", T0, intensity=50), None)
    finally:
        await recorder.aclose()
        await engine.dispose()


def test_db_upgrade_current_downgrade_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_OPTIMIZER_DATABASE__DATA_DIR", str(tmp_path))
    code, out, _ = _cli("report")
    assert code == 1  # nothing there yet
    code, out, err = _cli("db", "current")
    assert code == 0, err
    assert "revision: (empty)" in out
    code, out, _ = _cli("db", "upgrade")
    assert code == 0
    assert f"revision: {db.head_revision()}" in out
    assert str(tmp_path) in out

    asyncio.run(_seed(tmp_path))
    code, table, err = _cli("report", "--from", "2026-06-01", "--to", "2026-07-01", "--group-by", "client")
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0].startswith("Savings 2026-06-01T00:00:00Z → 2026-07-01T00:00:00Z by client (all clients)")
    assert [line.split()[0] for line in lines[3:]] == ["alice", "bob", "TOTAL"]
    assert "75.00" in lines[3]  # alice's forecast saving: (400 − 100) / 400
    code, csv_text, _ = _cli(
        "report", "--from", "2026-06-01", "--to", "2026-07-01", "--csv", "--client", "bob"
    )
    assert code == 0
    assert csv_text.splitlines()[1].startswith("2026-06,1,0,")
    code, raw, _ = _cli("report", "--from", "2026-06-01", "--to", "2026-07-01", "--json")
    assert json.loads(raw)["total"]["placements"] == 2
    code, _, err = _cli("report", "--from", "June")
    assert code == 2
    assert "--from" in err

    code, out, _ = _cli("db", "downgrade", "base")
    assert code == 0
    assert "revision: (empty)" in out


def test_cli_group_by_choices_match_the_reports() -> None:
    assert tuple(report_command.GROUP_BY) == tuple(reports.GROUP_BY)
