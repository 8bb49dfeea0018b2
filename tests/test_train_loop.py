"""The training loop on CPU with a very small real model: learning, exact resume, atomic saves,
Ctrl-C, NaN stops, the output folder, and clear errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybrid.recipes import recipe_from_dict
from hybrid.train import run_training
from hybrid.train.checkpoint import CheckpointError, find_latest, load_checkpoint
from hybrid.train.loop import TrainingDiverged

ROOT = Path(__file__).resolve().parent.parent


DDP_RECIPE = """name: ddp-test
model: {d_model: 32, n_layers: 2, vocab_size: 4096, mlp: {kind: swiglu, hidden: 64}}
blocks:
  C: {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
  A: {kind: attention, heads: 2, head_dim: 16}
layout: {pattern: CA}
train: {steps: 5, batch_size: BATCH, seq_len: 64, lr: 3.0e-3, warmup_steps: 2, eval_every: 0, eval_batches: 1,
        save_every: 0, log_every: 1, dtype: fp32}
"""


def small_recipe(**train):
    t = {"steps": 6, "batch_size": 2, "seq_len": 64, "lr": 3e-3, "warmup_steps": 2, "eval_every": 3,
         "eval_batches": 1, "save_every": 0, "log_every": 1, "dtype": "fp32"}
    t.update(train)
    return recipe_from_dict({
        "name": "test-small",
        "model": {"d_model": 32, "n_layers": 2, "vocab_size": 4096, "mlp": {"kind": "swiglu", "hidden": 64}},
        "blocks": {"C": {"kind": "carve", "heads": 2, "head_dim": 16, "chunk_size": 16, "gate_rank": 8,
                         "content_rank": 4},
                   "A": {"kind": "attention", "heads": 2, "head_dim": 16}},
        "layout": {"pattern": "CA"},
        "train": t,
    })


def losses(out: Path) -> list[float]:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["kind"] == "train"]


def test_text_training_learns_and_writes_outputs(tmp_path):
    res = run_training(small_recipe(steps=25, eval_every=0, eval_batches=2, lr=1e-2, warmup_steps=3),
                       tmp_path / "run", progress=False)
    ls = losses(tmp_path / "run")
    assert len(ls) == 25 and all(map(lambda v: v == v, ls))
    assert sum(ls[-5:]) / 5 < ls[0] - 1.5  # from ~ln(4096)=8.3 down towards the unigram entropy
    assert res.eval_loss is not None and res.eval_loss < ls[0] - 1.0
    assert res.flops_source == "analytic" and res.flops_per_token > 0
    out = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "loss_curve.png",
                 "summary.json", "train_config.json", "recipe.json"):
        assert (out / name).exists(), name
    from hybrid.blocks import HybridForCausalLM

    model = HybridForCausalLM.from_pretrained(str(out))
    ids = torch.randint(0, 4096, (1, 16))
    with torch.no_grad():
        assert model(ids).logits.shape == (1, 16, 4096)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 25 and summary["baselines"]["unigram_entropy_nats"] > 5


def test_resume_matches_uninterrupted_run(tmp_path):
    recipe = small_recipe(steps=6, save_every=2, grad_accum=2)
    run_training(recipe, tmp_path / "full", progress=False)
    full = losses(tmp_path / "full")

    part = run_training(recipe, tmp_path / "part", progress=False, _stop_after=3)
    assert part.interrupted and part.steps == 3
    assert find_latest(tmp_path / "part" / "checkpoints").name == "step_000003"
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(recipe, tmp_path / "part", progress=False)
    res = run_training(recipe, tmp_path / "part", progress=False, resume=True)
    assert res.steps == 6
    resumed = losses(tmp_path / "part")
    assert len(resumed) == len(full) == 6
    assert resumed == pytest.approx(full, abs=1e-6, rel=0)
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_000006" / "optimizer.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoints" / "step_000006" / "optimizer.pt", weights_only=False)
    for k in a["state"]:
        assert torch.allclose(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"], atol=1e-7)


def test_crash_while_saving_keeps_last_good_checkpoint(tmp_path):
    recipe = small_recipe(steps=4, save_every=2, eval_every=0)
    calls = {"n": 0}

    def crash_on_second_save(tmp_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash in the middle of writing a checkpoint")

    with pytest.raises(CheckpointError, match="simulated crash.*step_000002 is intact"):
        run_training(recipe, tmp_path / "run", progress=False, _save_hook=crash_on_second_save)
    root = tmp_path / "run" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000002"
    assert (root / ".tmp-step_000004").exists()  # the half-written one, never renamed into place
    assert not (root / "step_000004").exists()
    good = find_latest(root)
    assert good.name == "step_000002"
    from hybrid.blocks import HybridConfig, HybridForCausalLM

    model = HybridForCausalLM(HybridConfig(**recipe.model_config_kwargs()))
    state = load_checkpoint(good, model=model)
    assert state["step"] == 2
    res = run_training(recipe, tmp_path / "run", progress=False, resume=True)  # and training goes on from it
    assert res.steps == 4 and not (root / ".tmp-step_000004").exists()


def test_ctrl_c_saves_and_exits(tmp_path, monkeypatch):
    from hybrid.train import text_source

    orig = text_source.TextSource.batch

    def batch(self, step, micro):
        if step == 2 and micro == 0:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered during step 3
        return orig(self, step, micro)

    monkeypatch.setattr(text_source.TextSource, "batch", batch)
    res = run_training(small_recipe(steps=6, eval_every=0), tmp_path / "run", progress=False)
    assert res.interrupted and res.steps == 3
    assert find_latest(tmp_path / "run" / "checkpoints").name == "step_000003"


def test_nan_loss_stops_with_message(tmp_path, monkeypatch):
    from hybrid.train import loop

    orig = loop._forward
    calls = {"n": 0}

    def forward(model, batch, **kw):
        loss, logits = orig(model, batch, **kw)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 4 and model.training else loss), logits

    monkeypatch.setattr(loop, "_forward", forward)
    with pytest.raises(TrainingDiverged, match=r"loss became nan .* step 5; the newest checkpoint is .*step_000004 \(weights finite when saved\)"):
        run_training(small_recipe(steps=8, save_every=4, eval_every=0), tmp_path / "run", progress=False)
    assert find_latest(tmp_path / "run" / "checkpoints").name == "step_000004"


def test_assoc_recall_runs(tmp_path):
    r = small_recipe(steps=3, eval_every=0, data={"kind": "assoc_recall", "num_kv_pairs": 4, "vocab_size": 256})
    res = run_training(r, tmp_path / "run", progress=False)
    assert res.steps == 3 and res.final_loss > 0
    assert res.baselines["chance_value_nats"] == pytest.approx(torch.log(torch.tensor(128.0)).item())
    assert not (tmp_path / "run" / "tokenizer.json").exists()


def test_cli_clear_errors(tmp_path, capsys):
    from hybrid.cli import main

    recipe = str(ROOT / "recipes" / "tiny-cpu.yaml")
    cases = [
        (["train.data.files=/nonexistent/corpus.txt"], "'/nonexistent/corpus.txt' does not exist"),
        ([f"train.data.files={tmp_path / 'empty.txt'}"], "is empty"),
        (["train.stpes=3"], "did you mean 'steps'"),
        (["--resume"], "no checkpoint"),
        (["notanoverride"], "not KEY=VALUE"),
    ]
    (tmp_path / "empty.txt").write_text("")
    for i, (extra, msg) in enumerate(cases):
        rc = main(["train", recipe, "--out", str(tmp_path / f"o{i}"), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (extra, err)


@pytest.mark.slow
def test_cli_subprocess_end_to_end(tmp_path):
    """The real command line, options after overrides, a short run, then --resume to more steps."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(DDP_RECIPE.replace("BATCH", "2"))
    cmd = [sys.executable, "-m", "hybrid", "train", str(recipe), "train.lr=1e-3", "--out", str(tmp_path / "o"),
           "--no-progress", "--steps", "2"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "done: 2 steps" in p.stdout and "unigram entropy" in p.stdout
    from hybrid.cli import main

    assert main(["train", *cmd[4:-1], "3", "--resume"]) == 0  # in-process: the resume path of the CLI
    assert len(losses(tmp_path / "o")) == 3




@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process(tmp_path):
    """torchrun --nproc-per-node 2 (gloo) with batch 2 per rank sees the same rows as one process with
    batch 4, and the token-weighted gradient makes the loss curves agree."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name, batch in (("ddp", 2), ("single", 4)):
        (tmp_path / f"{name}.yaml").write_text(DDP_RECIPE.replace("BATCH", str(batch)))
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    p = subprocess.run([*torchrun, "-m", "hybrid", "train", str(tmp_path / "ddp.yaml"), "--out",
                        str(tmp_path / "ddp"), "--no-progress", "--device", "cpu"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count("done: 5 steps") == 1  # rank 0 only
    ckpt = tmp_path / "ddp" / "checkpoints" / "step_000005"
    assert (ckpt / "rng_rank0.pt").exists() and (ckpt / "rng_rank1.pt").exists()
    res = run_training(str(tmp_path / "single.yaml"), tmp_path / "single", progress=False, device="cpu")
    assert res.steps == 5
    ddp, single = losses(tmp_path / "ddp"), losses(tmp_path / "single")
    assert len(set(ddp)) == 5  # the loss moves, so agreement below is not trivial
    assert ddp == pytest.approx(single, abs=1e-4, rel=0)
    from hybrid.blocks import HybridForCausalLM

    a = HybridForCausalLM.from_pretrained(str(tmp_path / "ddp")).state_dict()
    b = HybridForCausalLM.from_pretrained(str(tmp_path / "single")).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_ruler_mix_trains_with_prefetch_workers(tmp_path):
    pytest.importorskip("hybrid.tasks")
    r = small_recipe(steps=2, seq_len=320, batch_size=1, eval_every=0, data_workers=1,
                     data={"kind": "ruler_mix", "tasks": ["niah_single_1"]})
    res = run_training(r, tmp_path / "run", progress=False)
    assert res.steps == 2 and res.eval_loss is not None and math.isfinite(res.final_loss)
    assert (tmp_path / "run" / "tokenizer.json").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["eval_answer_acc"] <= 1.0  # the held-out retrieval signal of ruler_mix
