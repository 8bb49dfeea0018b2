"""The mqar task (multi-query associative recall; not a RULER task): determinism per seed, length
fitting with more pairs at longer lengths, the answer among the prompt's pairs, scoring, training
documents with follow-up questions, and its absence from the RULER groups and labels."""

import random
import re

import numpy as np
import pytest

from hybrid.eval.ruler.report import plain_table
from hybrid.eval.ruler.runner import RulerRun
from hybrid.eval.ruler.scoring import score
from hybrid.tasks import GROUPS, OFFLINE, TASKS, make_sample, resolve_tasks
from hybrid.tasks.mqar import keys
from hybrid.tasks.registry import is_ruler
from hybrid.train.tokenizer import load_tokenizer

PAIR = re.compile(r"([a-z]+)(\d{2})")


@pytest.fixture(scope="module", params=["digits3", "default"])
def tok(request):
    return load_tokenizer(None if request.param == "default" else request.param)


def pairs_of(prompt):
    head, _, query = prompt.rpartition("\nQ: ")
    assert head.startswith("Pairs: ")
    return PAIR.findall(head[len("Pairs: "):]), query


def test_same_seed_same_sample_other_seed_other_sample(tok):
    a, b = make_sample("mqar", 256, tok, 7), make_sample("mqar", 256, tok, 7)
    assert a == b
    assert make_sample("mqar", 256, tok, 8).prompt != a.prompt
    assert make_sample("mqar", 256, tok, random.Random(3)) == make_sample("mqar", 256, tok, random.Random(3))


@pytest.mark.parametrize("length", [64, 128, 256, 512, 1024])
def test_fits_the_length_and_asks_a_key_of_its_pairs(tok, length):
    for seed in range(5):
        s = make_sample("mqar", length, tok, seed)
        assert s.prompt_tokens + s.gen_tokens <= length
        assert s.prompt_tokens + s.gen_tokens > length - 8  # filled: one more pair would not fit
        pairs, query = pairs_of(s.prompt)
        assert len(pairs) == s.meta["pairs"] and len({k for k, _ in pairs}) == len(pairs)  # distinct keys
        assert all(k in keys() for k, _ in pairs)
        assert s.answers == [dict(pairs)[query]] and s.completion == f"{s.answers[0]}."
        assert s.meta["queried"] == [query] and pairs[s.meta["query_position"]][0] == query
        assert sorted(s.meta["facts"]) == sorted(p for p in pairs if p[0] != query)


def test_longer_lengths_hold_more_pairs(tok):
    n = [make_sample("mqar", L, tok, 1).meta["pairs"] for L in (64, 128, 256, 512, 1024)]
    assert n == sorted(n) and n[-1] > 8 * n[0]


def test_keys_and_values_are_one_token_each_in_the_shipped_tokenizers(tok):
    assert len(keys()) == 531 and list(keys()) == sorted(set(keys()))
    assert all(len(tok.encode(" " + k, add_special_tokens=False)) == 1 for k in keys())
    d3 = load_tokenizer("digits3")
    assert all(len(d3.encode(str(v), add_special_tokens=False)) == 1 for v in range(10, 100))


def test_scoring_is_exact_match_on_the_value():
    assert TASKS["mqar"].metric == "string_match_all"
    assert score("string_match_all", ["47.", "12", "4 7"], [["47"], ["47"], ["47"]]) == pytest.approx(100 / 3)


def test_not_a_ruler_task_and_in_no_group():
    t = TASKS["mqar"]
    assert not t.ruler and not is_ruler("mqar") and "NOT a RULER task" in t.description
    assert "mqar" not in OFFLINE and all("mqar" not in g for g in GROUPS.values())
    assert "mqar" not in resolve_tasks("all") and resolve_tasks("mqar") == ["mqar"]
    assert is_ruler("niah_single_1")


def test_report_labels_it_not_ruler():
    run = RulerRun(tasks=["mqar", "niah_single_1"], lengths=[128], samples=20, seed=0, haystack=None)
    run.scores = {"mqar": {128: 50.0}, "niah_single_1": {128: 0.0}}
    text = plain_table(run)
    assert "mqar (not RULER)" in text and "niah_single_1 (not RULER)" not in text
    assert "not one of RULER's tasks" in text


def test_training_documents_ask_follow_up_keys():
    from hybrid.train.ruler_source import RulerSource

    tok = load_tokenizer("digits3")
    src = RulerSource(tokenizer=tok, tasks=["mqar"], seq_len=128, batch_size=4, followups=8, pack=False)
    b = src.batch(0, 0)
    ids, labels = np.asarray(b.input_ids), np.asarray(b.labels)
    for row, lab in zip(ids, labels):
        text = tok.decode(row.tolist(), skip_special_tokens=True)
        pairs = dict(PAIR.findall(text.split("\nQ: ")[0]))
        asked = re.findall(r"Q: ([a-z]+)(\d{2})\.", text)
        assert len(asked) >= 2 and all(pairs[k] == v for k, v in asked)  # every answer is its key's value
        answered = tok.decode([t for t in lab.tolist() if t >= 0], skip_special_tokens=True)
        assert re.findall(r"\d{2}", answered) == [v for _, v in asked]  # loss on the answers only


def test_sweep_report_names_it_not_ruler():
    from hybrid.sweep.aggregate import task_name

    v = {"ruler_like_tasks": [], "held_out": []}
    assert task_name(v, "mqar") == "mqar (not RULER)" and task_name(v, "niah_single_1") == "niah_single_1"
