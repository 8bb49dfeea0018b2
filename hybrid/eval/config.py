"""The parsed ``eval:`` section of a recipe as an ``EvalConfig``: which RULER tasks, at which lengths,
how many samples.

The keys, their defaults and their checks are the recipe's (``hybrid.recipes.eval_section``);
``EvalConfig.from_dict(d, path="eval")`` parses a section with them and raises
``hybrid.schema.SpecError(path, message)`` with a near-miss suggestion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hybrid.recipes.eval_section import EVAL_FIELDS, parse_eval, parse_length
from hybrid.schema import SpecError


def resolve_length(length: int | str, train_length: int | None) -> int:
    """A parsed length in tokens: ints as they are, ``'2x'`` times the training length."""
    if isinstance(length, int):
        return length
    if train_length is None:
        raise SpecError("eval.lengths", f"{length!r} is relative to the training length, which is unknown here; "
                                        "give lengths in tokens")
    return int(round(float(length[:-1]) * train_length))


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...]
    lengths: tuple[int | str, ...]
    samples: int
    batch_size: int
    haystack: str | None
    seed: int
    held_out: tuple[str, ...]
    squad: str | None
    hotpotqa: str | None

    @classmethod
    def from_dict(cls, d: dict | None, path: str = "eval") -> EvalConfig:
        parsed = parse_eval(d, path)
        parsed["tasks"], parsed["lengths"] = tuple(parsed["tasks"]), tuple(parsed["lengths"])
        parsed["held_out"] = tuple(parsed.get("held_out", ()))
        return cls(**parsed)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in EVAL_FIELDS]

    @property
    def all_tasks(self) -> list[str]:
        """The tasks to evaluate: the trained-format ones, then the held-out ones."""
        return list(self.tasks) + list(self.held_out)

    def resolved_lengths(self, train_length: int | None) -> list[int]:
        return [resolve_length(v, train_length) for v in self.lengths]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"], d["lengths"], d["held_out"] = list(self.tasks), list(self.lengths), list(self.held_out)
        return d


__all__ = ["EvalConfig", "parse_length", "resolve_length"]
