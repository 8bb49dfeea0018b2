"""RULER's scores: case-insensitive substring matching, x100."""

from __future__ import annotations

import re

from hybrid.tasks.base import STRING_MATCH_ALL, STRING_MATCH_PART

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(pred: str) -> str:
    """Control characters become newlines and surrounding space is stripped (as RULER does)."""
    return _CONTROL.sub("\n", pred).strip()


def match_all(pred: str, answers: list[str]) -> float:
    """Fraction of the reference answers found in the prediction."""
    p = postprocess(pred).lower()
    return sum(a.lower() in p for a in answers) / len(answers)


def match_part(pred: str, answers: list[str]) -> float:
    """1 if any reference answer is found in the prediction."""
    p = postprocess(pred).lower()
    return float(any(a.lower() in p for a in answers))


def score_one(metric: str, pred: str, answers: list[str]) -> float:
    if metric == STRING_MATCH_ALL:
        return match_all(pred, answers)
    if metric == STRING_MATCH_PART:
        return match_part(pred, answers)
    raise ValueError(f"unknown metric {metric!r}")


def score(metric: str, preds: list[str], refs: list[list[str]]) -> float:
    """Mean over samples x100 (RULER's string_match_all / string_match_part)."""
    if not preds:
        return float("nan")
    return 100.0 * sum(score_one(metric, p, r) for p, r in zip(preds, refs)) / len(preds)
