"""Question answering over documents (RULER's qa_1 on SQuAD v2, qa_2 on HotpotQA), run only on the
user's own local copies of those JSON files (nothing is downloaded)."""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from .base import STRING_MATCH_PART, Built, Context, Task
from .errors import RulerError

INSTRUCTION = "Answer the question based on the given documents. Only give me the answer and do not output any other words."
TEMPLATE = INSTRUCTION + "\n\nThe following are given documents.\n\n{context}\n\n" + INSTRUCTION + "\n\nQuestion: {query}"
ANSWER_PREFIX = " Answer:"


@lru_cache(maxsize=4)
def load_squad(path: str) -> tuple[list[tuple[str, list[str], list[int]]], list[str]]:
    """SQuAD v2 JSON -> ([(question, answers, [gold doc index])], docs); unanswerable questions skipped."""
    data = _read_json(path, "SQuAD")
    try:
        docs: list[str] = []
        items = []
        for article in data["data"]:
            for para in article["paragraphs"]:
                docs.append(para["context"])
                for qa in para["qas"]:
                    if qa.get("is_impossible") or not qa.get("answers"):
                        continue
                    answers = sorted({a["text"] for a in qa["answers"]})
                    items.append((qa["question"], answers, [len(docs) - 1]))
    except (KeyError, TypeError) as e:
        raise RulerError(f"{path} is not a SQuAD v2 file (expected data[].paragraphs[].qas[]): missing {e}") from None
    if not items:
        raise RulerError(f"{path}: no answerable SQuAD questions found")
    return items, docs


@lru_cache(maxsize=4)
def load_hotpotqa(path: str) -> tuple[list[tuple[str, list[str], list[int]]], list[str]]:
    """HotpotQA (dev distractor) JSON -> ([(question, [answer], gold doc indices)], docs)."""
    data = _read_json(path, "HotpotQA")
    try:
        docs: list[str] = []
        index: dict[str, int] = {}
        items = []
        for ex in data:
            gold = []
            for title, sents in ex["context"]:
                doc = f"{title}\n{''.join(sents)}"
                if doc not in index:
                    index[doc] = len(docs)
                    docs.append(doc)
                gold.append(index[doc])
            items.append((ex["question"], [ex["answer"]], gold))
    except (KeyError, TypeError, ValueError) as e:
        raise RulerError(f"{path} is not a HotpotQA file (expected a list of question/answer/context): {e}") from None
    if not items:
        raise RulerError(f"{path}: no HotpotQA questions found")
    return items, docs


def _read_json(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise RulerError(f"{what} file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RulerError(f"{p} is not a JSON file: {e}") from None


class QaTask(Task):
    metric = STRING_MATCH_PART
    gen_tokens = 32
    haystack = "documents"

    def __init__(self, name: str, source: str):
        self.name, self.source = name, source
        self.needs_data = "--squad" if source == "squad" else "--hotpotqa"
        self.description = (f"answer a {'SQuAD' if source == 'squad' else 'HotpotQA'} question from documents "
                            "mixed with distractor documents (needs the local JSON file)")
        self.min_units = 1

    def load(self, ctx: Context):
        if not ctx.data_path:
            raise RulerError(f"task {self.name} needs a local {'SQuAD v2' if self.source == 'squad' else 'HotpotQA'}"
                             f" JSON file: pass {self.needs_data} FILE")
        return (load_squad if self.source == "squad" else load_hotpotqa)(str(ctx.data_path))

    def max_units(self, ctx: Context) -> int:
        return len(self.load(ctx)[1])

    def build(self, n: int, seed: int, ctx: Context) -> Built:
        items, docs = self.load(ctx)
        r = random.Random(seed)
        question, answers, gold = items[r.randrange(len(items))]
        order = r.sample(range(len(docs)), min(len(docs), n + len(gold)))
        chosen = list(gold) + [i for i in order if i not in gold][: max(0, n - len(gold))]
        r.shuffle(chosen)
        context = "\n\n".join(f"Document {j + 1}:\n{docs[i]}" for j, i in enumerate(chosen))
        prompt = TEMPLATE.format(context=context, query=question) + ANSWER_PREFIX
        return Built(prompt, list(answers), " " + answers[0], {"documents": len(chosen)}, ())
