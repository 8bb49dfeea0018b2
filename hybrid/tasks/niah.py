"""Needle-in-a-haystack tasks (RULER's niah_*): needles ``One of the special magic {type} for {key} is:
{value}.`` hidden in a noise, essay or distractor-needle haystack."""

from __future__ import annotations

import copy
import functools
import random

from . import haystack as hs
from . import words
from .base import Built, Context, Task

NEEDLE = "One of the special magic {type} for {key} is: {value}."
TEMPLATE = ("Some special magic {type} are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the {type} afterwards.\n{context}\n"
            "What are all the special magic {type} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"


def singular(text: str) -> str:
    """RULER's singular form of the template when exactly one answer is asked for."""
    return text.replace("Some", "A").replace("are all", "is").replace("are", "is")


def join_keys(keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    return ", ".join(keys[:-1]) + ", and " + keys[-1]


class NiahTask(Task):
    gen_tokens = 128

    def __init__(self, name: str, haystack: str, key_type: str, value_type: str, *, keys: int = 1,
                 values: int = 1, queries: int = 1, description: str = ""):
        self.name, self.haystack = name, haystack
        self.key_type, self.value_type = key_type, value_type
        self.num_keys, self.num_values, self.num_queries = max(keys, queries), values, queries
        self.description = description
        self.min_units = 1
        self.digits = 7  # of a number value: RULER's 7; ``with_digits`` makes the shorter variants

    def with_digits(self, digits: int) -> NiahTask:
        """This task with number values of ``digits`` digits instead of 7, named ``NAME:N-digit``: the
        same templates and haystack, a shorter value to copy (with the ``digits3`` tokenizer a value of
        up to 3 digits is one token). Not a RULER task: its scores are not comparable with RULER's."""
        if self.value_type != "numbers":
            raise ValueError(f"{self.name} has {self.value_type} values, not numbers")
        t = copy.copy(self)
        t.digits, t.name = digits, f"{self.name}:{digits}-digit"
        t.description = f"{self.description} ({digits}-digit values)"
        return t

    def _draw(self, kind: str):
        if kind == "numbers" and self.digits != 7:
            return functools.partial(words.number_value, digits=self.digits)
        return words.DRAW[kind]

    @property
    def num_needles(self) -> int:
        return self.num_keys * self.num_values

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        r = random.Random(seed)
        # fixed-size draws first, so the needles do not depend on the haystack size n
        keys = words.distinct(r, self.key_type, self.num_keys)
        draw = self._draw(self.value_type)
        values = [words.distinct(r, self.value_type, self.num_values, draw=draw) for _ in keys]
        vtype = self.value_type
        needles = [NEEDLE.format(type=vtype, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
        r.shuffle(needles)
        queried = r.sample(range(self.num_keys), self.num_queries)
        answers = [v for i in queried for v in values[i]]
        query = join_keys([keys[i] for i in queried])
        start = r.randrange(1 << 30)
        # haystack-size-dependent draws come last
        if self.haystack == "noise":
            context = "\n".join(hs.insert_lines([hs.NOISE] * n, needles, r))
        elif self.haystack == "needle":
            dr = random.Random(seed ^ 0x9E3779B97F4A7C15)
            dkeys = words.distinct(dr, self.key_type, n, exclude=keys)
            dvals = [draw(dr) for _ in dkeys]
            distract = [NEEDLE.format(type=vtype, key=k, value=v) for k, v in zip(dkeys, dvals)]
            context = "\n".join(hs.insert_lines(distract, needles, r))
        elif self.haystack == "essay":
            first = hs.sentence_start(ctx.essay, start % len(ctx.essay))
            context = hs.insert_at_depths(hs.essay_text(ctx.essay, first, n), needles, r)
        else:  # pragma: no cover - construction error
            raise ValueError(self.haystack)
        # every single-valued key the context states, with its value (training mixtures ask about them)
        facts = [(k, vs[0]) for k, vs in zip(keys, values) if len(vs) == 1]
        if self.haystack == "needle":
            facts += list(zip(dkeys, dvals))
        template, prefix, qtype = TEMPLATE, ANSWER_PREFIX, vtype
        if len(answers) == 1:
            template, prefix, qtype = singular(TEMPLATE), singular(ANSWER_PREFIX), vtype[:-1]
        prompt = template.format(type=qtype, context=context, query=query) + prefix.format(type=qtype, query=query)
        checks = tuple(("a key", k) for k in keys) + tuple(("an answer", a) for a in answers)
        return Built(prompt, answers, " " + ", ".join(answers) + ".",
                     {"keys": keys, "needles": len(needles), "haystack_units": n,
                      "queried": [keys[i] for i in queried], "facts": facts,
                      "followup": (singular(TEMPLATE).split("\n")[-1], singular(ANSWER_PREFIX), vtype[:-1])},
                     checks)


def niah_tasks() -> list[NiahTask]:
    return [
        NiahTask("niah_single_1", "noise", "words", "numbers",
                 description="one word->number needle in repeated noise sentences (passkey)"),
        NiahTask("niah_single_2", "essay", "words", "numbers",
                 description="one word->number needle in essay prose"),
        NiahTask("niah_single_3", "essay", "words", "uuids",
                 description="one word->UUID needle in essay prose"),
        NiahTask("niah_multikey_1", "essay", "words", "numbers", keys=4,
                 description="4 word->number needles in essay prose, 1 queried"),
        NiahTask("niah_multikey_2", "needle", "words", "numbers",
                 description="every haystack line is a word->number needle, 1 queried"),
        NiahTask("niah_multikey_3", "needle", "uuids", "uuids",
                 description="every haystack line is a UUID->UUID needle, 1 queried"),
        NiahTask("niah_multivalue", "essay", "words", "numbers", values=4,
                 description="4 numbers for the same word key in essay prose, all 4 asked"),
        NiahTask("niah_multiquery", "essay", "words", "numbers", keys=4, queries=4,
                 description="4 word->number needles in essay prose, all 4 keys queried"),
    ]
