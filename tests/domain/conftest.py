"""Fixtures of the domain tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from carbon_optimizer.domain import order_stats


@pytest.fixture(params=[False, True], ids=["one kth", "kth pair"])
def kth_pair(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run the test under each `np.partition` form (`domain.order_stats`), then restore the form."""
    before = order_stats.pair_kth()
    order_stats.use_pair_kth(request.param)
    yield bool(request.param)
    order_stats.use_pair_kth(before)
