"""How much of a task a sample holds: its haystack size in the task's own units, and whether that is
too small to be the task RULER defines (RULER's shortest length is 4096 tokens; at a few hundred
tokens with a digit-splitting tokenizer a needle task can hold only a handful of filler lines)."""

from __future__ import annotations

import statistics

from .registry import get_task

# (meta key, unit name) per haystack kind of a task
UNITS = {
    "noise": ("haystack_units", "noise lines"),
    "needle": ("haystack_units", "distractor needles"),
    "essay": ("haystack_units", "essay words"),
    "words": ("unique_words", "distinct words"),
    "coded": ("words", "coded words"),
    "documents": ("documents", "documents"),
}
# fewer units than this and the cell is flagged as thin: the haystack is too small to hide the needles
# in (a noise line or a distractor needle is one fact-sized unit; essay words are much smaller)
THIN = {"noise lines": 16, "distractor needles": 16, "essay words": 200, "distinct words": 20,
        "coded words": 100, "documents": 2}


def units(task: str, meta: dict) -> int | None:
    key, _ = UNITS.get(get_task(task).haystack, (None, None))
    v = meta.get(key) if key else None
    return int(v) if isinstance(v, (int, float)) else None


def unit_name(task: str) -> str:
    return UNITS.get(get_task(task).haystack, (None, "units"))[1]


def cell_shape(task: str, metas: list[dict]) -> dict:
    """{"unit", "median", "min", "thin"} over the samples of one (task, length) cell."""
    vals = [u for u in (units(task, m) for m in metas) if u is not None]
    name = unit_name(task)
    if not vals:
        return {"unit": name, "median": None, "min": None, "thin": False}
    med = statistics.median(vals)
    return {"unit": name, "median": med, "min": min(vals), "thin": med < THIN.get(name, 0)}
