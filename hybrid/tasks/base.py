"""What every RULER task shares: the ``Sample`` it produces and the ``Task`` interface."""

from __future__ import annotations

from dataclasses import dataclass, field

STRING_MATCH_ALL = "string_match_all"
STRING_MATCH_PART = "string_match_part"


@dataclass(frozen=True)
class Sample:
    """One RULER prompt. ``prompt`` already ends with the task's answer prefix; the model continues it
    for ``gen_tokens`` tokens and the output is scored against ``answers``. ``completion`` is a
    canonical correct continuation (for training mixtures); ``prompt_tokens`` is the prompt's length
    in the tokenizer it was fitted with (``prompt_tokens + gen_tokens <= max_tokens``)."""

    prompt: str
    answers: list[str]
    gen_tokens: int
    task: str = ""
    max_tokens: int = 0
    prompt_tokens: int = 0
    completion: str = ""
    seed: int = 0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """A candidate prompt for a given haystack size (before the length search picks one)."""

    prompt: str
    answers: list[str]
    completion: str
    meta: dict = field(default_factory=dict)
    checks: tuple[tuple[str, str], ...] = ()  # (what, text) pairs the tokenizer must represent exactly


@dataclass(frozen=True)
class Context:
    """Settings shared by all samples of a run: the target length and the essay haystack."""

    max_tokens: int
    essay: tuple[str, ...] = ()
    data_path: str | None = None


class Task:
    """A RULER task: ``build(n, seed, ctx)`` makes the prompt with ``n`` haystack units."""

    name: str = ""
    metric: str = STRING_MATCH_ALL
    gen_tokens: int = 128
    haystack: str = ""
    description: str = ""
    min_units: int = 1
    needs_data: str | None = None  # the CLI option a task's local data comes from (qa tasks)

    def max_units(self, ctx: Context) -> int:
        return max(self.min_units, ctx.max_tokens)

    def build(self, n: int, seed: int, ctx: Context) -> Built:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def uses_essay(self) -> bool:
        return self.haystack == "essay"

    def __repr__(self) -> str:
        return f"<RULER task {self.name}: {self.metric}, {self.gen_tokens} tokens to generate>"
