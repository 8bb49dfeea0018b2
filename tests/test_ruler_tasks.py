"""RULER generators against hand-written expectations: prompt text, needle counts, answers present,
length fitting, reproducibility, and clear errors."""

import json
import random
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from hybrid.blocks.spec import SpecError
from hybrid.eval.config import EvalConfig
from hybrid.eval.ruler.scoring import match_all, match_part, score
from hybrid.tasks import TASKS, RulerError, make_sample, resolve_tasks
from hybrid.tasks.haystack import NOISE
from hybrid.tasks.seeds import EVAL_SEED_BASE, eval_seed, is_eval_seed, train_seed

TOKENIZER = Path(__file__).resolve().parents[1] / "hybrid" / "data" / "tokenizer" / "tokenizer.json"
NUMBER = re.compile(r"^\d{7}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(str(TOKENIZER))


def ntok(tok, text):
    return len(tok.encode(text).ids)


def context_lines(prompt):
    head, _, rest = prompt.partition("afterwards.\n")
    body, _, _ = rest.rpartition("\nWhat ")
    return body.split("\n")


def test_single_1_noise_passkey(tok):
    s = make_sample("niah_single_1", 512, tok, random.Random(11))
    assert s.gen_tokens == 128 and s.task == "niah_single_1"
    assert s.prompt.startswith("A special magic number is hidden within the following text. Make sure to memorize "
                               "it. I will quiz you about the number afterwards.\n")
    (answer,) = s.answers
    assert NUMBER.match(answer)
    key = s.meta["keys"][0]
    assert re.match(r"^[a-z]+-[a-z]+$", key)
    assert s.prompt.endswith(f"\nWhat is the special magic number for {key} mentioned in the provided text? "
                             f"The special magic number for {key} mentioned in the provided text is")
    lines = context_lines(s.prompt)
    assert lines.count(f"One of the special magic numbers for {key} is: {answer}.") == 1
    assert sum(line == NOISE for line in lines) == len(lines) - 1 >= 5
    assert s.completion == f" {answer}."
    # fitted: within budget, and one more noise block would not fit
    assert s.prompt_tokens == ntok(tok, s.prompt) and s.prompt_tokens + 128 <= 512
    assert 512 - 128 - s.prompt_tokens < ntok(tok, "\n" + NOISE) + 2


def test_multikey_2_every_line_is_a_needle(tok):
    s = make_sample("niah_multikey_2", 1024, tok, random.Random(5))
    lines = context_lines(s.prompt)
    needle = re.compile(r"^One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.$")
    matches = [needle.match(line) for line in lines]
    assert all(matches) and len(lines) > 10
    key = s.meta["keys"][0]
    hits = [m.group(2) for m in matches if m.group(1) == key]
    assert hits == s.answers  # the queried key appears exactly once, with the answer
    assert len({m.group(1) for m in matches}) == len(lines)  # distractor keys are distinct


@pytest.mark.parametrize("digits", [2, 3, 5])
def test_value_formats_shorten_only_the_values(tok, digits):
    """NAME:N-digit: every needle value (queried and distractor) has N digits; keys, templates and the
    question are the base task's; at 7 digits the sample is the base task's own sample."""
    name = f"niah_multikey_2:{digits}-digit"
    s = make_sample(name, 1024, tok, random.Random(5))
    assert s.task == name and name in resolve_tasks([name])
    base = make_sample("niah_multikey_2", 1024, tok, random.Random(5))
    lines = context_lines(s.prompt)
    needle = re.compile(r"^One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d+)\.$")
    matches = [needle.match(line) for line in lines]
    assert all(matches) and len(lines) > 10
    assert {len(m.group(2)) for m in matches} == {digits} and len(s.answers[0]) == digits
    assert s.meta["keys"] == base.meta["keys"] and s.prompt.split("\n")[0] == base.prompt.split("\n")[0]
    assert s.prompt.endswith(base.prompt[base.prompt.rindex("\nWhat"):])
    full = make_sample("niah_single_1:7-digit", 512, tok, random.Random(3))
    assert full.prompt == make_sample("niah_single_1", 512, tok, random.Random(3)).prompt


@pytest.mark.parametrize("name, words", [
    ("vt:3-digit", "no number values"),
    ("niah_single_3:3-digit", "no number values"),
    ("niah_single_1:1-digit", "choose 2 to 7"),
    ("niah_single_1:3", "NAME:N-digit"),
    ("niah_singel_1:3-digit", "did you mean 'niah_single_1'"),
])
def test_value_format_errors(name, words):
    with pytest.raises(RulerError, match=re.escape(words)):
        resolve_tasks([name])
    assert ":" not in "".join(TASKS)  # variants are not registered as tasks of their own


def test_multikey_3_uuid_keys_and_values(tok):
    s = make_sample("niah_multikey_3", 1024, tok, random.Random(6))
    (answer,) = s.answers
    assert UUID.match(answer) and UUID.match(s.meta["keys"][0])
    assert f"One of the special magic uuids for {s.meta['keys'][0]} is: {answer}." in s.prompt
    assert "What is the special magic uuid for" in s.prompt


def test_multivalue_and_multiquery(tok):
    mv = make_sample("niah_multivalue", 1024, tok, random.Random(7))
    assert len(mv.answers) == 4 and len(set(mv.answers)) == 4
    assert mv.prompt.startswith("Some special magic numbers are hidden")
    key = mv.meta["keys"][0]
    assert mv.prompt.count(f"One of the special magic numbers for {key} is: ") == 4
    assert all(f"for {key} is: {a}." in mv.prompt for a in mv.answers)
    mq = make_sample("niah_multiquery", 1024, tok, random.Random(8))
    keys = mq.meta["keys"]
    assert len(keys) == 4 and len(mq.answers) == 4
    assert re.search(r"What are all the special magic numbers for [a-z-]+, [a-z-]+, [a-z-]+, and [a-z-]+ mentioned",
                     mq.prompt)
    assert mq.prompt.endswith("mentioned in the provided text are")
    assert all(a in mq.prompt for a in mq.answers)


def test_essay_needles_sit_between_sentences(tok):
    s = make_sample("niah_multikey_1", 2048, tok, random.Random(9))
    assert s.prompt.count("One of the special magic numbers for ") == 4
    for m in re.finditer(r"One of the special magic numbers for [a-z-]+ is: \d{7}\.", s.prompt):
        before = s.prompt[: m.start()].rstrip(" ")
        assert before.endswith((".", "!", "?", "\n", '"', "'", ")")), before[-40:]
    assert s.meta["haystack"] == "default"


def test_vt_chain(tok):
    s = make_sample("vt", 1024, tok, random.Random(10))
    assert s.gen_tokens == 30 and len(s.answers) == 5
    value = s.meta["value"]
    main = s.prompt.split("\n\nMemorize and track")[-1]
    a = s.answers
    chain = [f"VAR {a[0]} = {value}"] + [f"VAR {a[i + 1]} = VAR {a[i]}" for i in range(4)]
    positions = [main.index(line + "\n") for line in chain]
    assert positions == sorted(positions)
    assert s.prompt.endswith(f"5 variables are assigned the value {value}, they are: ")
    assert s.prompt.startswith("Memorize and track the chain(s) of variable assignment hidden in the following text.")
    assert s.prompt.count("Question: Find all variables that are assigned the value") == 2  # one-shot example


def test_cwe_counts(tok):
    s = make_sample("cwe", 2048, tok, random.Random(12))
    assert len(s.answers) == 10
    main = s.prompt.rsplit("Below is a numbered list of words.", 1)[1]
    items = re.findall(r"\d+\. ([a-z]+)", main.split("\nQuestion:")[0])
    counts = {w: items.count(w) for w in set(items)}
    assert all(counts[w] == 6 for w in s.answers)  # below 4K: common x6, others x1
    assert all(c == 1 for w, c in counts.items() if w not in s.answers)
    assert s.prompt.endswith("Answer: The top 10 words that appear most often in the list are:")


def test_fwe_zipf(tok):
    s = make_sample("fwe", 2048, tok, random.Random(13))
    body = s.prompt.split("coded words. ", 1)[1].split("\nQuestion:")[0].split()
    counts = sorted(((body.count(w), w) for w in set(body) if w != "..."), reverse=True)
    assert [w for _, w in counts[:3]] == s.answers
    assert counts[2][0] > counts[3][0]
    assert body.count("...") > counts[0][0]


def test_length_fitting_many(tok):
    for name in ["niah_single_2", "niah_multikey_2", "vt", "cwe", "fwe"]:
        for length in (1024, 3000):
            s = make_sample(name, length, tok, random.Random(length))
            assert s.prompt_tokens + s.gen_tokens <= length
            assert s.prompt_tokens + s.gen_tokens > length * 0.9, (name, length, s.prompt_tokens)
            assert all(a in s.prompt for a in s.answers) or name == "vt"


def test_reproducible_and_seed_ranges(tok):
    a = make_sample("niah_single_3", 768, tok, random.Random(eval_seed("niah_single_3", 768, 0)))
    b = make_sample("niah_single_3", 768, tok, random.Random(eval_seed("niah_single_3", 768, 0)))
    c = make_sample("niah_single_3", 768, tok, random.Random(eval_seed("niah_single_3", 768, 1)))
    assert a == b and a.prompt != c.prompt
    assert make_sample("vt", 600, tok, 123) == make_sample("vt", 600, tok, 123)
    assert is_eval_seed(eval_seed("vt", 1024, 3)) and eval_seed("vt", 1024, 3) >= EVAL_SEED_BASE
    assert not any(is_eval_seed(train_seed(0, step, i)) for step in range(50) for i in range(4))


def test_errors(tok):
    with pytest.raises(RulerError, match="did you mean 'niah_multikey_1'"):
        make_sample("niah_multikey1", 512, tok, 0)
    with pytest.raises(RulerError, match="known tasks: niah_single_1"):
        resolve_tasks(["vt", "bogus"])
    with pytest.raises(RulerError, match="length too short"):
        make_sample("niah_single_1", 150, tok, 0)
    with pytest.raises(RulerError, match="length too short"):
        make_sample("vt", 20, tok, 0)
    with pytest.raises(RulerError, match="--squad FILE"):
        make_sample("qa_1", 1024, tok, 0)
    words = "a special magic number is hidden".split()
    wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(RulerError, match="cannot represent"):
        make_sample("niah_single_1", 4096, wl, 0)


def test_qa_with_local_squad_file(tok, tmp_path):
    paras = [{"context": f"Paragraph {i} says the colour of box {i} is shade{i}.",
              "qas": [{"question": f"What colour is box {i}?", "answers": [{"text": f"shade{i}"}],
                       "is_impossible": False}]} for i in range(30)]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paras}]}))
    s = make_sample("qa_1", 1024, tok, random.Random(1), data=str(path))
    assert s.gen_tokens == 32 and TASKS["qa_1"].metric == "string_match_part"
    (ans,) = s.answers
    i = int(ans.removeprefix("shade"))
    assert f"Paragraph {i} says" in s.prompt and s.prompt.endswith(f"Question: What colour is box {i}? Answer:")
    assert s.prompt.count("Document ") >= 10 and s.prompt_tokens + 32 <= 1024


def test_scoring():
    assert match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert match_all("only 123\x00", ["123", "456"]) == 0.5
    assert match_all("ABCDE fghij", ["abcde", "FGHIJ"]) == 1.0
    assert match_part("Paris, France", ["paris", "lyon"]) == 1.0
    assert match_part("London", ["paris", "lyon"]) == 0.0
    assert score("string_match_all", ["1 2", "1"], [["1", "2"], ["1", "2"]]) == 75.0


def test_eval_config_errors(tmp_path):
    cfg = EvalConfig.from_dict({"tasks": ["synthetic"], "lengths": ["1x", 2048, "4k"], "samples": 4})
    assert "niah_single_2" not in cfg.tasks and "vt" in cfg.tasks
    assert cfg.resolved_lengths(512) == [512, 2048, 4096]
    with pytest.raises(SpecError, match=r"eval\.sampels.*did you mean 'samples'"):
        EvalConfig.from_dict({"sampels": 3})
    with pytest.raises(SpecError, match=r"eval\.tasks.*did you mean 'niah_multivalue'"):
        EvalConfig.from_dict({"tasks": ["niah_multivalues"]})
    with pytest.raises(SpecError, match=r"eval\.lengths\[1\]"):
        EvalConfig.from_dict({"lengths": [1024, "fourk"]})
    with pytest.raises(SpecError, match=r"eval\.haystack.*not found"):
        EvalConfig.from_dict({"haystack": str(tmp_path / "missing.txt")})


def test_samples_made_on_threads_equal_those_made_one_by_one(tok):
    """make_samples encodes on several threads; each sample depends only on its own seed."""
    from hybrid.eval.ruler.runner import make_samples
    from hybrid.tasks.seeds import eval_rng
    from hybrid.train.tokenizer import load_tokenizer

    for tokenizer in (tok, load_tokenizer(None)):  # a raw tokenizers.Tokenizer and a transformers one
        got = make_samples(["niah_multikey_1", "vt"], [512, 1024], 6, tokenizer, seed=3)
        for (t, length), samples in got.items():
            want = [make_sample(t, length, tokenizer, eval_rng(t, length, i, 3)) for i in range(6)]
            assert [(s.prompt, s.answers, s.prompt_tokens) for s in samples] == \
                [(s.prompt, s.answers, s.prompt_tokens) for s in want]
    skipped = {}
    assert make_samples(["vt"], [64], 3, tok, skipped=skipped) == {} and 64 in skipped["vt"]
