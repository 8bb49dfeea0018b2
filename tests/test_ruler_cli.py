"""``hybrid ruler`` end to end on a tiny randomly initialised model, and its input errors."""

import json

import pytest

from hybrid.cli import main as cli

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoTokenizer

    from hybrid.blocks import HybridConfig, HybridForCausalLM

    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained("hybrid/data/tokenizer")
    cfg = HybridConfig(vocab_size=len(tok), d_model=32, mlp={"kind": "swiglu", "hidden": 64},
                       layers=[{"kind": "carve", "heads": 2, "head_dim": 16, "chunk_size": 16, "gate_rank": 8,
                                "content_rank": 4},
                               {"kind": "attention", "heads": 2, "head_dim": 16}],
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    HybridForCausalLM(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    (d / "train_config.json").write_text(json.dumps({"seq_len": 320}))
    return d


def test_ruler_end_to_end(tiny_model, tmp_path, capsys):
    out = tmp_path / "r"
    rc = cli(["ruler", str(tiny_model), "--tasks", "niah_single_1,niah_multikey_1", "--lengths", "1x", "400",
              "--samples", "3", "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["lengths"] == [320, 400] and res["ruler_like_tasks"] == ["niah_multikey_1"]
    assert set(res["scores"]) == {"niah_single_1", "niah_multikey_1"}
    assert all(0 <= v <= 100 for t in res["scores"].values() for v in t.values())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 2 * 3
    assert all(p["prompt_tokens"] + 128 <= p["length"] for p in preds)
    assert (out / "heatmap.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "niah_multikey_1 *" in text and "RULER-like" in text and "teacher-forced" in text
    # teacher-forced answer-token accuracy: 7 digit tokens per 7-digit answer, the cell mean of the rows
    assert all(p["answer_tokens"] == 7 and 0 <= p["answer_tokens_right"] <= 7 for p in preds)
    for t in res["scores"]:
        for n in ("320", "400"):
            rows = [p for p in preds if p["task"] == t and str(p["length"]) == n]
            expect = 100 * sum(p["answer_tokens_right"] for p in rows) / sum(p["answer_tokens"] for p in rows)
            assert res["answer_token_acc"][t][n] == pytest.approx(expect)


def test_teacher_forced_answer_tokens_match_unpadded_rows(tiny_model):
    """Right-padded batch rows give the same per-token predictions as each row alone."""
    import torch

    from hybrid.eval.ruler.checkpoint import load_checkpoint
    from hybrid.eval.ruler.runner import answer_tokens_right

    model, tok, _ = load_checkpoint(tiny_model, device="cpu")
    prompts = [[0] + list(range(100, 140)), [0] + list(range(200, 215))]
    completions = [" 4829013.", " 1234567."]
    got = answer_tokens_right(model, tok, prompts, completions)
    for (right, counted), p, c in zip(got, prompts, completions):
        cid = tok.encode(c, add_special_tokens=False)
        with torch.no_grad():
            pred = model(input_ids=torch.tensor([p + cid])).logits.argmax(-1)[0]
        digits = [j for j, t in enumerate(cid) if tok.decode([t]).isdigit()]
        assert counted == len(digits) == 7
        assert right == sum(int(pred[len(p) + j - 1]) == cid[j] for j in digits)


def test_answer_tokens_from_the_prefill_equal_a_forward_of_their_own(tiny_model):
    """Where the model decodes through a static cache (on CUDA; here an eager one on the CPU), ``generate``
    counts the answer tokens from the prefill's state: the same counts as ``answer_tokens_right``."""
    import torch

    from hybrid.blocks.decode_graph import decode_cache, greedy_decode
    from hybrid.eval.ruler.checkpoint import load_checkpoint
    from hybrid.eval.ruler.runner import answer_tokens_right, generate

    model, tok, _ = load_checkpoint(tiny_model, device="cpu")

    class StaticOnCpu(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def greedy_new_tokens(self, ids, mask, *, max_new_tokens, **kw):
            cache = decode_cache(self.inner, ids.shape[0], ids.shape[1] + max_new_tokens)
            return greedy_decode(self.inner, ids, mask, max_new_tokens, cache=cache, **kw)

    prompts = [[0] + list(range(100, 140)), [0] + list(range(200, 215)), [0] + list(range(300, 333))]
    completions = [" 4829013.", " 12.", " 7654321 and 42."]
    texts, made, tf = generate(StaticOnCpu(model), tok, prompts, 6, completions)
    assert tf == answer_tokens_right(model, tok, prompts, completions)
    assert [c for _, c in tf] == [7, 2, 10]  # digits one token each, "and" one
    assert texts == generate(model, tok, prompts, 6)[0] and made > 0


def test_teacher_forced_check_of_a_model_without_logits_to_keep(tiny_model):
    """A model whose forward computes every logit gives the same counts as ours, which computes the tail."""
    import torch

    from hybrid.eval.ruler.checkpoint import load_checkpoint
    from hybrid.eval.ruler.runner import answer_tokens_right

    model, tok, _ = load_checkpoint(tiny_model, device="cpu")

    class AllLogits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids)

    prompts = [[0] + list(range(100, 140)), [0] + list(range(200, 215)), [0] + list(range(300, 333))]
    completions = [" 4829013.", " 1234567.", " 7654321."]
    assert answer_tokens_right(AllLogits(model), tok, prompts, completions) == \
        answer_tokens_right(model, tok, prompts, completions)


def test_ruler_scores_match_predictions(tiny_model, tmp_path):
    """The reported score is recomputed from the saved predictions (RULER's string_match_all)."""
    out = tmp_path / "r"
    assert cli(["ruler", str(tiny_model), "--tasks", "vt", "--lengths", "512", "--samples", "2", "--out", str(out),
                "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    expect = 100 * sum(sum(a.lower() in p["prediction"].lower() for a in p["answers"]) / len(p["answers"])
                       for p in preds) / len(preds)
    assert res["scores"]["vt"]["512"] == pytest.approx(expect)


def test_ruler_input_errors(tiny_model, tmp_path, capsys):
    assert cli(["ruler", str(tmp_path / "nope"), "--lengths", "512"]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["ruler", str(tmp_path / "empty"), "--lengths", "512"]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert cli(["ruler", str(tiny_model), "--tasks", "niah_multikye_2", "--lengths", "512"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'niah_multikey_2'" in err and "known" in err
    assert cli(["ruler", str(tiny_model), "--tasks", "niah_single_1", "--lengths", "200", "--no-progress"]) == 2
    assert "length too short" in capsys.readouterr().err
    assert cli(["ruler", str(tiny_model), "--tasks", "qa_1", "--lengths", "512"]) == 2
    assert "--squad FILE" in capsys.readouterr().err
    assert cli(["ruler", str(tiny_model), "--lengths", "twice"]) == 2
    assert "--lengths[0]" in capsys.readouterr().err
