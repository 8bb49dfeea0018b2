"""The RULER task registry and the one sample generator everything else uses.

``TASKS`` maps a task name to its task object (``.metric``, ``.gen_tokens``, ``.haystack``,
``.description``). ``make_sample(task, max_tokens, tokenizer, rng)`` returns a ``Sample`` whose prompt
plus ``gen_tokens`` fits ``max_tokens`` tokens of ``tokenizer`` (counting a leading BOS when the tokenizer
has one: the model reads ``<bos> prompt``), found by searching the haystack size.
The sample is a pure function of one seed drawn from ``rng`` (see ``seeds.py`` for the seed ranges).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from hybrid.schema import suggest

from .aggregate import CommonWords, FrequentWords
from .base import Context, Sample, Task
from .errors import RulerError, TooShort
from .fit import fit_units
from .haystack import essay_words, is_default_essay
from .niah import NiahTask, niah_tasks
from .qa import QaTask
from .tokens import check_ids, check_text, model_ids
from .vt import VariableTracking

TASKS: dict[str, Task] = {t.name: t for t in [*niah_tasks(), VariableTracking(), CommonWords(), FrequentWords(),
                                               QaTask("qa_1", "squad"), QaTask("qa_2", "hotpotqa")]}

OFFLINE = tuple(n for n, t in TASKS.items() if t.needs_data is None)
GROUPS: dict[str, tuple[str, ...]] = {
    "all": OFFLINE,
    "niah": tuple(n for n in OFFLINE if n.startswith("niah")),
    "synthetic": tuple(n for n in OFFLINE if TASKS[n].haystack != "essay"),  # exact RULER, no essay
    "essay": tuple(n for n in OFFLINE if TASKS[n].haystack == "essay"),
    "qa": ("qa_1", "qa_2"),
}


# value formats: ``NAME:N-digit`` is task NAME with number values of N digits (2..7) instead of RULER's 7
VALUE_FORMAT = re.compile(r"^(?P<base>[a-z0-9_]+):(?P<digits>\d+)-digit$")
DIGITS = range(2, 8)
_VARIANTS: dict[str, Task] = {}


def _variant(task: str) -> Task | None:
    """The task a ``NAME:N-digit`` name stands for, or None when ``task`` has no value format."""
    if ":" not in task:
        return None
    m = VALUE_FORMAT.match(task)
    if not m:
        raise RulerError(f"bad task name {task!r}: a value format is written NAME:N-digit, e.g. "
                         "niah_single_1:3-digit")
    base, digits = m["base"], int(m["digits"])
    t = get_task(base)
    numbered = [n for n, x in TASKS.items() if isinstance(x, NiahTask) and x.value_type == "numbers"]
    if base not in numbered:
        raise RulerError(f"task {base!r} has no number values to shorten (in {task!r}); value formats apply to "
                         f"{', '.join(numbered)}")
    if digits not in DIGITS:
        raise RulerError(f"{task!r}: values of {digits} digits; choose {DIGITS.start} to {DIGITS.stop - 1}")
    if task not in _VARIANTS:
        _VARIANTS[task] = t.with_digits(digits)
    return _VARIANTS[task]


def get_task(task: str | Task) -> Task:
    """The task object of a name: a task of ``TASKS``, or ``NAME:N-digit`` (that task with number
    values of N digits, e.g. ``niah_single_1:3-digit``)."""
    if isinstance(task, Task):
        return task
    variant = _variant(task)
    if variant is not None:
        return variant
    if task not in TASKS:
        raise RulerError(f"unknown RULER task {task!r}{suggest(task, list(TASKS) + list(GROUPS))}; known tasks: "
                         f"{', '.join(TASKS)}; groups: {', '.join(GROUPS)}")
    return TASKS[task]


def resolve_tasks(names: Iterable[str] | str) -> list[str]:
    """Task names and group names ('all', 'niah', 'synthetic', 'essay', 'qa'), comma lists allowed,
    in order, without duplicates. Unknown names raise ``RulerError`` with the known list and a near miss."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            for n in GROUPS.get(name, (name,)):
                get_task(n)
                if n not in out:
                    out.append(n)
    if not out:
        raise RulerError(f"no RULER tasks given; known tasks: {', '.join(TASKS)}")
    return out


def is_ruler_like(task: str | Task) -> bool:
    """True for the essay tasks: their haystack is never Paul Graham's essays here (the shipped default
    is a public-domain essay, or the user's ``--haystack`` file), so their scores are RULER-like."""
    return get_task(task).uses_essay


def _seed_of(rng) -> int:
    if isinstance(rng, random.Random):
        return rng.getrandbits(64)
    if isinstance(rng, int) and not isinstance(rng, bool):
        return rng
    raise TypeError(f"rng must be a random.Random or an int seed, got {type(rng).__name__}")


def make_sample(task: str | Task, max_tokens: int, tokenizer, rng, *, haystack: str | None = None,
                data: str | None = None) -> Sample:
    """One RULER sample of ``task`` sized for ``max_tokens`` tokens (prompt + tokens to generate).

    ``rng``: a ``random.Random`` (one 64-bit seed is drawn from it) or an int seed.
    ``haystack``: an essay text file for the essay tasks (default: the shipped public-domain essay).
    ``data``: the local SQuAD / HotpotQA JSON file for qa_1 / qa_2.
    Raises ``RulerError`` when the length is too short for the template or the tokenizer cannot
    represent the task."""
    t = get_task(task)
    seed = _seed_of(rng)
    budget = int(max_tokens) - t.gen_tokens
    if budget <= 0:
        raise TooShort(f"{t.name} at {max_tokens} tokens: length too short; the task alone generates "
                         f"{t.gen_tokens} tokens")
    ctx = Context(int(max_tokens), essay_words(haystack) if t.uses_essay else (), data)
    ids_of: dict[str, list[int]] = {}

    def count(built) -> int:
        ids = model_ids(tokenizer, built.prompt)
        ids_of[built.prompt] = ids
        return len(ids)

    _, built, ntok = fit_units(lambda n: t.build(n, seed, ctx), count, budget, min_units=t.min_units,
                               max_units=t.max_units(ctx), what=f"{t.name} at {max_tokens} tokens")
    for what, text in built.checks:
        check_text(tokenizer, text, f"{what} of task {t.name}")
    check_ids(tokenizer, ids_of[built.prompt], t.name)
    meta = dict(built.meta)
    if t.uses_essay:
        meta["haystack"] = "default" if is_default_essay(haystack) else str(haystack)
    return Sample(built.prompt, list(built.answers), t.gen_tokens, t.name, int(max_tokens), ntok,
                  built.completion, seed, meta)
