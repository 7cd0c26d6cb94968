"""Kinds of carbon data from source labels, and the weakest-kind rule for mixed windows."""

from __future__ import annotations

import pytest

from carbon_optimizer.domain.data_quality import kind_of, summary, weakest


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        ("electricitymaps:forecast", "forecast"),
        ("electricitymaps:forecast(stale)", "forecast"),
        ("watttime:co2_moer:forecast", "forecast"),
        ("electricitymaps:history", "history"),
        ("carbonintensity-uk:actual", "history"),
        ("electricitymaps:history(stale)", "history"),
        ("fallback:replay-2023", "replay"),
        ("fallback:annual-2025", "flat"),
        ("electricitymaps:latest", "flat"),
        ("electricitymaps:forecast(extended)", "flat"),
    ],
)
def test_kind_of_each_chain_label(label: str, kind: str) -> None:
    assert kind_of(label) == kind


def test_a_mixed_window_is_its_weakest_kind() -> None:
    assert weakest(["electricitymaps:history", "electricitymaps:forecast"]) == "forecast"
    assert weakest(["electricitymaps:forecast", "fallback:replay-2023"]) == "replay"
    assert weakest(["fallback:replay-2023", "fallback:annual-2025"]) == "flat"
    assert weakest(["electricitymaps:history"]) == "history"


def test_summary_lists_every_kind() -> None:
    assert summary(["flat", "flat", "replay"]) == {"flat": 2, "replay": 1, "forecast": 0, "history": 0}
