"""`carbon-optimizer plan`: --per-location, and the carbon data kind in the table (issue 13)."""

from __future__ import annotations

import io
import json

from carbon_optimizer.cli import main

BASE = ["plan", "--duration", "2h", "--vcpus", "2", "--memory", "4", "--mode", "carbon"]
WINDOW = ["--start", "2026-06-03T10:00:00Z", "--deadline", "2026-06-04T10:00:00Z"]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_per_location_widens_and_all_ranks_every_pair() -> None:
    code, out, err = run(*BASE, "-l", "DE", "--json", "--top", "4", "--per-location", "3")
    assert code == 0, err
    options = json.loads(out)["options"]
    assert len(options) == 3
    assert {o["location"]["zone"] for o in options} == {"DE"}
    code, out, err = run(*BASE, "-l", "DE", "--json", "--top", "4", "--per-location", "all")
    assert code == 0, err
    assert len(json.loads(out)["options"]) == 4


def test_per_location_rejects_zero() -> None:
    code, out, _ = run(*BASE, "-l", "DE", "--per-location", "0")
    assert code == 2
    assert out == ""


def test_table_shows_the_kind_of_carbon_data() -> None:
    code, out, err = run(*BASE, "-l", "DE", "-l", "gcp:europe-west1")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert "data" in header.split()
    kinds = {row.split()[-2] for row in rows[:2]}  # the column before the carbon source
    assert kinds == {"replay", "flat"}
    assert "carbon data of the scored locations: flat 1, replay 1" in out
    assert "warning: start time cannot be optimised for gcp/europe-west1" in out
