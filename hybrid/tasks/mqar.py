"""Multi-query associative recall (``mqar``; Zoology, Arora et al. 2023, arXiv 2312.04927): NOT a RULER
task. A prompt lists key-value pairs (a one-word key, a 2-digit value) and then asks for the value of one
of its keys; a training document with follow-ups (``followups: N`` of ``ruler_mix``) asks up to N more
keys, each answered, which makes it multi-query. It has no template to speak of (a few tokens of
header, two tokens per pair, four per question), so a small model can learn the retrieval itself
quickly, and it is length-fitted like the RULER tasks: a longer length holds more pairs to tell apart.

Text: ``Pairs: bar47 act12 ... air99\\nQ: act`` answered ``12.``. With the ``digits3`` tokenizer a key
(`` bar``) and a value (``47``) are one token each, so a pair is two tokens and the answer is the token
that followed the queried key's earlier occurrence: the pattern an induction head copies."""

from __future__ import annotations

import random
from functools import cache

from . import words
from .base import STRING_MATCH_ALL, Built, Context, Task

HEADER = "Pairs:"
QUESTION = "Q: {query}"  # a follow-up question is "\n" + QUESTION + ANSWER_PREFIX, answered ANSWER
ANSWER_PREFIX = ""
ANSWER = "{value}."


@cache
def keys() -> tuple[str, ...]:
    """The key pool (``hybrid/data/words/mqar-keys.txt``, 531 words): the shipped words that are one
    token after a space in both shipped tokenizers. The prompt never depends on the tokenizer."""
    return tuple(w for w in (words.WORDS_DIR / "mqar-keys.txt").read_text(encoding="utf-8").split() if w)


class Mqar(Task):
    name = "mqar"
    metric = STRING_MATCH_ALL
    gen_tokens = 3  # "47." and the end of text
    haystack = "pairs"
    ruler = False
    length_margin = 2  # its shortest prompt (2 pairs) has the same length for every seed
    description = ("NOT a RULER task: multi-query associative recall (Zoology): word->2-digit pairs, then "
                   "a key to answer; more pairs at longer lengths")

    def __init__(self, digits: int = 2):
        self.digits = digits
        self.min_units = 2

    def max_units(self, ctx: Context) -> int:
        return min(len(keys()), max(self.min_units, ctx.max_tokens))

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        r = random.Random(seed)
        query_at = r.random()  # fixed-size draws first: the queried pair's relative position
        ks = r.sample(keys(), n)
        vs = [words.number_value(r, self.digits) for _ in ks]
        q = min(n - 1, int(query_at * n))
        pairs = " ".join(f"{k}{v}" for k, v in zip(ks, vs))
        prompt = f"{HEADER} {pairs}\n" + QUESTION.format(query=ks[q]) + ANSWER_PREFIX
        facts = [(k, v) for i, (k, v) in enumerate(zip(ks, vs)) if i != q]
        r.shuffle(facts)
        return Built(prompt, [vs[q]], ANSWER.format(value=vs[q]),
                     {"pairs": n, "haystack_units": n, "queried": [ks[q]], "query_position": q,
                      "facts": facts, "followup": (QUESTION, ANSWER_PREFIX, "", ANSWER)},
                     (("the queried key", ks[q]), ("an answer", vs[q])))
