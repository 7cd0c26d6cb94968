"""`domain/diversity.select` against a brute-force oracle on small random score grids."""

from __future__ import annotations

import numpy as np
import pytest

from carbon_optimizer.domain.diversity import select
from carbon_optimizer.domain.scoring import _top_k


def _oracle(scores: np.ndarray, means: np.ndarray, k: int, per: int | None) -> list[int]:
    rows, starts = scores.shape
    order = sorted(range(scores.size), key=lambda f: (scores.flat[f], f % starts, f // starts))
    seen: set[tuple[int, float]] = set()
    taken: dict[int, int] = {}
    out: list[int] = []
    for flat in order:
        row = flat // starts
        key = (row, float(means.flat[flat]))
        if key in seen:
            continue
        seen.add(key)
        if per is not None and taken.get(row, 0) >= per:
            continue
        taken[row] = taken.get(row, 0) + 1
        out.append(flat)
    return out[:k]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("per", [None, 1, 2, 3])
@pytest.mark.usefixtures("kth_pair")
def test_select_matches_brute_force(seed: int, per: int | None) -> None:
    rng = np.random.default_rng(seed)
    rows, starts = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    # Few distinct values, so ties and duplicates are common; score = energy(row) × mean.
    means = rng.integers(1, 4, size=(rows, starts)).astype(np.float64)
    scores = means * rng.integers(1, 3, size=(rows, 1))
    k = int(rng.integers(1, 8))
    assert select(scores, means, k, per, _top_k).tolist() == _oracle(scores, means, k, per)


def test_without_collapse_duplicates_stay() -> None:
    scores = np.array([[1.0, 1.0, 1.0]])
    assert select(scores, scores, 3, None, _top_k, collapse=False).tolist() == [0, 1, 2]
    assert select(scores, scores, 3, None, _top_k).tolist() == [0]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("per", [2, 3])
@pytest.mark.usefixtures("kth_pair")
def test_fast_per_location_path_matches_brute_force_on_wider_grids(seed: int, per: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    rows, starts = int(rng.integers(1, 7)), int(rng.integers(10, 60))
    means = rng.integers(1, 30, size=(rows, starts)).astype(np.float64)
    means[0] = 7.0  # a flat row: one distinct start
    scores = means * rng.integers(1, 3, size=(rows, 1))
    k = int(rng.integers(1, 12))
    assert select(scores, means, k, per, _top_k).tolist() == _oracle(scores, means, k, per)
