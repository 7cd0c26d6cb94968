"""Which scored candidates an answer shows: per-location caps and collapsed duplicates.

Why: a scheduler wants "the best, plus the best alternatives elsewhere". Ranked over every
(location, start) pair, one location with a long flat stretch fills the whole answer with
consecutive hours of identical numbers (the README example once returned five `gcp/europe-west1`
options in a row while DE sat at rank 23). Two rules fix that, both on the score array the engine
already has, so nothing here costs a Python object per candidate:

- `max_per_location = m` keeps each location's `m` best starts, then ranks those across
  locations (m = 1: each location's best start). `None` keeps every pair (the old behaviour).
- Exact duplicates collapse: two starts of the same location with the same window mean have the
  same emissions, cost and score, so only the earliest is shown (the tie rule's pick anyway).

Both keep the contract's order: lower score, then earlier start, then earlier location.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from carbon_optimizer.domain.models import FloatArray, IntArray
from carbon_optimizer.domain.order_stats import row_kth

TopK = Callable[[FloatArray, int], IntArray]


def _dedupe(flat: IntArray, means: FloatArray, starts: int) -> IntArray:
    """`flat` (best first) without later entries that repeat an earlier (row, mean)."""
    rows = flat // starts
    values = means.reshape(-1)[flat]
    seen: set[tuple[int, float]] = set()
    keep: list[int] = []
    for i, key in enumerate(zip(rows.tolist(), values.tolist(), strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(flat[keep], dtype=np.int64)


def _duplicate_mask(means: FloatArray) -> np.ndarray:
    """True where a start repeats the window mean of an earlier start of the same row."""
    order = np.argsort(means, axis=1, kind="stable")
    ordered = np.take_along_axis(means, order, axis=1)
    repeat = np.zeros(means.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    mask = np.zeros(means.shape, dtype=bool)
    np.put_along_axis(mask, order, repeat, axis=1)
    return mask


def _few_per_row(scores: FloatArray, means: FloatArray, take: int, collapse: bool) -> IntArray | None:
    """Each row's `take` best (distinct) starts from a small superset, or None when unsure.

    Fast path for `max_per_location` > 1: every start scoring at most the row's (2·take)-th
    smallest score is kept (all ties included, so the superset is exact), a row whose means are
    all equal keeps its first start only, and the superset is sorted instead of the whole grid.
    When some row has fewer than `take` distinct starts in it, the caller falls back to sorting
    everything (exact in every case; about 30× slower at 200 × 2016).
    """
    rows, starts = scores.shape
    want = min(starts, 2 * take)
    if want >= starts:
        return None
    thresh = row_kth(scores, want - 1)  # in the form this machine runs faster (`order_stats`)
    mask = scores <= thresh[:, None]
    if collapse:
        constant = means.min(axis=1) == means.max(axis=1)
        mask[constant, 1:] = False
    r, c = np.nonzero(mask)
    if collapse:
        v = means[r, c]
        order = np.lexsort((c, v, r))
        r, c, v = r[order], c[order], v[order]
        first = np.ones(r.size, dtype=bool)
        first[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
        r, c = r[first], c[first]
    order = np.lexsort((c, scores[r, c], r))
    r, c = r[order], c[order]
    counts = np.bincount(r, minlength=rows)
    complete = counts >= take
    if collapse:
        complete |= constant
    if not bool(complete.all()):
        return None
    position = np.arange(r.size) - np.searchsorted(r, r, side="left")
    keep = position < take
    return np.asarray(r[keep].astype(np.int64) * starts + c[keep], dtype=np.int64)


def select(
    scores: FloatArray,
    means: FloatArray,
    k: int,
    max_per_location: int | None,
    top_k: TopK,
    collapse: bool = True,
) -> IntArray:
    """Flat indices (row·K + start) of the candidates to show, best first, at most `k`.

    `scores` and `means` are (rows, K); `top_k` is the engine's exact top-k over all pairs.
    Without `collapse` (the engine's raw ranking) duplicates stay in.
    """
    rows, starts = scores.shape
    size = scores.size
    if max_per_location is None and not collapse:
        return top_k(scores, min(k, size))
    if max_per_location is None:
        # Grow the top-k until enough distinct candidates remain (flat data repeats a lot).
        want = min(k, size)
        while True:
            picked = _dedupe(top_k(scores, want), means, starts)
            if picked.size >= k or want >= size:
                return picked[:k]
            want = min(size, want * 4)
    if max_per_location < 1:
        raise ValueError("max_per_location must be >= 1 (or None)")
    if max_per_location == 1:
        # argmin returns the first minimum: the earliest start on ties, as the tie rule says.
        cols = np.argmin(scores, axis=1).astype(np.int64)
        flat = np.arange(rows, dtype=np.int64) * starts + cols
    else:
        found = _few_per_row(scores, means, min(max_per_location, starts), collapse)
        if found is not None:
            flat = found
        else:
            masked = np.where(_duplicate_mask(means), np.inf, scores) if collapse else scores
            take = min(max_per_location, starts)
            cols = np.argsort(masked, axis=1, kind="stable")[:, :take]
            flat = (np.arange(rows, dtype=np.int64)[:, None] * starts + cols).reshape(-1)
            flat = flat[np.isfinite(masked.reshape(-1)[flat])]
    values = scores.reshape(-1)[flat]
    order = np.lexsort((flat // starts, flat % starts, values))[:k]
    return np.asarray(flat[order], dtype=np.int64)
