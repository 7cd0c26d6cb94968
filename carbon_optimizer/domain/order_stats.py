"""Row-wise order statistics by `np.partition`, in the `kth` form this machine runs fastest.

Why two forms: NumPy (2.x) partitions at a single `kth` through its SIMD selection (x86-simd-sort,
AVX-512 where the CPU has it) and at several `kth` through the classic introselect, and which is
faster depends on the CPU. Measured with NumPy 2.4 at the shapes the engine uses:

| partition of | AMD EPYC (Zen 4) | Intel Xeon (AVX-512) |
|---|---:|---:|
| 5 × 1,000 draws, one kth | 43–47 µs | 7–9 µs |
| 5 × 1,000 draws, a kth pair | 12–20 µs | 28–48 µs |
| 200 × 2,016 scores, one kth | 3.8 ms | 0.64 ms |
| 200 × 2,016 scores, a kth pair | 1.5 ms | 1.7 ms |

(Zen 4's AVX-512 compress-store is microcoded: a suspicion, not verified.) Both forms give the very
same order statistics, so which one runs changes no answer, only its speed. The composition root
times both once per process (`carbon_optimizer.kth_form`) and says which here (`use_pair_kth`);
until it does, the single `kth` form (NumPy's own default path) is used.
"""

from __future__ import annotations

import numpy as np

from carbon_optimizer.domain.models import FloatArray

_pair = False  # the form in use: see `use_pair_kth`


def use_pair_kth(pair: bool) -> None:
    """Select the form: True partitions at a `kth` pair, False at one `kth` (the default)."""
    global _pair  # one process-wide choice of speed; no answer depends on it
    _pair = pair


def pair_kth() -> bool:
    """The form in use (True: a `kth` pair)."""
    return _pair


def row_kth(values: FloatArray, k: int, *, pair: bool | None = None) -> FloatArray:
    """Each row's `k`-th smallest value (0-based) of a 2-D array; `pair` overrides the form."""
    use = _pair if pair is None else pair
    if use and k >= 1:
        # The (k-1)-th is selected too, only for the faster form; the k-th is the same value.
        return np.asarray(np.partition(values, (k - 1, k), axis=1)[:, k])
    return np.asarray(np.partition(values, k, axis=1)[:, k])


def row_kth_two(values: FloatArray, low: int, *, pair: bool | None = None) -> tuple[FloatArray, FloatArray]:
    """Each row's `low`-th and (`low`+1)-th smallest values (0-based) of a 2-D array.

    The single form selects the (`low`+1)-th and takes the largest value left of it, which is
    the `low`-th: every value left of the selected one is at most it, so the largest of them is
    the order statistic below it (ties included).
    """
    use = _pair if pair is None else pair
    high = low + 1
    if use:
        part = np.partition(values, (low, high), axis=1)
        return np.asarray(part[:, low]), np.asarray(part[:, high])
    part = np.partition(values, high, axis=1)
    return np.asarray(part[:, :high].max(axis=1)), np.asarray(part[:, high])
