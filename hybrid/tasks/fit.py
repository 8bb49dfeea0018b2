"""Fit a prompt to a token budget by searching the number of haystack units.

``build(n)`` must be a deterministic function of ``n`` (it re-seeds its own random generator), so the
search, and therefore the sample, depends only on the sample's seed."""

from __future__ import annotations

from collections.abc import Callable

from .errors import TooShort


def fit_units(build: Callable[[int], object], count: Callable[[object], int], budget: int, *,
              min_units: int, max_units: int, what: str) -> tuple[int, object, int]:
    """The largest ``n`` in [min_units, max_units] with ``count(build(n)) <= budget``, found by a
    galloping search from a linear estimate and then bisection. Returns (n, build(n), tokens)."""
    cache: dict[int, tuple[object, int]] = {}

    def tokens(n: int) -> int:
        if n not in cache:
            obj = build(n)
            cache[n] = (obj, count(obj))
        return cache[n][1]

    def fits(n: int) -> bool:
        return tokens(n) <= budget

    if not fits(min_units):
        raise TooShort(f"{what}: length too short; the task's template with its smallest haystack takes "
                         f"{tokens(min_units)} tokens but only {budget} are left after the tokens to generate. "
                         "Use a longer length.")
    if min_units == max_units:
        return min_units, *cache[min_units]
    probe = min(max_units, min_units + 16)
    per_unit = max((tokens(probe) - tokens(min_units)) / max(probe - min_units, 1), 1e-3)
    guess = int(min_units + (budget - tokens(min_units)) / per_unit)
    guess = max(min_units, min(max_units, guess))
    if guess > probe:  # one secant step over the whole range sharpens the estimate
        per_unit = max((tokens(guess) - tokens(min_units)) / (guess - min_units), 1e-3)
        guess = max(min_units, min(max_units, int(min_units + (budget - tokens(min_units)) / per_unit)))
    step = max(1, guess // 256)
    if fits(guess):
        lo, hi = guess, None
        while hi is None:
            if lo == max_units:
                return lo, *cache[lo]
            nxt = min(max_units, lo + step)
            if fits(nxt):
                lo, step = nxt, step * 2
            else:
                hi = nxt
    else:
        hi, lo = guess, None
        while lo is None:
            nxt = max(min_units, hi - step)
            if fits(nxt):
                lo = nxt
            else:
                hi, step = nxt, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, *cache[lo]
