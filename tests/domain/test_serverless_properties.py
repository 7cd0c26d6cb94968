"""Hypothesis properties of the serverless/VM cost model: monotone, free tier once, break-even."""

from __future__ import annotations

import asyncio
import dataclasses
import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.domain.serverless import (
    SERVERLESS_OPTIONS,
    DeploymentWorkload,
    Option,
    check,
    find_break_even,
    serverless_curve,
    vm_curve,
)
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.serverless_prices import bundled_egress, bundled_prices

REGION = {"aws": "us-east-1", "azure": "eastus", "gcp": "europe-west2"}  # a Cloud Run Tier 2 region
PRICES = {
    o: bundled_prices(o, REGION["aws" if o.value.startswith("aws") else o.value.split("_")[0]])
    for o in SERVERLESS_OPTIONS
}

options = st.sampled_from(SERVERLESS_OPTIONS)
volumes = st.floats(min_value=0, max_value=1e11, allow_nan=False)
durations = st.floats(min_value=1, max_value=200_000, allow_nan=False)
memories = st.floats(min_value=128, max_value=10_240, allow_nan=False)
free = st.booleans()


def total(option: Option, w: DeploymentWorkload, volume: float) -> float:
    return float(serverless_curve(PRICES[option], w, np.array([volume])).total[0])


@settings(max_examples=150, deadline=None)
@given(options, volumes, volumes, durations, memories, free, st.floats(0, 50))
def test_cost_is_monotone_in_volume(
    option: Option, a: float, b: float, duration: float, memory: float, free_tier: bool, response_kb: float
) -> None:
    w = DeploymentWorkload(
        1e6, duration, memory, free_tier=free_tier, response_kb=response_kb, trigger="event"
    )
    if check(PRICES[option], w) is not None:
        return
    lo, hi = sorted((a, b))
    assert total(option, w, lo) <= total(option, w, hi) + 1e-9


@settings(max_examples=150, deadline=None)
@given(options, volumes, durations, durations, memories, free)
def test_cost_is_monotone_in_duration(
    option: Option, volume: float, d1: float, d2: float, memory: float, free_tier: bool
) -> None:
    lo, hi = sorted((d1, d2))
    short = DeploymentWorkload(volume, lo, memory, free_tier=free_tier, trigger="event")
    long = dataclasses.replace(short, duration_ms=hi)
    if check(PRICES[option], long) is not None or check(PRICES[option], short) is not None:
        return
    assert total(option, short, volume) <= total(option, long, volume) + 1e-9


@settings(max_examples=150, deadline=None)
@given(options, volumes, durations, memories, memories, free)
def test_cost_is_monotone_in_memory(
    option: Option, volume: float, duration: float, m1: float, m2: float, free_tier: bool
) -> None:
    lo, hi = sorted((m1, m2))
    small = DeploymentWorkload(volume, duration, lo, free_tier=free_tier, trigger="event")
    big = dataclasses.replace(small, memory_mb=hi)
    if check(PRICES[option], big) is not None or check(PRICES[option], small) is not None:
        return
    assert total(option, small, volume) <= total(option, big, volume) + 1e-9


@settings(max_examples=150, deadline=None)
@given(options, volumes, volumes, durations, memories, st.floats(0, 100))
def test_free_tier_is_applied_once_per_account_month(
    option: Option, n1: float, n2: float, duration: float, memory: float, response_kb: float
) -> None:
    """Two functions in one account share one allowance: the credit on their combined month is
    no larger than the two credits each would get with a whole free tier of its own (tier
    discounts make bills sub-additive, so the credit is compared, not the bill), and it never
    exceeds the allowance's value however large the volume."""
    w = DeploymentWorkload(1e6, duration, memory, response_kb=response_kb, trigger="event")
    prices = PRICES[option]
    if check(prices, w) is not None:
        return
    paid = dataclasses.replace(w, free_tier=False)

    def credit(n: float) -> float:
        return total(option, w, n) - total(option, paid, n)  # ≤ 0

    together = credit(n1 + n2)
    assert together >= credit(n1) + credit(n2) - 1e-6
    ceiling = sum(
        prices.free_compute[m] * (prices.free_reference or {}).get(m, t.first)
        for m, t in prices.compute.items()
    )
    ceiling += prices.free_requests * prices.request_price
    ceiling += prices.egress.free_units * prices.egress.tiers.first
    assert -ceiling - 1e-6 <= together <= 1e-9


@functools.cache
def _table() -> OfferTable:
    table = asyncio.run(BundledPriceProvider().offers("aws", "us-east-1", PriceType.ON_DEMAND))
    assert table is not None
    return table


@settings(max_examples=60, deadline=None)
@given(volumes, volumes, st.floats(10, 5000), st.floats(128, 4096), st.floats(0.1, 1.0))
def test_vm_cost_is_monotone_in_volume(
    a: float, b: float, duration: float, memory: float, util: float
) -> None:
    w = DeploymentWorkload(1e6, duration, memory, vm_target_utilization=util, cpu_architecture="x86_64")
    lo, hi = sorted((a, b))
    curve = vm_curve(_table(), w, np.array([lo, hi]), bundled_egress("aws", "us-east-1"))
    assert curve.total[0] <= curve.total[1] + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.floats(10, 3000), st.floats(128, 3008), st.sampled_from([Option.LAMBDA_X86, Option.LAMBDA_ARM]))
def test_break_even_is_where_the_curves_cross(duration: float, memory: float, option: Option) -> None:
    w = DeploymentWorkload(1e6, duration, memory, cpu_architecture="x86_64")
    table, egress = _table(), bundled_egress("aws", "us-east-1")

    def s(v: np.ndarray) -> np.ndarray:
        return serverless_curve(PRICES[option], w, v).total

    def vm(v: np.ndarray) -> np.ndarray:
        return vm_curve(table, w, v, egress).total

    be = find_break_even(s, vm)
    if be is None:
        return
    below, above = np.array([be.volume * (1 - 2e-3)]), np.array([be.volume * (1 + 2e-3)])
    d_below, d_above = (s(below) - vm(below))[0], (s(above) - vm(above))[0]
    # The sign of serverless − VM changes across the reported volume, in the reported direction.
    if be.cheaper_below == "serverless":
        assert d_below < 0 <= d_above
    else:
        assert d_below >= 0 > d_above
