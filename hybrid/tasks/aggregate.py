"""Aggregation tasks: common words extraction (cwe) and frequent words extraction (fwe)."""

from __future__ import annotations

import math
import random

from . import words
from .base import Built, Context, Task

CWE_TEMPLATE = ("Below is a numbered list of words. In these words, some appear more often than others. "
                "Memorize the ones that appear most often.\n{context}\n"
                "Question: What are the 10 most common words in the above list?")
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"

FWE_TEMPLATE = ("Read the following coded text and track the frequency of each coded word. Find the three "
                "most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. "
                "Please ignore the dots '....'. What are the three most frequently appeared words in the "
                "above coded text?")
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
ZETA2 = math.pi ** 2 / 6


def numbered(ws: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(ws))


class CommonWords(Task):
    name = "cwe"
    gen_tokens = 120
    haystack = "words"
    description = "a numbered word list; 10 words repeat often, the rest rarely; name the 10 common ones"
    num_common = 10

    def __init__(self):
        self.min_units = self.num_common + 1

    @staticmethod
    def repeats(max_tokens: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """((example words, common x, uncommon x), (common x, uncommon x)), RULER's values below and
        from 4K tokens on."""
        return ((20, 3, 1), (6, 1)) if max_tokens < 4096 else ((40, 10, 3), (30, 3))

    def max_units(self, ctx: Context) -> int:
        return len(words.common_word_pool()) - 40

    def _list(self, r: random.Random, ws: list[str], cw: int, ucw: int) -> tuple[str, list[str]]:
        common, rare = ws[: self.num_common], ws[self.num_common:]
        items = common * cw + rare * ucw
        r.shuffle(items)
        return numbered(items), common

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        r = random.Random(seed)
        (ex_n, ex_cw, ex_ucw), (cw, ucw) = self.repeats(ctx.max_tokens)
        pool = words.common_word_pool()
        picked = r.sample(pool, ex_n + n)
        ex_ctx, ex_common = self._list(r, picked[:ex_n], ex_cw, ex_ucw)
        context, common = self._list(r, picked[ex_n:], cw, ucw)
        example = CWE_TEMPLATE.format(context=ex_ctx) + CWE_PREFIX + " " + numbered(ex_common)
        prompt = example + "\n" + CWE_TEMPLATE.format(context=context) + CWE_PREFIX
        return Built(prompt, common, " " + numbered(common), {"unique_words": n},
                     tuple(("a common word", w) for w in common))


class FrequentWords(Task):
    name = "fwe"
    gen_tokens = 50
    haystack = "coded"
    description = "random 6-letter coded words with Zipf(2) counts; name the 3 most frequent"
    alpha = 2.0

    def __init__(self):
        self.min_units = 100  # below ~100 words the 3rd and 4th ranks can tie

    @staticmethod
    def vocab_size(max_tokens: int) -> int:
        return max(8, (max_tokens - 50) // 50)

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        r = random.Random(seed)
        size = self.vocab_size(ctx.max_tokens)
        vocab: list[str] = []
        while len(vocab) < size:
            w = words.coded_word(r)
            if w not in vocab:
                vocab.append(w)
        vocab[0] = "..."  # the most frequent token is noise, RULER's '....' instruction
        counts = [int(n * (k ** -self.alpha) / ZETA2) for k in range(1, size + 1)]
        items = [w for w, c in zip(vocab, counts) for _ in range(c)]
        r.shuffle(items)
        answers = vocab[1:4]
        prompt = FWE_TEMPLATE.format(context=" ".join(items)) + FWE_PREFIX
        return Built(prompt, answers, " " + " ".join(answers), {"words": len(items), "counts": counts[:5]},
                     tuple(("a coded word", w) for w in answers))
