"""Fault injection: every fault a user can cause ends in one line ``error: ...`` with exit code 2, and
nothing already written (metrics, checkpoints) is lost. A tiny recipe trained for a few steps on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybrid.cli import main as cli
from hybrid.train.checkpoint import CheckpointError, list_checkpoints, load_verified

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """name: faults
model: {d_model: 32, n_layers: 2, vocab_size: 4096, mlp: {kind: swiglu, hidden: 64}}
blocks:
  C: {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
  A: {kind: attention, heads: 2, head_dim: 16}
layout: {pattern: CA}
train: {steps: 6, batch_size: 2, seq_len: 64, lr: 3.0e-3, warmup_steps: 2, eval_every: 0, eval_batches: 1,
        save_every: 2, log_every: 1, dtype: fp32}
"""


def write_recipe(d: Path, text: str = RECIPE, name: str = "faults.yaml") -> Path:
    p = d / name
    p.write_text(text)
    return p


def run_cli(args, capsys) -> tuple[int, str, str]:
    rc = cli([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def train_records(out: Path, kind: str = "train") -> list[dict]:
    return [r for r in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: checkpoints at steps 4 and 6 kept (keep_checkpoints 2), final model."""
    d = tmp_path_factory.mktemp("reference")
    rc = cli(["train", str(write_recipe(d)), "--out", str(d / "run"), "--no-progress"])
    assert rc == 0
    return d / "run"


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nan_into_weights(path: Path) -> None:
    """Overwrite the first float32 values of the first tensor of a safetensors file with NaN bytes."""
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    start = 8 + header
    data[start:start + 16] = b"\x00\x00\xc0\x7f" * 4
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------------
# fast start and argument errors


def test_help_version_and_recipe_errors_start_without_torch(tmp_path):
    bad = write_recipe(tmp_path, "name: x\x00\n", "nul.yaml")
    code = f"""
import sys, time, json, io, contextlib
t = time.perf_counter()
from hybrid.cli import main
rcs = []
for argv in (["--version"], ["--help"], ["train", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            rcs.append(e.code)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rcs.append(main(["build", {str(bad)!r}]))
    rcs.append(main(["train", {str(bad)!r}, "--device", "foo"]))
    rcs.append(main(["ruler", "no-such-run", "--samples", "0"]))
print(json.dumps({{"rcs": rcs, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                  "seconds": time.perf_counter() - t, "err": err.getvalue()}}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["rcs"] == [0, 0, 0, 2, 2, 2]
    assert not got["torch"] and not got["transformers"]
    assert got["seconds"] < 10  # about 0.1 s unloaded; torch alone takes several seconds to import
    assert "nul.yaml:1: character U+0000 is not allowed in YAML" in got["err"]
    assert "error: --device foo: not a device; use auto, cpu, cuda or cuda:N" in got["err"]
    assert "error: --samples 0: must be >= 1" in got["err"]


@pytest.mark.parametrize("content,line,message", [
    (b"name: caf\xe9\n", 1, "not UTF-8 text (byte 0xe9); save the recipe as UTF-8"),
    (b"name: x\nmodel:\n  d_model: 32\x00\n", 3, "character U+0000 is not allowed in YAML"),
    (b"name: x\nmodel\n  d_model: 32\nblocks: {}\n", 2, "not valid YAML: while scanning a simple key could not "
                                                        "find expected ':' (noticed on line 3)"),
])
def test_recipe_encoding_and_syntax_errors(tmp_path, capsys, content, line, message):
    p = tmp_path / "r.yaml"
    p.write_bytes(content)
    rc, _, err = run_cli(["train", p], capsys)
    assert rc == 2
    assert err.startswith(f"error: {p}:{line}: {message}") and "Traceback" not in err


def test_chunk_size_the_kernels_cannot_run_is_a_recipe_error(tmp_path, capsys):
    p = write_recipe(tmp_path, RECIPE.replace("chunk_size: 16", "chunk_size: 48"))
    rc, _, err = run_cli(["build", p, "--print-layout"], capsys)
    assert rc == 2
    assert err == (f"error: {p}:4 blocks.C.chunk_size: must be one of 16, 32, 64 (the chunk sizes the GPU kernels "
                   "run), got 48\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys, reference):
    rc, _, err = run_cli(["train", write_recipe(tmp_path), "--out", tmp_path / "run", "--device", "cuda"], capsys)
    assert rc == 2 and err.startswith("error: --device cuda: ") and err.endswith("; use --device cpu (or auto)\n")
    assert not (tmp_path / "run").exists()
    rc, _, err = run_cli(["ruler", reference, "--device", "cuda", "--tasks", "niah_single_1", "--lengths", "128",
                          "--samples", "1", "--no-progress"], capsys)
    assert rc == 2 and err.startswith("error: --device cuda: ") and "Traceback" not in err


def test_unusable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = run_cli(["train", write_recipe(tmp_path), "--out", blocker / "run"], capsys)
    assert rc == 2
    assert err == f"error: {blocker / 'run'}: file exists; check the path and the disk\n" or \
        err == f"error: {blocker / 'run'}: not a directory; check the path and the disk\n"


def test_ruler_rejects_zero_counts(reference, capsys):
    for flag in ("--samples", "--batch-size"):
        rc, _, err = run_cli(["ruler", reference, flag, "0"], capsys)
        assert rc == 2 and f"error: {flag} 0: must be >= 1" in err


# --------------------------------------------------------------------------------------------------
# checkpoints: integrity, fallback, kill and resume


def test_reference_run_keeps_two_checksummed_checkpoints(reference):
    names = [p.name for p in list_checkpoints(reference / "checkpoints")]
    assert names == ["step_000006", "step_000004"]
    meta = json.loads((reference / "checkpoints" / "step_000006" / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "optimizer.pt", "trainer.pt", "rng_rank0.pt", "config.json"}


def _tiny_model(run: Path):
    from hybrid.blocks import HybridConfig, HybridForCausalLM

    return HybridForCausalLM(HybridConfig.from_pretrained(str(run)))


@pytest.mark.parametrize("damage,why", [
    (lambda d: truncate(d / "model.safetensors"), "model.safetensors does not match its sha256 (truncated or "
                                                  "overwritten)"),
    (lambda d: truncate(d / "optimizer.pt"), "optimizer.pt does not match its sha256 (truncated or overwritten)"),
    (lambda d: truncate(d / "trainer.pt"), "trainer.pt does not match its sha256 (truncated or overwritten)"),
    (lambda d: (d / "rng_rank0.pt").unlink(), "rng_rank0.pt is missing"),
])
def test_damaged_newest_checkpoint_falls_back(reference, tmp_path, damage, why):
    run = copy_run(reference, tmp_path / "run")
    newest = run / "checkpoints" / "step_000006"
    damage(newest)
    said = []
    path, state = load_verified(run / "checkpoints", model=_tiny_model(run), log=said.append)
    assert path.name == "step_000004" and state["step"] == 4
    assert said == [f"warning: {newest}: {why}; trying the previous checkpoint"]


def test_nan_weights_with_a_matching_checksum_are_refused(reference, tmp_path):
    """NaN written into the weights and the checksum updated: the finiteness check still refuses it."""
    from hybrid.train.checkpoint import sha256_of

    run = copy_run(reference, tmp_path / "run")
    newest = run / "checkpoints" / "step_000006"
    nan_into_weights(newest / "model.safetensors")
    meta = json.loads((newest / "meta.json").read_text())
    meta["sha256"]["model.safetensors"] = sha256_of(newest / "model.safetensors")
    (newest / "meta.json").write_text(json.dumps(meta))
    said = []
    path, _ = load_verified(run / "checkpoints", model=_tiny_model(run), log=said.append)
    assert path.name == "step_000004"
    assert len(said) == 1 and "holds NaN or Inf" in said[0]


def test_every_checkpoint_damaged_is_an_error(reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    for ck in list_checkpoints(run / "checkpoints"):
        truncate(ck / "model.safetensors")
    before = (run / "metrics.jsonl").read_text()
    rc, out, err = run_cli(["train", write_recipe(tmp_path), "--out", run, "--resume", "--no-progress"], capsys)
    assert rc == 2
    assert err.startswith(f"error: {run / 'checkpoints'}: every checkpoint is damaged (newest: ")
    assert err.endswith("start a new run without --resume in another --out\n")
    assert out.count("; trying the previous checkpoint") == 2
    assert (run / "metrics.jsonl").read_text() == before  # nothing rewritten
    with pytest.raises(CheckpointError):
        load_verified(run / "checkpoints", model=_tiny_model(run))


def test_kill_and_resume_with_a_corrupted_newest_checkpoint_matches_the_uninterrupted_run(reference, tmp_path,
                                                                                          capsys):
    from hybrid.train import run_training

    recipe = write_recipe(tmp_path)
    part = run_training(str(recipe), tmp_path / "part", progress=False, _stop_after=4)
    assert part.interrupted and part.steps == 4
    truncate(tmp_path / "part" / "checkpoints" / "step_000004" / "model.safetensors")
    capsys.readouterr()
    rc, out, err = run_cli(["train", recipe, "--out", tmp_path / "part", "--resume", "--no-progress"], capsys)
    assert rc == 0, err
    assert (f"warning: {tmp_path / 'part' / 'checkpoints' / 'step_000004'}: model.safetensors does not match "
            "its sha256 (truncated or overwritten); trying the previous checkpoint") in out
    assert f"resuming from step 2 ({tmp_path / 'part' / 'checkpoints' / 'step_000002'})" in out
    got, want = train_records(tmp_path / "part"), train_records(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-6, rel=0)
    from safetensors.torch import load_file

    a = load_file(reference / "model.safetensors")
    b = load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_checkpoint_folder_unwritable_mid_run_keeps_what_was_written(tmp_path):
    from hybrid.train import run_training

    calls = {"n": 0}

    def unwritable_on_second_save(tmp_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise PermissionError(13, "Permission denied", str(tmp_dir / "optimizer.pt"))

    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as e:
        run_training(str(write_recipe(tmp_path)), out, progress=False, _save_hook=unwritable_on_second_save)
    step2 = out / "checkpoints" / "step_000002"
    assert str(e.value) == (f"cannot write checkpoint step 4 in {out / 'checkpoints'}: "
                            f"{out / 'checkpoints' / '.tmp-step_000004' / 'optimizer.pt'}: Permission denied; "
                            f"{step2} is intact; fix the folder (space, permissions), then --resume")
    assert [r["step"] for r in train_records(out)] == [1, 2, 3, 4]
    path, state = load_verified(out / "checkpoints", model=_tiny_model_from_recipe(tmp_path))
    assert path == step2 and state["step"] == 2


def _tiny_model_from_recipe(d: Path):
    from hybrid.blocks import HybridConfig, HybridForCausalLM
    from hybrid.recipes import load_recipe

    return HybridForCausalLM(HybridConfig(**load_recipe(str(d / "faults.yaml")).model_config_kwargs()))


# --------------------------------------------------------------------------------------------------
# resume rules and the output-folder lock


def test_resume_refuses_changed_settings_unless_allowed(reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    recipe = write_recipe(tmp_path)
    config_before = (run / "train_config.json").read_text()
    rc, _, err = run_cli(["train", recipe, "--out", run, "--resume", "train.lr=1e-3", "train.seed=3"], capsys)
    assert rc == 2
    assert err == ("error: --resume: the train settings differ from step_000006's: lr: 0.003 -> 0.001; seed: 0 -> 3; "
                   "restore them, or pass --allow-changes to continue with the new values\n")
    assert (run / "train_config.json").read_text() == config_before
    rc, out, err = run_cli(["train", recipe, "--out", run, "--resume", "--allow-changes", "train.lr=1e-3",
                            "--steps", "7", "--no-progress"], capsys)
    assert rc == 0, err
    assert (f"resuming from step 6 ({run / 'checkpoints' / 'step_000006'}); changed: lr: 0.003 -> 0.001; "
            "steps: 6 -> 7" in out)
    resume = train_records(run, "resume")[-1]
    assert resume["step"] == 6 and resume["changes"] == ["lr: 0.003 -> 0.001", "steps: 6 -> 7"]
    from hybrid.train.schedule import lr_factor

    step7 = train_records(run)[-1]
    assert step7["step"] == 7  # the new peak lr is the one used, on the schedule of the new total
    assert step7["lr"] == pytest.approx(1e-3 * lr_factor(6, steps=7, warmup_steps=2, min_lr_ratio=0.1), rel=1e-12)


def test_resume_accepts_more_steps_and_says_so(reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    rc, out, err = run_cli(["train", write_recipe(tmp_path), "--out", run, "--resume", "--steps", "7",
                            "train.heartbeat_every=1", "--no-progress"], capsys)
    assert rc == 0, err
    assert f"resuming from step 6 ({run / 'checkpoints' / 'step_000006'}); changed: heartbeat_every: 100 -> 1; steps: 6 -> 7" in out
    assert [r["step"] for r in train_records(run)] == [1, 2, 3, 4, 5, 6, 7]
    beats = [x for x in err.splitlines() if x.startswith("step ")]
    assert len(beats) == 1 and beats[0].startswith("step 7/7 (100%)  loss ") and " tok/s  ETA " in beats[0]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_000007", "step_000006"]


def test_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from hybrid.train.runlock import RunLock

    out = tmp_path / "run"
    with RunLock(out):
        rc, _, err = run_cli(["train", write_recipe(tmp_path), "--out", out], capsys)
    assert rc == 2
    assert err == (f"error: {out}: another hybrid train (process {os.getpid()} on {os.uname().nodename}) is "
                   "writing this folder; wait for it to finish or choose another --out\n")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else was written


def test_stale_lock_is_taken_over_and_heartbeat_without_bar(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}) + "\n")
    recipe = write_recipe(tmp_path, RECIPE.replace("steps: 6", "steps: 3").replace("save_every: 2", "save_every: 0"))
    rc, out_text, err = run_cli(["train", recipe, "--out", out, "train.heartbeat_every=2", "--no-progress"], capsys)
    assert rc == 0, err
    assert f"note: {out} was locked by process {dead.pid} on {os.uname().nodename}, which is gone" in out_text
    beats = [x.split("  ")[0] for x in err.splitlines() if x.startswith("step ")]
    assert beats == ["step 1/3 (33%)", "step 2/3 (67%)", "step 3/3 (100%)"]
    assert (out / ".lock").read_text() == ""  # released


# --------------------------------------------------------------------------------------------------
# data warnings


def test_non_utf8_text_and_empty_held_out_set_are_reported(tmp_path, capsys):
    words = " ".join(f"word{i} and more text here." for i in range(120))
    data = tmp_path / "data.txt"
    data.write_bytes(words.encode() + b" caf\xe9 " + words.encode())
    text = RECIPE.replace("steps: 6", "steps: 2").replace("save_every: 2", "save_every: 0") \
        .replace("dtype: fp32}", "dtype: fp32, data: {kind: text, files: [" + str(data) + "]}}")
    rc, _, err = run_cli(["train", write_recipe(tmp_path, text), "--out", tmp_path / "run", "--no-progress"], capsys)
    assert rc == 0, err
    assert (f"warning: {data}: not UTF-8 text (byte 0xe9 on line 1); 1 undecodable byte sequences were "
            "replaced with U+FFFD; convert the file to UTF-8") in err
    assert "warning: no held-out rows: the held-out text has" in err and "every held-out loss will be null" in err


# --------------------------------------------------------------------------------------------------
# a checkpoint folder can be evaluated and exported


def test_export_and_ruler_accept_a_checkpoint_folder(reference, tmp_path, capsys):
    from safetensors.torch import load_model

    from hybrid.blocks import HybridForCausalLM

    step4 = reference / "checkpoints" / "step_000004"
    rc, out, err = run_cli(["export", step4, "--out", tmp_path / "exp"], capsys)
    assert rc == 0, err
    assert out == f"exported {step4} (checkpoint) to {tmp_path / 'exp'} (HybridForCausalLM.from_pretrained)\n"
    exported = HybridForCausalLM.from_pretrained(str(tmp_path / "exp")).eval()
    direct = _tiny_model(reference).eval()
    load_model(direct, str(step4 / "model.safetensors"))
    ids = torch.randint(0, 4096, (1, 20))
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, direct(ids).logits)
    assert (tmp_path / "exp" / "tokenizer.json").is_file() and (tmp_path / "exp" / "recipe.json").is_file()

    rc, out, err = run_cli(["ruler", step4, "--tasks", "niah_single_1", "--lengths", "512", "--samples", "1",
                            "--batch-size", "1", "--out", tmp_path / "ruler", "--no-progress"], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "ruler" / "results.json").read_text())
    assert list(res["scores"]) == ["niah_single_1"]


def test_a_run_stopped_early_can_be_evaluated(reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    for name in ("config.json", "model.safetensors"):
        (run / name).unlink()
    rc, out, err = run_cli(["export", run, "--out", tmp_path / "exp"], capsys)
    assert rc == 0, err
    assert f"note: {run} has no final model (the run stopped early); using its newest checkpoint step_000006" in err


# --------------------------------------------------------------------------------------------------
# the one error path


def test_expected_failures_and_bugs_are_told_apart():
    from hybrid.cli import expected_failure
    from hybrid.recipes import RecipeError

    assert expected_failure(RecipeError(None, "train.lr", "must be > 0")) == "train.lr: must be > 0"
    assert expected_failure(PermissionError(13, "Permission denied", "/x/y")) == \
        "/x/y: permission denied; fix the permissions or choose another folder"
    assert expected_failure(OSError(28, "No space left on device", "/x")) == \
        "/x: no space left on device; free some space or choose another folder"
    assert expected_failure(FileExistsError("runs/x already holds a checkpoint")) == "runs/x already holds a checkpoint"
    assert expected_failure(CheckpointError("bad")) == "bad"
    for bug in (ValueError("bad"), TypeError("x"), KeyError("k"), AssertionError()):
        assert expected_failure(bug) is None


@pytest.mark.gpu
def test_gpu_resume_falls_back_from_a_corrupted_checkpoint(tmp_path, capsys):
    from hybrid.train import run_training

    recipe = write_recipe(tmp_path)
    part = run_training(str(recipe), tmp_path / "run", device="cuda", progress=False, _stop_after=4)
    assert part.interrupted and part.steps == 4
    truncate(tmp_path / "run" / "checkpoints" / "step_000004" / "optimizer.pt")
    rc, out, err = run_cli(["train", recipe, "--out", tmp_path / "run", "--resume", "--device", "cuda",
                            "--no-progress"], capsys)
    assert rc == 0, err
    assert "optimizer.pt does not match its sha256" in out and "resuming from step 2" in out
    assert [r["step"] for r in train_records(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    n = torch.cuda.device_count()
    rc, _, err = run_cli(["train", recipe, "--out", tmp_path / "other", "--device", f"cuda:{n}"], capsys)
    assert rc == 2 and err == (f"error: --device cuda:{n}: this machine has {n} CUDA device(s); use cuda:0 .. "
                               f"cuda:{n - 1}\n")
