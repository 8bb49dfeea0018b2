"""lm-evaluation-harness on a saved hybrid model: the documented entry point and the HFLM wrapper,
with a local task file (no downloads). Skipped when lm_eval is not installed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]

TASK = """task: hybrid_local_{kind}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {kind}
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
{extra}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoTokenizer

    from hybrid.blocks import HybridConfig, HybridForCausalLM

    d = tmp_path_factory.mktemp("lm")
    model = d / "model"
    tok = AutoTokenizer.from_pretrained(str(ROOT / "hybrid/data/tokenizer"))
    cfg = HybridConfig(vocab_size=len(tok), d_model=32, mlp={"kind": "swiglu", "hidden": 64},
                       layers=[{"kind": "carve", "heads": 2, "head_dim": 16, "chunk_size": 16, "gate_rank": 8,
                                "content_rank": 4}, {"kind": "attention", "heads": 2, "head_dim": 16}],
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       max_position_embeddings=512)
    HybridForCausalLM(cfg).save_pretrained(str(model))
    tok.save_pretrained(str(model))
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"The magic number for key-{i} is {1000 + i}. key-{i} is",
                                        "answer": f" {1000 + i}"}) + "\n" for i in range(3)))
    tasks = d / "tasks"
    tasks.mkdir()
    (tasks / "gen.yaml").write_text(TASK.format(kind="generate_until", data=data, extra=(
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match")))
    (tasks / "ll.yaml").write_text(TASK.format(kind="loglikelihood", data=data, extra=(
        "metric_list:\n  - metric: perplexity\n  - metric: acc")))
    return model, tasks


def test_hflm_wrapper_runs_generation_and_loglikelihood(setup):
    import lm_eval

    from hybrid.eval.lm_eval_main import hybrid_lm

    model, tasks = setup
    from lm_eval.tasks import TaskManager

    lm = hybrid_lm(str(model), batch_size=2, device="cpu", dtype="float32")
    res = lm_eval.simple_evaluate(model=lm, tasks=["hybrid_local_generate_until", "hybrid_local_loglikelihood"],
                                  task_manager=TaskManager(include_path=str(tasks)))
    r = res["results"]
    assert 0.0 <= r["hybrid_local_generate_until"]["exact_match,none"] <= 1.0
    ppl = r["hybrid_local_loglikelihood"]["perplexity,none"]
    assert ppl > 1.0 and ppl == ppl  # a real, finite per-token perplexity from the model's logits


def test_cli_entry_point(setup, tmp_path):
    model, tasks = setup
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "hybrid.eval.lm_eval_main", "--model", "hf", "--model_args",
                          f"pretrained={model},dtype=float32", "--tasks", "hybrid_local_generate_until",
                          "--include_path", str(tasks), "--device", "cpu", "--limit", "2"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "hybrid_local_generate_until" in out.stdout and "exact_match" in out.stdout
