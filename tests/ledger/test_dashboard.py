"""The Grafana panels query metrics the ledger really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import carbon_optimizer.ledger.metrics  # noqa: F401  (registers the metrics)

ROOT = Path(__file__).resolve().parents[2]


def test_ledger_panels_use_exported_metric_names() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/carbon-optimizer.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"carbon_optimizer_ledger_[a-z_]+", e)}
    exported = {sample.name for metric in REGISTRY.collect() for sample in metric.samples} | {
        metric.name for metric in REGISTRY.collect()
    }
    assert used, "no ledger panels"
    assert {
        "carbon_optimizer_ledger_placements_recorded_total",
        "carbon_optimizer_ledger_queue_depth",
    } <= used
    missing = {m for m in used if m not in exported and m.removesuffix("_total") not in exported}
    assert not missing
