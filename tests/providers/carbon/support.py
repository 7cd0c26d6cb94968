"""Helpers for the live carbon adapters' tests: fixture loading, a manual clock, metric reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

FIXTURES = Path(__file__).parent / "fixtures"


def load(source: str, name: str) -> Any:
    """A fixture body (built from the documented wire shapes; values invented)."""
    return json.loads((FIXTURES / source / name).read_text())


def raw(source: str, name: str) -> bytes:
    return (FIXTURES / source / name).read_bytes()


class FakeTime:
    """Monotonic clock + sleep that advance instantly and record every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def upstream_count(upstream: str, endpoint: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "carbon_optimizer_upstream_requests_total",
        {"upstream": upstream, "endpoint": endpoint, "outcome": outcome},
    )
    return value or 0.0
