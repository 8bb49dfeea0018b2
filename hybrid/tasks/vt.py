"""Variable tracking (RULER's vt): follow a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... hidden in
noise lines, with a one-shot example first."""

from __future__ import annotations

import random

from . import haystack as hs
from . import words
from .base import Built, Context, Task

TEMPLATE = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
            "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.")
ANSWER_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
                 "variables are assigned the value {query}, they are: ")


def chain(r: random.Random, hops: int, letters: int, exclude=()) -> tuple[list[str], str, list[str]]:
    names: list[str] = []
    while len(names) < hops + 1:
        v = words.variable_name(r, letters)
        if v not in names and v not in exclude:
            names.append(v)
    value = str(r.randint(10000, 99999))
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i + 1]} = VAR {names[i]}" for i in range(hops)]
    return names, value, lines


class VariableTracking(Task):
    name = "vt"
    gen_tokens = 30
    haystack = "noise"
    description = "one 4-hop variable-assignment chain in noise lines; name every variable with the value"

    def __init__(self, hops: int = 4):
        self.hops = hops
        self.min_units = 1

    @staticmethod
    def icl_lines(max_tokens: int) -> int:
        """Noise lines in the one-shot example: RULER sizes it near 500 tokens; we keep it below a
        fifth of the target length so short training lengths still fit."""
        return max(1, min(16, max_tokens // 160))

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        r = random.Random(seed)
        ex_names, ex_value, ex_lines = chain(r, self.hops, 3)
        names, value, lines = chain(r, self.hops, 5, exclude=ex_names)
        while value == ex_value:
            value = str(r.randint(10000, 99999))
            lines[0] = f"VAR {names[0]} = {value}"
        ex_ctx = "\n".join(hs.insert_lines([hs.NOISE] * self.icl_lines(ctx.max_tokens), ex_lines, r))
        example = (TEMPLATE.format(context=ex_ctx, query=ex_value)
                   + ANSWER_PREFIX.format(num_v=len(ex_names), query=ex_value) + " ".join(ex_names))
        context = "\n".join(hs.insert_lines([hs.NOISE] * n, lines, r))
        prompt = (example + "\n\n" + TEMPLATE.format(context=context, query=value)
                  + ANSWER_PREFIX.format(num_v=len(names), query=value))
        return Built(prompt, names, " ".join(names), {"value": value, "haystack_units": n},
                     tuple(("a variable name", v) for v in names))
