"""The ``eval:`` section of a recipe: which RULER tasks, at which lengths, how many samples.

    eval:
      tasks: [niah_single_1, niah_multikey_2, vt]   # task names or groups: all, niah, synthetic, essay, qa
      lengths: [1x, 2x, 4x]     # tokens (int) or multiples of the training length ("2x")
      samples: 50               # per task and length
      batch_size: 8
      haystack: null            # essay text file; null = the shipped public-domain essay (RULER-like)
      seed: 0                   # evaluation seed (disjoint from training seeds, see ruler/seeds.py)

``EvalConfig.from_dict(d, path="eval")`` checks every key and value and raises
``hybrid.blocks.spec.SpecError(path, message)`` with a near-miss suggestion.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hybrid.blocks.spec import SpecError, suggest

from .ruler.errors import RulerError
from .ruler.tasks import resolve_tasks

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$", re.IGNORECASE)
_SUFFIX = re.compile(r"^\s*(\d+)\s*([kK])\s*$")


def parse_length(value, path: str) -> int | str:
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


def resolve_length(length: int | str, train_length: int | None) -> int:
    if isinstance(length, int):
        return length
    if train_length is None:
        raise SpecError("eval.lengths", f"{length!r} is relative to the training length, which is unknown here; "
                                        "give lengths in tokens")
    return int(round(float(length[:-1]) * train_length))


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = ("niah_single_1", "niah_multikey_1", "niah_multikey_2", "vt")
    lengths: tuple[int | str, ...] = ("1x", "2x", "4x")
    samples: int = 20
    batch_size: int = 8
    haystack: str | None = None
    seed: int = 0
    squad: str | None = None
    hotpotqa: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None, path: str = "eval") -> EvalConfig:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise SpecError(path, f"must be a mapping of {', '.join(cls.keys())}; got {type(d).__name__}")
        known = cls.keys()
        for key in d:
            if key not in known:
                raise SpecError(f"{path}.{key}", f"unknown key; allowed: {', '.join(known)}{suggest(key, known)}")
        kw: dict = {}
        if "tasks" in d:
            tasks = d["tasks"]
            if isinstance(tasks, str):
                tasks = [tasks]
            if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
                raise SpecError(f"{path}.tasks", f"expected a list of task names, got {tasks!r}")
            try:
                kw["tasks"] = tuple(resolve_tasks(tasks))
            except RulerError as e:
                raise SpecError(f"{path}.tasks", str(e)) from None
        if "lengths" in d:
            lengths = d["lengths"]
            if not isinstance(lengths, list) or not lengths:
                lengths = [lengths] if isinstance(lengths, (int, str)) and not isinstance(lengths, bool) else None
            if lengths is None:
                raise SpecError(f"{path}.lengths", f"expected a list of lengths, got {d['lengths']!r}")
            kw["lengths"] = tuple(parse_length(v, f"{path}.lengths[{i}]") for i, v in enumerate(lengths))
        for key in ("samples", "batch_size", "seed"):
            if key in d:
                v = d[key]
                if isinstance(v, bool) or not isinstance(v, int):
                    raise SpecError(f"{path}.{key}", f"expected an integer, got {v!r}")
                if key != "seed" and v < 1:
                    raise SpecError(f"{path}.{key}", f"must be >= 1, got {v}")
                if key == "seed" and v < 0:
                    raise SpecError(f"{path}.{key}", f"must be >= 0, got {v}")
                kw[key] = v
        for key in ("haystack", "squad", "hotpotqa"):
            if key in d and d[key] is not None:
                v = d[key]
                if not isinstance(v, str):
                    raise SpecError(f"{path}.{key}", f"expected a file path, got {v!r}")
                if not Path(v).expanduser().is_file():
                    raise SpecError(f"{path}.{key}", f"file not found: {v}")
                kw[key] = v
        return cls(**kw)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def resolved_lengths(self, train_length: int | None) -> list[int]:
        return [resolve_length(v, train_length) for v in self.lengths]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"], d["lengths"] = list(self.tasks), list(self.lengths)
        return d


__all__ = ["EvalConfig", "parse_length", "resolve_length"]
