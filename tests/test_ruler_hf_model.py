"""``hybrid ruler`` on another project's causal LM: a tiny randomly initialised ``LlamaForCausalLM`` with a
byte-level BPE tokenizer built here (nothing is downloaded), saved as a Hugging Face folder."""

import json

import pytest

from hybrid.cli import main as cli

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = ["One of the special magic numbers for apple is: 1234567.", "The grass is green. The sky is blue.",
          "What are all the special magic numbers mentioned in the provided text?", "VAR ABCDE = 12345"] * 20


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(d))
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


def test_ruler_on_a_llama_folder(llama_dir, tmp_path, capsys):
    out = tmp_path / "r"
    rc = cli(["ruler", str(llama_dir), "--tasks", "niah_single_1,niah_multikey_2", "--lengths", "512", "768", "--samples", "2",
              "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["lengths"] == [512, 768] and set(res["scores"]) == {"niah_single_1", "niah_multikey_2"}
    assert all(0 <= v <= 100 for t in res["scores"].values() for v in t.values())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 2 * 2 and all(p["prompt_tokens"] <= 768 for p in preds)
    assert "llama" not in capsys.readouterr().err


def test_another_model_needs_lengths(llama_dir, capsys):
    assert cli(["ruler", str(llama_dir), "--tasks", "niah_single_1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not a hybrid model (model_type 'llama'): --lengths is required" in err
    assert len(err.strip().splitlines()) <= 2  # one message (rich may wrap it once), no traceback
    assert cli(["ruler", str(llama_dir), "--tasks", "niah_single_1", "--lengths", "2x", "--no-progress"]) == 2
    assert "relative to the training length" in capsys.readouterr().err


def test_tasks_all_at_a_short_length_skips_what_does_not_fit(llama_dir, tmp_path, capsys):
    """At 512 tokens cwe and fwe do not fit: they are skipped with a line, the rest is scored, exit 0."""
    out = tmp_path / "all"
    rc = cli(["ruler", str(llama_dir), "--tasks", "synthetic", "--lengths", "512", "--samples", "1",
              "--batch-size", "4", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    skipped = set(res["skipped"])
    assert {"cwe", "fwe"} <= skipped and "skipped cwe at 512 tokens: it does not fit" in text
    scored = [t for t in res["tasks"] if res["scores"][t]]
    assert "niah_single_1" in scored and not skipped & set(scored)
    assert res["mean_of_tasks"]["512"] == len(scored)


def test_held_out_tasks_are_evaluated_and_averaged_apart(llama_dir):
    from hybrid.eval.ruler.checkpoint import load_checkpoint
    from hybrid.eval.ruler.runner import evaluate

    model, tok, _ = load_checkpoint(llama_dir, "cpu")
    run = evaluate(model, tok, ["niah_single_1"], [512], 2, batch_size=2, progress=False,
                   held_out=["niah_multikey_2"])
    d = run.to_dict()
    assert d["tasks"] == ["niah_single_1", "niah_multikey_2"] and d["held_out"] == ["niah_multikey_2"]
    assert d["mean"]["512"] == d["scores"]["niah_single_1"]["512"]
    assert d["held_out_mean"]["512"] == d["scores"]["niah_multikey_2"]["512"]
    assert len(d["sample_scores"]["niah_multikey_2"]["512"]) == 2
    assert d["shape"]["niah_single_1"]["512"]["unit"] == "noise lines"
