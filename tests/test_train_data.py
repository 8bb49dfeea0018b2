"""Training data, tokenizer, config and schedule (no model needed)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from hybrid.blocks.spec import SpecError
from hybrid.train.batches import IGNORE
from hybrid.train.config import TrainConfig
from hybrid.train.mqar import MQARSource
from hybrid.train.schedule import lr_factor, param_groups
from hybrid.train.text_source import TextSource
from hybrid.train.textfiles import DataFileError, expand_files, iter_documents
from hybrid.train.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


# ---- config -----------------------------------------------------------------------------------------

def test_config_defaults_and_roundtrip():
    c = TrainConfig.from_dict({"steps": 5, "lr": "3e-4", "betas": [0.9, 0.99],
                               "data": {"kind": "assoc_recall", "num_kv_pairs": 4}})
    assert c.steps == 5 and c.lr == 3e-4 and c.betas == (0.9, 0.99)
    assert c.data.kind == "assoc_recall" and c.data.num_kv_pairs == 4
    assert TrainConfig.from_dict(c.to_dict()).to_dict() == c.to_dict()


@pytest.mark.parametrize("bad, path, words", [
    ({"stesp": 3}, "train.stesp", "did you mean 'steps'"),
    ({"steps": 0}, "train.steps", ">= 1"),
    ({"lr": -1}, "train.lr", "> 0"),
    ({"betas": [0.9]}, "train.betas", "two numbers"),
    ({"dtype": "bf61"}, "train.dtype", "did you mean 'bf16'"),
    ({"compile": "yes"}, "train.compile", "true or false"),
    ({"data": {"kind": "txt"}}, "train.data.kind", "did you mean 'text'"),
    ({"data": {"kind": "text", "tasks": ["vt"]}}, "train.data.tasks", "ruler_mix"),
    ({"data": {"kind": "assoc_recall", "num_kv_pair": 3}}, "train.data.num_kv_pair", "num_kv_pairs"),
    ({"data": {"kind": "ruler_mix", "loss_on": "answers"}}, "train.data.loss_on", "did you mean 'answer'"),
])
def test_config_errors(bad, path, words):
    with pytest.raises(SpecError) as e:
        TrainConfig.from_dict(bad)
    assert e.value.path == path
    assert words in str(e.value)


# ---- schedule and parameter groups --------------------------------------------------------------------

def test_warmup_cosine():
    f = [lr_factor(s, steps=100, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_factor(1000, steps=100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_no_decay_groups():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.proj = torch.nn.Linear(4, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.A_log = torch.nn.Parameter(torch.zeros(2))
            self.dt_bias = torch.nn.Parameter(torch.zeros(2))

    groups, (decay, no_decay) = param_groups(M(), 0.1)
    assert decay == ["proj.weight"]
    assert set(no_decay) == {"embed.weight", "proj.bias", "norm.weight", "norm.bias", "A_log", "dt_bias"}
    _, (decay, _) = param_groups(M(), 0.1, decay_embeddings=True)
    assert set(decay) == {"embed.weight", "proj.weight"}


# ---- MQAR -----------------------------------------------------------------------------------------------

def test_mqar_structure_and_determinism():
    src = MQARSource(vocab_size=512, seq_len=64, batch_size=3, num_kv_pairs=6)
    b = src.batch(7, 0)
    assert b.input_ids.shape == (3, 64) and b.cu_seqlens is None
    for ids, lab in zip(b.input_ids.tolist(), b.labels.tolist()):
        kv = dict(zip(ids[0:12:2], ids[1:12:2]))
        assert len(kv) == 6 and all(k < 256 <= v for k, v in kv.items())
        tgt = [t for t in range(64) if lab[t] != IGNORE]
        assert len(tgt) == 6
        for t in tgt:  # the label after a queried key is that key's value
            assert t >= 12 and kv[ids[t - 1]] == lab[t]
    assert torch.equal(src.batch(7, 0).input_ids, b.input_ids)
    assert not torch.equal(src.batch(8, 0).input_ids, b.input_ids)
    assert not torch.equal(src.eval_batch(0).input_ids, src.batch(0, 0).input_ids)
    other_rank = MQARSource(vocab_size=512, seq_len=64, batch_size=3, num_kv_pairs=6, rank=1)
    assert not torch.equal(other_rank.batch(7, 0).input_ids, b.input_ids)


def test_mqar_bad_sizes():
    with pytest.raises(ValueError, match="seq_len"):
        MQARSource(vocab_size=512, seq_len=16, batch_size=1, num_kv_pairs=8)


# ---- tokenizer ------------------------------------------------------------------------------------------

def test_tokenizer_specials_digits_uuid(tok):
    assert len(tok) == 4096
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    num = tok.encode(" 4829013", add_special_tokens=False)
    assert len(num) == 8  # the space, then one token per digit
    uid = "3f2a9c1e-7b4d-4e2a-9f1c-0a1b2c3d4e5f"
    ids = tok.encode(uid, add_special_tokens=False)
    assert tok.decode(ids) == uid and len(ids) <= len(uid)
    text = "To be, or not to be: that is the question.\n\tÆther ✓"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert len(tok.encode("To be, or not to be", add_special_tokens=False)) <= 7


def test_digits3_tokenizer_groups_digits():
    """The shipped digits3 tokenizer: every group of 1-3 digits is one token, digit runs split into
    groups of three from the left, and everything round-trips (RULER values, UUIDs, prose)."""
    t = load_tokenizer("digits3")
    assert len(t) == 4096 and (t.bos_token_id, t.eos_token_id, t.pad_token_id) == (0, 1, 2)
    for w in (1, 2, 3):
        for i in range(0, 10 ** w, 7):
            assert len(t.encode(str(i).zfill(w), add_special_tokens=False)) == 1
    ids = t.encode("is: 4829013.", add_special_tokens=False)
    assert [t.decode([i]) for i in ids][-4:] == ["482", "901", "3", "."]
    for text in ("3f2a9c1e-7b4d-4e2a-9f1c-0a1b2c3d4e5f", "VAR ABCDE = 12345\n", "To be, or not to be."):
        assert t.decode(t.encode(text, add_special_tokens=False)) == text


def test_train_tokenizer_digit_groups(tmp_path):
    from hybrid.train.tokenizer import train_tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("the number 1234567 and 89 and 4 " * 50)
    tok = train_tokenizer(tmp_path / "tok", files=[str(corpus)], vocab_size=1400, synthetic=200, digit_group=3)
    assert [tok.decode([i]) for i in tok.encode("1234567", add_special_tokens=False)] == ["123", "456", "7"]
    with pytest.raises(ValueError, match="digit_group"):
        train_tokenizer(tmp_path / "bad", files=[str(corpus)], digit_group=7)


def test_tokenizer_bad_path(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


# ---- text files and packing -------------------------------------------------------------------------------

def test_text_packing_respects_documents(tmp_path, tok):
    docs = [f"document number {i}. " + "word " * (2 + 3 * i) for i in range(9)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    src = TextSource(tokenizer=tok, files=[str(tmp_path / "a.jsonl")], seq_len=32, batch_size=2, grad_accum=1,
                     val_fraction=0.0)
    b = src.batch(0, 0)
    ids, lab, cu = b.input_ids[0], b.labels[0], b.cu_seqlens.tolist()
    assert ids.shape == (64,) and cu[0] == 0 and cu[-1] == 64 and 32 in cu
    bos_pos = (ids == tok.bos_token_id).nonzero().flatten().tolist()
    assert set(bos_pos) <= set(cu)  # every document start is a segment start
    assert all(lab[s] == IGNORE for s in cu[:-1])  # nothing is predicted across a boundary
    # rows without an inside boundary come as a plain (B, T) batch
    (tmp_path / "long.txt").write_text("the quick brown fox jumps over the lazy dog. " * 100)
    plain = TextSource(tokenizer=tok, files=[str(tmp_path / "long.txt")], seq_len=32, batch_size=2, grad_accum=1,
                       val_fraction=0.0).batch(1, 0)
    assert plain.cu_seqlens is None and plain.input_ids.shape == (2, 32)
    assert (plain.labels[:, 0] == IGNORE).all() and (plain.labels[:, 1:] != IGNORE).all()
    # an epoch visits every row exactly once
    rows = [src._row_index(g) for g in range(src.n_rows)]
    assert sorted(rows) == list(range(src.n_rows))


def test_text_ranks_read_disjoint_rows(tmp_path, tok):
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    a = TextSource(tokenizer=tok, files=[str(tmp_path / "a.txt")], seq_len=16, batch_size=2, grad_accum=1,
                   val_fraction=0.1, rank=0, world_size=2)
    b = TextSource(tokenizer=tok, files=[str(tmp_path / "a.txt")], seq_len=16, batch_size=2, grad_accum=1,
                   val_fraction=0.1, rank=1, world_size=2)
    ga = {a._row_index(((0 * 1 + 0) * 2 + 0) * 2 + i) for i in range(2)}
    gb = {b._row_index(((0 * 1 + 0) * 2 + 1) * 2 + i) for i in range(2)}
    assert not ga & gb
    assert a.eval_batch(0) is not None


def test_default_corpus_and_unigram_baseline(tok):
    src = TextSource(tokenizer=tok, files=None, seq_len=256, batch_size=2, grad_accum=1)
    base = src.baselines()
    assert base["train_tokens"] > 1_000_000 and base["val_tokens"] > 10_000
    assert 5.0 < base["unigram_entropy_nats"] < 7.5


@pytest.mark.parametrize("content, name, msg", [
    ("", "empty.txt", "is empty"),
    ("   \n\n", "blank.txt", "only whitespace"),
    ('{"txt": "x"}\n', "bad.jsonl", "needs a \"text\" field"),
    ("not json\n", "bad2.jsonl", "not valid JSON"),
])
def test_bad_files(tmp_path, content, name, msg):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataFileError, match=msg):
        list(iter_documents(p))


def test_missing_files_and_globs(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        expand_files([str(tmp_path / "missing.txt")])
    with pytest.raises(DataFileError, match="no file matches"):
        expand_files([str(tmp_path / "*.jsonl")])
    with pytest.raises(DataFileError, match="holds no"):
        expand_files([str(tmp_path)])


def test_too_little_text(tmp_path, tok):
    (tmp_path / "tiny.txt").write_text("hello there")
    with pytest.raises(DataFileError, match="fewer than one row"):
        TextSource(tokenizer=tok, files=[str(tmp_path / "tiny.txt")], seq_len=64, batch_size=1, grad_accum=1,
                   val_fraction=0.0)


def test_ruler_mix_answer_loss(tok):
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.ruler_source import RulerSource

    src = RulerSource(tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=320, batch_size=2)
    b = src.batch(0, 0)
    # packed (1, 640) with cu_seqlens, or plain (2, 320) rows when each row holds one document
    assert b.input_ids.numel() == 640 and (b.cu_seqlens is None) == (b.input_ids.shape == (2, 320))
    lab = b.labels.reshape(-1)
    cu = b.cu_seqlens.tolist() if b.cu_seqlens is not None else [0, 320, 640]
    texts = []
    for s, e in zip(cu[:-1], cu[1:]):
        seg = lab[s:e]
        seg = seg[seg != IGNORE]
        if len(seg):
            texts.append(tok.decode(seg))
    assert texts and all(t.endswith(".<|eos|>") for t in texts)
    assert all(any(ch.isdigit() for ch in t) for t in texts)  # the answers are 7-digit numbers
    assert torch.equal(src.batch(0, 0).input_ids, b.input_ids)
    assert not torch.equal(src.eval_batch(0).input_ids, b.input_ids)
    assert np.all(b.labels.numpy() < 4096)


def test_ruler_mix_marks_answer_tokens_whatever_the_loss(tok):
    """answer_labels are the answer tokens (without the closing <eos>) under loss_on all and answer."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.ruler_source import RulerSource

    kw = dict(tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=400, batch_size=3, followups=2)
    on_all, on_ans = RulerSource(loss_on="all", **kw), RulerSource(loss_on="answer", **kw)
    a, b = on_all.batch(3, 0), on_ans.batch(3, 0)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.answer_labels, b.answer_labels)
    assert (a.labels != IGNORE).sum() > 3 * (a.answer_labels != IGNORE).sum()  # loss on all: many more
    expect = b.labels.clone()
    expect[expect == tok.eos_token_id] = IGNORE
    assert torch.equal(b.answer_labels, expect)
    n_docs = len(b.cu_seqlens) - 2
    answered = b.answer_labels[0] != IGNORE
    runs = int((answered[1:] & ~answered[:-1]).sum()) + int(answered[0])
    assert runs > n_docs  # follow-ups add answers beyond one per document
    moved = b.to("cpu")
    assert torch.equal(moved.answer_labels, b.answer_labels)


def test_prefetch_workers_give_the_same_stream():
    from hybrid.train.prefetch import Prefetcher

    src = MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4)
    pf = Prefetcher(src, steps=5, accum=2, workers=2)
    try:
        for step in range(5):
            for m in range(2):
                assert torch.equal(pf.get(step, m).input_ids, src.batch(step, m).input_ids)
    finally:
        pf.close(keep=False)


def test_ruler_mix_documents_fill_the_rows(tok):
    """The generation budget of a RULER length is not held by a training document, so it must not
    become padding: at 512 tokens the NIAH mixture packs well over one document per row."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.ruler_source import RulerSource

    src = RulerSource(tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=512, batch_size=16)
    assert all(0 < s < 128 for s in src.slack.values())
    b = src.batch(0, 0)
    ids = b.input_ids[0]
    docs = int((ids == tok.bos_token_id).sum())
    pad = int((ids == tok.pad_token_id).sum()) / ids.numel()
    assert docs / 16 > 1.3 and pad < 0.25, (docs, pad)
    assert b.input_ids.shape == (1, 16 * 512)


def test_ruler_mix_length_warmup_caps_documents(tok):
    """doc_len_warmup: early steps hold only short documents (more per row), the cap grows to the
    full row by the end of the warm-up, and held-out batches are never capped."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.config import DataConfig
    from hybrid.train.ruler_source import RulerSource

    d = DataConfig.from_dict({"kind": "ruler_mix", "tasks": ["niah_single_1"], "doc_len_warmup": 100})
    assert d.doc_len_warmup == 100 and d.to_dict()["doc_len_warmup"] == 100
    kw = dict(tokenizer=tok, tasks=d.tasks, seq_len=512, batch_size=16, loss_on="all")
    warm = RulerSource(doc_len_warmup=100, **kw)
    plain = RulerSource(**kw)
    lo = warm.min_len["niah_single_1"]
    assert warm.length_cap(0) == lo < warm.length_cap(50) < warm.length_cap(99) < warm.length_cap(100)
    assert warm.length_cap(100) == warm.length_cap(-1) == plain.length_cap(0)

    def doc_lengths(batch):
        ids = batch.input_ids[0].tolist()
        starts = [i for i, t in enumerate(ids) if t == tok.bos_token_id] + [len(ids)]
        return [sum(t != tok.pad_token_id for t in ids[a:b]) for a, b in zip(starts[:-1], starts[1:])]

    early = doc_lengths(warm.batch(0, 0))
    # a document holds its prompt + completion, at most its length budget minus the unused generation
    assert max(early) <= lo - warm.slack["niah_single_1"] + 8 + 16
    assert len(early) > len(doc_lengths(plain.batch(0, 0)))
    assert torch.equal(warm.eval_batch(0).input_ids, plain.eval_batch(0).input_ids)
    assert torch.equal(warm.batch(100, 0).input_ids, plain.batch(100, 0).input_ids)


def test_ruler_mix_followups_ask_about_other_facts(tok):
    """followups: a document starts as an exact RULER prompt and its answer, then asks RULER's question
    about other facts of the same context; every follow-up answer is that fact's value as stated."""
    pytest.importorskip("hybrid.tasks")
    import re

    from hybrid.train.ruler_source import RulerSource

    src = RulerSource(tokenizer=tok, tasks=["niah_multikey_2"], seq_len=512, batch_size=8, loss_on="answer",
                      followups=3)
    b = src.batch(0, 0)
    ids, lab = b.input_ids[0].tolist(), b.labels[0].tolist()
    n_follow = 0
    bounds = [i for i, t in enumerate(ids) if t == tok.bos_token_id] + [len(ids)]
    for s, e in zip(bounds[:-1], bounds[1:]):
        text = tok.decode(ids[s + 1:e]).replace("<|eos|>", "").replace("<|pad|>", "")
        stated = dict(re.findall(r"special magic numbers for (\S+) is: (\d+)\.", text))
        asked = re.findall(r"The special magic number for (\S+) mentioned in the provided text is (\d+)\.", text)
        assert asked and text.startswith("A special magic number is hidden")
        for key, value in asked:
            assert stated[key] == value
        assert len({k for k, _ in asked}) == len(asked)  # each fact asked once
        n_follow += len(asked) - 1
        # with loss on the answers, exactly the answers (and <eos>) carry labels
        labelled = tok.decode([t for t in lab[s:e] if t != -100]).replace("<|eos|>", "")
        assert labelled.replace(" ", "") == "".join(f"{v}." for _, v in asked)
    assert n_follow >= 8  # about 2 follow-ups per document here
    plain = RulerSource(tokenizer=tok, tasks=["niah_multikey_2"], seq_len=512, batch_size=8, loss_on="answer")
    assert "mentioned in the provided text is" in tok.decode(plain.batch(0, 0).input_ids[0])


def _doc_texts(tok, batch):
    ids = batch.input_ids.reshape(-1).tolist()
    bounds = [i for i, t in enumerate(ids) if t == tok.bos_token_id] + [len(ids)]
    return [tok.decode(ids[s + 1:e]) for s, e in zip(bounds[:-1], bounds[1:])]


def test_ruler_mix_weights_set_the_mixture(tok):
    """train.data.weights: documents are drawn in proportion to the weights (3:1 here, against about
    1:1 without), a weight of 0 leaves a task out, and the equal default is the unweighted stream."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.ruler_source import RulerSource

    kw = dict(tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=320, batch_size=64)

    def shares(src):
        texts = [t for step in range(3) for t in _doc_texts(tok, src.batch(step, 0))]
        single = sum("The grass is green" in t for t in texts)
        multi = sum(t.count("One of the special magic numbers") > 1 for t in texts)
        assert single + multi == len(texts) > 150
        return single / len(texts)

    assert 0.35 < shares(RulerSource(**kw)) < 0.65
    assert 0.68 < shares(RulerSource(weights={"niah_single_1": 3, "niah_multikey_2": 1}, **kw)) < 0.82
    assert shares(RulerSource(weights={"niah_multikey_2": 0}, **kw)) == 1.0
    same = RulerSource(weights={"niah_single_1": 2, "niah_multikey_2": 2}, **kw)
    assert torch.equal(same.batch(0, 0).input_ids, RulerSource(**kw).batch(0, 0).input_ids)
    with pytest.raises(ValueError, match="not in the mixture"):
        RulerSource(weights={"vt": 1}, **kw)


@pytest.mark.parametrize("weights, path, words", [
    ({"vtt": 1}, "train.data.weights.vtt", "did you mean 'vt'"),
    ({"niah_multikey_2": 1}, "train.data.weights.niah_multikey_2", "not one of train.data.tasks"),
    ({"vt": -1}, "train.data.weights.vt", ">= 0"),
    ({"vt": "lots"}, "train.data.weights.vt", "a number"),
    ({"vt": 0, "niah_single_1": 0}, "train.data.weights", "every task's weight is 0"),
    ([1, 2], "train.data.weights", "mapping of task name"),
])
def test_ruler_mix_weights_errors(weights, path, words):
    with pytest.raises(SpecError) as e:
        TrainConfig.from_dict({"data": {"kind": "ruler_mix", "tasks": ["niah_single_1", "vt"], "weights": weights}})
    assert e.value.path == path and words in str(e.value)


def test_ruler_mix_weights_parse_and_roundtrip():
    c = TrainConfig.from_dict({"data": {"kind": "ruler_mix", "tasks": ["niah_single_1:3-digit", "vt"],
                                        "weights": {"niah_single_1:3-digit": 2}}})
    assert c.data.weights == {"niah_single_1:3-digit": 2.0} and c.data.tasks == ["niah_single_1:3-digit", "vt"]
    assert TrainConfig.from_dict(c.to_dict()).to_dict() == c.to_dict()
    assert TrainConfig.from_dict({"data": {"kind": "ruler_mix"}}).data.weights is None
    with pytest.raises(SpecError) as e:  # task names are checked when the recipe is read
        TrainConfig.from_dict({"data": {"kind": "ruler_mix", "tasks": ["niah_single_1:9-digit"]}})
    assert e.value.path == "train.data.tasks" and "choose 2 to 7" in str(e.value)


def test_ruler_mix_short_values(tok):
    """NAME:N-digit tasks: the same templates with N-digit values; with digits3 a value of up to 3
    digits is one token, so the answer the model copies is one token."""
    pytest.importorskip("hybrid.tasks")
    import re

    from hybrid.train.ruler_source import RulerSource
    from hybrid.train.tokenizer import load_tokenizer

    d3 = load_tokenizer("digits3")
    src = RulerSource(tokenizer=d3, tasks=["niah_single_1:3-digit", "niah_multikey_2:2-digit"], seq_len=320,
                      batch_size=16, loss_on="answer")
    b = src.batch(0, 0)
    lab = b.labels.reshape(-1).tolist()
    texts = _doc_texts(d3, b)
    kinds = set()
    for text in texts:
        values = re.findall(r"special magic numbers for \S+ is: (\d+)\.", text)
        answer = re.search(r"mentioned in the provided text is (\d+)\.", text)[1]
        digits = 3 if "The grass is green" in text else 2
        kinds.add(digits)
        assert {len(v) for v in values} == {digits} and answer in values and len(answer) == digits
        assert len(d3.encode(answer, add_special_tokens=False)) == 1
    assert kinds == {2, 3}
    labelled = [t for t in lab if t != IGNORE]
    assert len(labelled) == 4 * len(texts)  # per document: the space, the value, the period and <eos>


def test_ruler_mix_one_document_per_row_runs_plain(tok):
    """pack: false puts one document in a row, then padding; a padding tail without targets needs no
    boundary, so the batch is plain (B, T) rows. A tail that holds a target keeps the packed form."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.batches import pack_rows
    from hybrid.train.ruler_source import RulerSource

    src = RulerSource(tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=400, batch_size=6,
                      pack=False)
    b = src.batch(0, 0)
    assert b.cu_seqlens is None and b.input_ids.shape == (6, 400)
    assert ((b.input_ids == tok.bos_token_id).sum(1) == 1).all() and (b.input_ids[:, 0] == tok.bos_token_id).all()
    assert (b.input_ids == tok.pad_token_id).any()
    assert len(_doc_texts(tok, b)) == 6 < len(_doc_texts(tok, RulerSource(
        tokenizer=tok, tasks=["niah_single_1", "niah_multikey_2"], seq_len=400, batch_size=6).batch(0, 0)))
    ids = np.arange(8)
    lab = np.array([IGNORE, 1, 2, 3, IGNORE, IGNORE, IGNORE, IGNORE])
    assert pack_rows([(ids, lab, [0, 4])] * 2).cu_seqlens is None
    lab[6] = 6  # the tail now holds a target: it is a document of its own
    assert pack_rows([(ids, lab, [0, 4])] * 2).cu_seqlens.tolist() == [0, 4, 8, 12, 16]


def test_prefetch_makes_batches_itself_while_workers_start():
    """Before any worker has delivered, a batch that is not ready is made in this process (spawned
    workers take seconds to import torch); the stream is the same, and the workers take over."""
    from hybrid.train.prefetch import Prefetcher

    src = MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4)
    steps = 600
    pf = Prefetcher(src, steps=steps, accum=1, workers=1)
    try:
        first = pf.get(0, 0)  # the worker process cannot have started yet
        assert pf.made_inline == 1 and not pf.warm
        assert torch.equal(first.input_ids, src.batch(0, 0).input_ids)
        step = 1
        while step < steps and not pf.warm:  # a slow consumer: the worker starts within a minute
            assert torch.equal(pf.get(step, 0).input_ids, src.batch(step, 0).input_ids)
            step += 1
            time.sleep(0.1)
        assert pf.warm and pf.made_inline < step
        for s in range(step, step + 5):  # from the worker now
            assert torch.equal(pf.get(s, 0).input_ids, src.batch(s, 0).input_ids)
        assert pf.made_inline < step
    finally:
        pf.close(keep=False)


def test_prefetch_pool_is_kept_for_the_same_source():
    """A sweep trains several variants on the same data in one process: the second Prefetcher of an
    identical source reuses the started workers; a different source gets its own."""
    from hybrid.train import prefetch

    src = MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4)
    a = prefetch.Prefetcher(src, steps=3, accum=1, workers=1)
    pool = a.pool
    a.get(0, 0)
    a.close()
    b = prefetch.Prefetcher(MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4),
                            steps=3, accum=1, workers=1)
    try:
        assert b.pool is pool
        assert torch.equal(b.get(1, 0).input_ids, src.batch(1, 0).input_ids)
    finally:
        b.close()
    other = MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4, seed=1)
    c = prefetch.Prefetcher(other, steps=3, accum=1, workers=1)
    try:
        assert c.pool is not pool and c.pool is not None
        assert torch.equal(c.get(2, 0).input_ids, other.batch(2, 0).input_ids)
    finally:
        c.close(keep=False)
    assert not prefetch._KEPT


def test_prefetch_workers_get_the_source_through_a_file():
    """Spawning writes a worker's initializer arguments into a pipe; above the pipe's 64 KB that write
    blocks the training loop until the new process has imported the main module (45-67 s of blocked
    first steps in an H200 sweep). So the arguments stay small however large the source is, and the
    workers still make the same batches."""
    import pickle

    from hybrid.train.prefetch import Prefetcher

    src = MQARSource(vocab_size=256, seq_len=32, batch_size=2, num_kv_pairs=4)
    src.ballast = bytes(300_000)  # a source as large as a RULER mixture's, and then some
    pf = Prefetcher(src, steps=400, accum=1, workers=1)
    try:
        assert len(pickle.dumps(pf.pool._initargs)) < 4096
        step = 0
        while step < 399 and not pf.warm:
            assert torch.equal(pf.get(step, 0).input_ids, src.batch(step, 0).input_ids)
            step += 1
            time.sleep(0.1)
        assert pf.warm
        assert torch.equal(pf.get(step, 0).input_ids, src.batch(step, 0).input_ids)
    finally:
        pf.close(keep=False)


def test_ruler_mix_row_shorter_than_the_length_budget(tok):
    """A RULER length budget counts the 128 tokens to generate, which a training document does not hold: a
    row shorter than the task's smallest budget (~280 tokens for niah_single_1) still takes a document
    when the prompt and its completion fit; a row too short for that is refused with the seq_len named."""
    pytest.importorskip("hybrid.tasks")
    from hybrid.train.ruler_source import RulerSource

    src = RulerSource(tokenizer=tok, tasks=["niah_single_1"], seq_len=192, batch_size=4, pack=False)
    assert src.min_len["niah_single_1"] > 192
    b = src.batch(0, 0)
    assert b.input_ids.shape == (4, 192)
    for row, lab in zip(b.input_ids.tolist(), b.labels.tolist()):
        text = tok.decode([t for t in row if t != tok.pad_token_id])
        assert text.startswith("<|bos|>A special magic number is hidden") and text.endswith(".<|eos|>")
        assert tok.decode([t for t in lab if t != IGNORE]).endswith(".<|eos|>")
    with pytest.raises(ValueError, match="seq_len=128"):
        RulerSource(tokenizer=tok, tasks=["niah_single_1"], seq_len=128, batch_size=1)
