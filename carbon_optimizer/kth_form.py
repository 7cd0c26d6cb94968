"""Which `np.partition` form this machine runs faster, timed once at start-up (see `domain.order_stats`).

Why at run time: the faster form depends on the CPU (3–4× either way between this project's AMD
and Intel machines) and no answer depends on it, so the process measures both on an array of the
engine's shape and keeps the faster. It takes ~1–2 ms, once per process. Interleaved best-of-7
timings decide it; where the two are close either choice is fine, so noise cannot cost much.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import numpy as np

from carbon_optimizer.domain import order_stats

log = logging.getLogger(__name__)
_SHAPE: Final = (5, 1000)  # the uncertainty step's draws of the top options
_ROUNDS: Final = 7


def pair_is_faster(rounds: int = _ROUNDS) -> bool:
    """Whether partitioning rows at a `kth` pair beats one `kth` here (best of `rounds` each)."""
    values = np.random.default_rng(0).random(_SHAPE)
    low = (_SHAPE[1] - 1) // 2

    def single() -> object:
        return order_stats.row_kth_two(values, low, pair=False)

    def pair() -> object:
        return order_stats.row_kth_two(values, low, pair=True)

    best = {single: float("inf"), pair: float("inf")}
    for _ in range(rounds):
        for form in (single, pair):
            best[form] = min(best[form], _timed(form))
    return best[pair] < best[single]


def _timed(form: Callable[[], object]) -> float:
    start = time.perf_counter()
    form()
    return time.perf_counter() - start


def choose() -> bool:
    """Time both forms and use the faster from now on; returns whether that is the pair."""
    pair = pair_is_faster()
    order_stats.use_pair_kth(pair)
    log.debug("np.partition form: %s kth", "a pair of" if pair else "one")
    return pair
