"""deploy/prometheus/alerts.yml without promtool: YAML structure, thresholds, metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge, Histogram

from carbon_optimizer import metrics

ALERTS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}
        assert group["rules"]
        rules.extend(group["rules"])
    return rules


def _exported_names() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            for family in value.describe():
                if family.type == "counter":
                    names.add(family.name + "_total")
                elif family.type == "histogram":
                    names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
                else:
                    names.add(family.name)
    return names


def test_every_rule_is_well_formed() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")")
        assert expr.count("{") == expr.count("}")
        assert expr.count("[") == expr.count("]")


def test_expressions_use_only_metrics_the_service_exports() -> None:
    exported = _exported_names()
    for rule in _rules():
        used = set(re.findall(r"\bcarbon_optimizer_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)


def test_thresholds_are_the_ones_the_issue_asks_for() -> None:
    by_name = {r["alert"]: r["expr"] for r in _rules()}
    assert "> 48 * 3600" in by_name["PriceDataStale"]
    assert by_name["PriceUpstreamErrorRate"].rstrip().endswith("> 0.05")
    assert by_name["PriceCacheMissRatioHigh"].rstrip().endswith("> 0.5")
    assert by_name["PriceUpstreamSlow"].rstrip().endswith(">= 30")
    # Outcome and result labels in the rules are the ones the code emits.
    assert 'outcome!="ok"' in by_name["PriceUpstreamErrorRate"]
    assert 'result=~"miss|stale"' in by_name["PriceCacheMissRatioHigh"]
