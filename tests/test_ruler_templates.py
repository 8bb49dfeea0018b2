"""Our task templates against RULER's published ones.

RULER_TASKS below is data: the ``TASKS`` table of NVIDIA RULER, ``scripts/data/synthetic/constants.py``
(commit c3f5e3b), with its placeholders (``{type_needle_v}``, ``{context}``, ``{query}``, ``{num_v}``),
its spelling (``assgined``) and its tokens to generate, as published. Each of our ten strings (template
and answer prefix of niah, vt, cwe, fwe, qa) is rendered with the same values as RULER's and compared.
A difference is allowed only when DIFFERENCES lists it and docs/ruler.md names it; a listed difference
that has gone away fails too, so the list cannot go stale."""

from pathlib import Path

import pytest

from hybrid.tasks import aggregate, niah, qa, vt
from hybrid.tasks.registry import get_task

RULER_SOURCE = "NVIDIA/RULER@c3f5e3b scripts/data/synthetic/constants.py"

RULER_TASKS = {
    "niah": {
        "tokens_to_generate": 128,
        "template": "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize "
                    "it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special "
                    "magic {type_needle_v} for {query} mentioned in the provided text?",
        "answer_prefix": " The special magic {type_needle_v} for {query} mentioned in the provided text are",
    },
    "variable_tracking": {
        "tokens_to_generate": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
                    "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
                         "variables are assgined the value {query}, they are: ",
    },
    "common_words_extraction": {
        "tokens_to_generate": 120,
        "template": "Below is a numbered list of words. In these words, some appear more often than others. "
                    "Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common "
                    "words in the above list?",
        "answer_prefix": " Answer: The top 10 words that appear most often in the list are:",
    },
    "freq_words_extraction": {
        "tokens_to_generate": 50,
        "template": "Read the following coded text and track the frequency of each coded word. Find the three most "
                    "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please "
                    "ignore the dots '....'. What are the three most frequently appeared words in the above coded "
                    "text?",
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
    },
    "qa": {
        "tokens_to_generate": 32,
        "template": "Answer the question based on the given documents. Only give me the answer and do not output any "
                    "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on "
                    "the given documents. Only give me the answer and do not output any other words.\n\n"
                    "Question: {query}",
        "answer_prefix": " Answer:",
    },
}

# (RULER task, field) -> our string, and the task whose tokens to generate must match
OURS = {
    ("niah", "template"): niah.TEMPLATE, ("niah", "answer_prefix"): niah.ANSWER_PREFIX,
    ("variable_tracking", "template"): vt.TEMPLATE, ("variable_tracking", "answer_prefix"): vt.ANSWER_PREFIX,
    ("common_words_extraction", "template"): aggregate.CWE_TEMPLATE,
    ("common_words_extraction", "answer_prefix"): aggregate.CWE_PREFIX,
    ("freq_words_extraction", "template"): aggregate.FWE_TEMPLATE,
    ("freq_words_extraction", "answer_prefix"): aggregate.FWE_PREFIX,
    ("qa", "template"): qa.TEMPLATE, ("qa", "answer_prefix"): qa.ANSWER_PREFIX,
}
OUR_TASKS = {"niah": ["niah_single_1", "niah_multikey_2", "niah_multivalue"], "variable_tracking": ["vt"],
             "common_words_extraction": ["cwe"], "freq_words_extraction": ["fwe"], "qa": ["qa_1", "qa_2"]}

# deliberate differences, each named in docs/ruler.md with the phrase given here
DIFFERENCES = {("variable_tracking", "answer_prefix"): "variables are assigned the value"}

VALUES = {"context": "<CONTEXT>", "query": "<QUERY>", "num_v": 5, "type_needle_v": "numbers", "type": "numbers"}


def render(text: str) -> str:
    return text.format(**VALUES)


@pytest.mark.parametrize("key", sorted(OURS), ids=lambda k: f"{k[0]}.{k[1]}")
def test_template_matches_ruler(key):
    ruler, ours = render(RULER_TASKS[key[0]][key[1]]), render(OURS[key])
    if key in DIFFERENCES:
        assert ours != ruler, f"{key} now matches {RULER_SOURCE}: drop it from DIFFERENCES and docs/ruler.md"
        assert DIFFERENCES[key] in ours
    else:
        assert ours == ruler, f"{key} differs from {RULER_SOURCE}"


def test_singular_form_is_rulers():
    """RULER's niah.py turns the template singular when one value is asked for: Some -> A, are all -> is,
    are -> is, and the type loses its plural s."""
    one = render(niah.singular(niah.TEMPLATE)).replace("numbers", "number")
    assert one.startswith("A special magic number is hidden within the following text.")
    assert one.endswith("What is the special magic number for <QUERY> mentioned in the provided text?")


@pytest.mark.parametrize("ruler_task", sorted(OUR_TASKS))
def test_tokens_to_generate_match_ruler(ruler_task):
    for name in OUR_TASKS[ruler_task]:
        assert get_task(name).gen_tokens == RULER_TASKS[ruler_task]["tokens_to_generate"], name


def test_differences_are_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ruler.md").read_text()
    assert "c3f5e3b" in doc
    for phrase in DIFFERENCES.values():
        assert phrase in doc
