"""Haystacks: the repeated noise block, distractor needles (built by the NIAH task) and essay prose.

The default essay is Milton's *Areopagitica* (public domain; see ``hybrid/data/haystack/README.md``),
which makes the essay tasks *RULER-like*: RULER itself uses Paul Graham's essays."""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

from .errors import RulerError

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
DEFAULT_ESSAY = Path(__file__).resolve().parents[1] / "data" / "haystack" / "areopagitica.txt"
# RULER's insertion depths for essay haystacks: 40 evenly spaced percentages 0..100.
DEPTHS = tuple(round(i * 100 / 39) for i in range(40))

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z])")


@lru_cache(maxsize=8)
def essay_words(path: str | None = None) -> tuple[str, ...]:
    """The words of an essay file (whitespace split). ``None`` = the shipped default."""
    p = Path(path) if path else DEFAULT_ESSAY
    if not p.is_file():
        raise RulerError(f"haystack file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RulerError(f"haystack file {p} is not UTF-8 text: {e}") from None
    words = tuple(text.split())
    if len(words) < 50:
        raise RulerError(f"haystack file {p} holds only {len(words)} words; give at least a few pages of prose")
    return words


def is_default_essay(path: str | None) -> bool:
    return path is None or Path(path).resolve() == DEFAULT_ESSAY


def essay_label(path: str | None) -> str:
    return "Areopagitica (Milton, 1644; default)" if is_default_essay(path) else str(path)


def sentence_start(words: tuple[str, ...], i: int) -> int:
    """The first index >= i that begins a sentence (the word after one ending in . ! or ?)."""
    n = len(words)
    for j in range(i, i + n):
        if j % n == 0 or words[(j - 1) % n][-1:] in ".!?":
            return j % n
    return 0


def essay_text(words: tuple[str, ...], start: int, n: int) -> str:
    """``n`` words from ``start``, wrapping around (the text repeats when a prompt needs more)."""
    m = len(words)
    return " ".join(words[(start + i) % m] for i in range(n))


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s]


def insert_at_depths(text: str, needles: list[str], rng: random.Random) -> str:
    """Put each needle at a sentence boundary, at depths drawn without replacement from ``DEPTHS``."""
    sents = split_sentences(text)
    depths = sorted(rng.sample(DEPTHS, len(needles)))
    cuts = [int(len(sents) * d / 100) for d in depths]
    parts: list[str] = []
    prev = 0
    for cut, needle in zip(cuts, needles):
        if cut > prev:
            parts.append(" ".join(sents[prev:cut]))
        parts.append(needle)
        prev = cut
    if prev < len(sents):
        parts.append(" ".join(sents[prev:]))
    return " ".join(parts)


def insert_lines(lines: list[str], items: list[str], rng: random.Random) -> list[str]:
    """Insert ``items`` (keeping their order) at uniformly random line positions of ``lines``."""
    total = len(lines) + len(items)
    slots = set(rng.sample(range(total), len(items)))
    out, it, li = [], iter(items), iter(lines)
    for i in range(total):
        out.append(next(it) if i in slots else next(li))
    return out
