"""Wilson 95% intervals for RULER scores.

A RULER cell is the mean over ``n`` samples of a per-sample score in [0, 1] (x100). The Wilson score
interval treats it as a binomial proportion over ``n`` trials; for string_match_all with several values
a sample can score a fraction, and the interval is then an approximation (slightly wide)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(score: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson interval (x100) of a score in 0..100 measured on ``n`` samples."""
    if n < 1:
        raise ValueError(f"an interval needs at least one sample, got n={n}")
    if math.isnan(score):
        return float("nan"), float("nan")
    p = min(max(score / 100.0, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def fmt_interval(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) else f"[{lo:.0f}, {hi:.0f}]"
