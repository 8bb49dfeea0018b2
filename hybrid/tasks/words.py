"""Word lists shipped in ``hybrid/data/words`` (wonderwords 3.0.1, MIT; see its README) and the
random keys and values RULER draws from them."""

from __future__ import annotations

import random
import string
import uuid
from functools import cache
from pathlib import Path

WORDS_DIR = Path(__file__).resolve().parents[1] / "data" / "words"


@cache
def load(kind: str) -> tuple[str, ...]:
    """``kind`` is 'nouns', 'adjectives' or 'verbs': lowercase alphabetic entries, unique, sorted."""
    path = WORDS_DIR / f"{kind}.txt"
    words = {w.strip() for w in path.read_text(encoding="utf-8").splitlines()}
    return tuple(sorted(w for w in words if w.isascii() and w.isalpha() and w.islower()))


@cache
def common_word_pool() -> tuple[str, ...]:
    """Nouns, adjectives and verbs together (the cwe pool), unique and sorted."""
    return tuple(sorted(set(load("nouns")) | set(load("adjectives")) | set(load("verbs"))))


def word_key(rng: random.Random) -> str:
    """An adjective-noun key such as 'shiny-lamp'."""
    return f"{rng.choice(load('adjectives'))}-{rng.choice(load('nouns'))}"


def number_value(rng: random.Random, digits: int = 7) -> str:
    """A number of ``digits`` digits without a leading zero; RULER's 7 digits by default (1000000..9999999)."""
    return str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))


def uuid_value(rng: random.Random) -> str:
    """A UUID4 string built from 128 random bits of ``rng``."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


DRAW = {"words": word_key, "numbers": number_value, "uuids": uuid_value}


def distinct(rng: random.Random, kind: str, n: int, exclude=(), draw=None) -> list[str]:
    """``n`` distinct draws of ``kind`` ('words', 'numbers', 'uuids'), none in ``exclude``; ``draw``
    replaces the kind's own drawing function (e.g. numbers of fewer digits)."""
    seen = set(exclude)
    out: list[str] = []
    draw = draw or DRAW[kind]
    tries = 0
    while len(out) < n:
        v = draw(rng)
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct {kind}")
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def variable_name(rng: random.Random, letters: int = 5) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))


def coded_word(rng: random.Random, letters: int = 6) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(letters))
