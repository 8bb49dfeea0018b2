"""Recipe errors: every message names the file, the line and the key path.

A ``RecipeError`` prints as ``recipes/x.yaml:12 layout.pattern: unknown block 'X'; defined blocks: C, A``.
Values that came from an override print as ``override 'layout.ratio=3:x' layout.ratio: ...`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """Where a value came from: a file and a 1-based line, or a command-line override text."""

    file: str
    line: int | None = None
    override: str | None = None

    def __str__(self) -> str:
        if self.override is not None:
            return f"override '{self.override}'"
        return f"{self.file}:{self.line}" if self.line else self.file


class RecipeError(ValueError):
    """A recipe that cannot be built. ``key`` is the dotted key path (``blocks.C.heads``)."""

    def __init__(self, loc: Loc | str | None, key: str, message: str):
        self.loc = loc
        self.key = key
        self.message = message
        where = str(loc) if loc is not None else ""
        head = " ".join(p for p in (where, key) if p)
        super().__init__(f"{head}: {message}" if head else message)

    @property
    def file(self) -> str | None:
        return self.loc.file if isinstance(self.loc, Loc) else self.loc

    @property
    def line(self) -> int | None:
        return self.loc.line if isinstance(self.loc, Loc) else None


def key_str(path: tuple) -> str:
    """``('layout', 'at', 'A', 1)`` -> ``layout.at.A[1]``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


_KEY_PART = re.compile(r"(?:^|\.)([^.\[\]]+)|\[(-?\d+)\]")


def parse_key(dotted: str) -> tuple:
    """``layout.at.A[1]`` -> ``('layout', 'at', 'A', 1)``; the inverse of :func:`key_str`."""
    parts: list = []
    pos = 0
    for m in _KEY_PART.finditer(dotted):
        if m.start() != pos:
            break
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(dotted) or not parts or not isinstance(parts[0], str):
        raise ValueError(f"not a key path: {dotted!r} (expected dotted names like train.steps or layout.at.A[0])")
    return tuple(parts)


class Where:
    """Turns a key path into a :class:`RecipeError` located at the nearest recorded line."""

    def __init__(self, file: str, locs: dict):
        self.file = file
        self.locs = locs

    def loc(self, path: tuple) -> Loc:
        for i in range(len(path), 0, -1):
            if path[:i] in self.locs:
                return self.locs[path[:i]]
        return Loc(self.file, None)

    def error(self, path: tuple, message: str) -> RecipeError:
        return RecipeError(self.loc(path), key_str(path), message)
