"""A ``rich`` console when rich is installed, else a plain one (bare GPU boxes may lack rich)."""

from __future__ import annotations

import re
import sys

_MARKUP = re.compile(r"\[/?[a-z ]*\]")


class PlainConsole:
    def __init__(self, stderr: bool = False, **_):
        self.file = sys.stderr if stderr else sys.stdout

    def print(self, *objects, **_):
        print(*(_MARKUP.sub("", o) if isinstance(o, str) else o for o in objects), file=self.file, flush=True)


def console(stderr: bool = False):
    try:
        from rich.console import Console
    except ImportError:
        return PlainConsole(stderr=stderr)
    return Console(stderr=stderr, soft_wrap=stderr)
