"""The ``eval:`` section of a recipe: which RULER tasks, at which lengths, how many samples.

    eval:
      tasks: [niah_single_1, niah_multikey_2, vt]   # task names or groups: all, niah, synthetic, essay, qa
      lengths: [1x, 2x, 4x]     # tokens (int) or multiples of the training length ("2x")
      samples: 100              # per task and length (500: 95% intervals of about ±4 points)
      batch_size: 8
      haystack: null            # essay text file; null = the shipped public-domain essay (RULER-like)
      seed: 0                   # evaluation seed (disjoint from training seeds, see hybrid/tasks/seeds.py)
      held_out: [niah_multikey_3]  # evaluated too, but never in the training data (marked with a dagger)

``parse_eval(d, path)`` returns a plain dict with every default filled in (task groups expanded,
lengths parsed) or raises ``hybrid.schema.SpecError(path, message)``. ``hybrid.eval.config`` turns the
result into an ``EvalConfig``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hybrid.schema import Field, SpecError, check_fields
from hybrid.tasks import RulerError, resolve_tasks

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$", re.IGNORECASE)
_SUFFIX = re.compile(r"^\s*(\d+)\s*([kK])\s*$")


def parse_length(value: Any, path: str) -> int | str:
    """An int (tokens), '4k' (= 4096), or a multiple of the training length such as '2x' (kept as str)."""
    if isinstance(value, bool):
        raise SpecError(path, f"expected a length in tokens or a multiple like '2x', got {value!r}")
    if isinstance(value, int):
        if value < 16:
            raise SpecError(path, f"a length must be at least 16 tokens, got {value}")
        return value
    if isinstance(value, str):
        m = _REL.match(value)
        if m:
            if float(m.group(1)) <= 0:
                raise SpecError(path, f"a multiple of the training length must be positive, got {value!r}")
            return f"{m.group(1)}x"
        m = _SUFFIX.match(value)
        if m:
            return int(m.group(1)) * 1024
        if value.strip().isdigit():
            return parse_length(int(value), path)
    raise SpecError(path, f"expected a length in tokens (e.g. 4096 or '4k') or a multiple of the training "
                          f"length (e.g. '2x'), got {value!r}")


def _lengths(value: Any, path: str) -> tuple[int | str, ...]:
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(path, f"expected a list of lengths, got {value!r}")
    return tuple(parse_length(v, f"{path}[{i}]") for i, v in enumerate(value))


def _tasks(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise SpecError(path, f"expected a list of task names, got {value!r}")
    try:
        return tuple(resolve_tasks(value))
    except RulerError as e:
        raise SpecError(path, str(e)) from None


def _held_out(value: Any, path: str) -> tuple[str, ...]:
    return () if value is None else _tasks(value, path)


def _file(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, f"expected a file path, got {value!r}")
    if not Path(value).expanduser().is_file():
        raise SpecError(path, f"file not found: {value}")
    return value


EVAL_FIELDS: tuple[Field, ...] = (
    Field("tasks", list, ("niah_single_1", "niah_multikey_1", "niah_multikey_2", "vt"), parse=_tasks,
          doc="RULER task names or groups (all, niah, synthetic, essay, qa)"),
    Field("lengths", list, ("1x", "2x", "4x"), parse=_lengths,
          doc="lengths in tokens (4096, '4k') or multiples of the training length ('2x')"),
    Field("samples", int, 100, minimum=1, doc="samples per task and length (500: 95% intervals of about ±4 points)"),
    Field("batch_size", int, 8, minimum=1, doc="prompts generated together"),
    Field("haystack", str, None, nullable=True, parse=_file, doc="essay text file; null = the shipped essay"),
    Field("seed", int, 0, minimum=0, doc="evaluation seed"),
    Field("held_out", list, (), parse=_held_out,
          doc="tasks evaluated but never trained on (a recipe with ruler_mix training data refuses them in "
              "train.data.tasks); reported apart, marked with a dagger"),
    Field("squad", str, None, nullable=True, parse=_file, doc="local SQuAD v2 JSON for qa_1"),
    Field("hotpotqa", str, None, nullable=True, parse=_file, doc="local HotpotQA JSON for qa_2"),
)


def parse_eval(d: Any, path: str = "eval") -> dict:
    """The ``eval:`` section with every default filled in; ``held_out`` tasks are left out of ``tasks``
    (they are evaluated after them)."""
    out = check_fields(EVAL_FIELDS, d, path, "the eval section")
    out["held_out"] = tuple(out["held_out"])
    out["tasks"] = tuple(t for t in out["tasks"] if t not in out["held_out"])
    return out


def check_held_out(held_out: tuple[str, ...], train_data: Any, path: str = "eval.held_out") -> None:
    """Refuse a held-out task that the recipe's ``ruler_mix`` training data trains on (all offline tasks
    when ``train.data.tasks`` is not given)."""
    if not held_out or not isinstance(train_data, dict) or train_data.get("kind") != "ruler_mix":
        return
    from hybrid.tasks import OFFLINE

    trained = resolve_tasks(train_data.get("tasks") or list(OFFLINE))
    both = [t for t in held_out if t in trained]
    if both:
        raise SpecError(path, f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} also in the training data "
                              f"(train.data.tasks: {', '.join(trained)}); a held-out task must never be trained on")
