"""``hybrid sweep`` on a 2-variant micro sweep: report files, an interruption, and --resume."""

import json

import pytest

from hybrid.cli import main as cli
from hybrid.sweep.runner import SweepError, run_sweep

BASE = """name: micro
model: {d_model: 32, n_layers: 2, vocab_size: 4096, mlp: {kind: swiglu, hidden: 64}, max_position_embeddings: 1024}
blocks:
  C: {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
  A: {kind: attention, heads: 2, head_dim: 16}
layout: {ratio: "1:1"}
train:
  seq_len: 320
  batch_size: 2
  steps: 2
  warmup_steps: 1
  eval_every: 0
  eval_batches: 1
  save_every: 1
  data: {kind: ruler_mix, tasks: [niah_single_1]}
eval: {tasks: [niah_single_1], lengths: [1x, 2x], samples: 2, batch_size: 2}
"""
SWEEP = """name: micro-sweep
sweep:
  base: base.yaml
  vary:
    layout.ratio: ["1:0", "1:1"]
  name: "micro-{layout.ratio}"
"""


@pytest.fixture()
def sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path / "sweep.yaml"


def test_interrupted_sweep_resumes(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    seen = []
    first = run_sweep(str(sweep_file), out, progress=False, stop_after=1,
                      on_result=lambda rs: seen.append([r["name"] for r in rs]))
    assert [r["name"] for r in first] == ["micro-1to0"] and seen == [["micro-1to0"]]
    assert set(first[0]["phase_s"]) == {"train", "ruler", "decode_timing"} and first[0]["phase_s"]["train"] > 0
    done = out / "runs" / "micro-1to0" / "seed0" / "result.json"
    stamp = done.stat().st_mtime_ns
    assert not (out / "runs" / "micro-1to1" / "seed0" / "result.json").exists()
    # without --resume an existing sweep folder is refused, nothing is touched
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(str(sweep_file), out, progress=False)
    assert cli(["sweep", str(sweep_file), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert done.stat().st_mtime_ns == stamp  # the finished variant was kept, not retrained
    assert "done earlier, kept" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["micro-1to0", "micro-1to1"]
    v = report["variants"][1]
    assert v["layout"] == "CA" and v["attention_share"] == 0.5 and v["lengths"] == [320, 640]
    assert v["train_tokens_per_s"][0] > 0 and v["decode_ms_per_token"][0] > 0
    assert v["analytic"]["by_length"]["640"]["cache_bytes"] > report["variants"][0]["analytic"]["by_length"]["640"][
        "cache_bytes"]  # a KV cache grows with context, a recurrent state does not
    md = (out / "report.md").read_text()
    assert "| micro-1to1 | `CA` | 0.500 |" in md and "niah_single_1 @640" in md
    assert "## Teacher-forced answer-token accuracy" in md
    assert all(0 <= x <= 100 for x in v["answer_token_acc"]["niah_single_1"]["640"])
    for png in ("score_vs_ratio.png", "frontier.png"):
        assert (out / png).stat().st_size > 1000


def test_sweep_errors(sweep_file, tmp_path, capsys):
    assert cli(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(SWEEP.replace("layout.ratio", "layout.ratoi"))
    assert cli(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "ratoi" in capsys.readouterr().err


def test_training_interrupted_midway_resumes_from_checkpoint(sweep_file, tmp_path):
    from hybrid.train import run_training

    out = tmp_path / "out"

    def stop_early(*a, **kw):
        return run_training(*a, **kw, _stop_after=1)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(str(sweep_file), out, progress=False, train_fn=stop_early)
    model = out / "runs" / "micro-1to0" / "seed0" / "model"
    assert (model / "checkpoints" / "latest").is_file() and not (out / "runs/micro-1to0/seed0/result.json").exists()
    results = run_sweep(str(sweep_file), out, progress=False, resume=True)
    assert [r["name"] for r in results] == ["micro-1to0", "micro-1to1"]
    assert results[0]["train"]["steps"] == 2


def test_resume_refuses_changed_settings(sweep_file, tmp_path):
    out = tmp_path / "out"
    run_sweep(str(sweep_file), out, progress=False, stop_after=0)
    with pytest.raises(SweepError, match="other settings"):
        run_sweep(str(sweep_file), out, progress=False, resume=True, overrides=["train.steps=3"])


def test_time_budget_reports_finished_runs_and_names_the_rest(sweep_file, tmp_path, capsys):
    out = tmp_path / "tb"
    # a budget shorter than the first run: the first run starts (nothing is known yet), the second does not
    assert cli(["sweep", str(sweep_file), "--out", str(out), "--no-progress", "--time-budget", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "1 run(s) not started" in printed and "micro-1to1 seed 0" in printed
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["micro-1to0"]
    assert report["meta"]["not_run (time budget)"] == ["micro-1to1 seed 0"]
    assert "Not run (time budget reached" in (out / "report.md").read_text()
    assert "in_progress" not in report["meta"]  # the final report replaced the one written after run 1
    assert cli(["sweep", str(sweep_file), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert [v["name"] for v in json.loads((out / "report.json").read_text())["variants"]] == [
        "micro-1to0", "micro-1to1"]
    assert cli(["sweep", str(sweep_file), "--out", str(tmp_path / "x"), "--time-budget", "0"]) == 2


def test_seed_list_runs_every_variant_per_seed_and_resumes(sweep_file, tmp_path, capsys):
    """``sweep.seeds: [0, 2]`` trains each variant twice, with training seeds train.seed + 0 and + 2, and the
    same evaluation samples; run folders carry the seed; a resume keeps the finished (variant, seed) runs."""
    text = SWEEP.replace("  vary:\n    layout.ratio: [\"1:0\", \"1:1\"]", "  vary:\n    layout.ratio: [\"1:0\"]")
    sweep_file.write_text(text + "  seeds: [0, 2]\n")
    out = tmp_path / "seeds"
    first = run_sweep(str(sweep_file), out, progress=False, stop_after=1)
    assert [(r["name"], r["seed"]) for r in first] == [("micro-1to0", 0)]
    assert json.loads((out / "sweep.json").read_text())["seeds"] == [0, 2]
    results = run_sweep(str(sweep_file), out, progress=False, resume=True)
    assert [r["seed"] for r in results] == [0, 2] and [r["train_seed"] for r in results] == [0, 2]
    runs = out / "runs" / "micro-1to0"
    assert sorted(p.name for p in runs.iterdir()) == ["seed0", "seed2"]
    preds = [[json.loads(line) for line in (runs / s / "ruler" / "predictions.jsonl").read_text().splitlines()]
             for s in ("seed0", "seed2")]
    assert [p["seed"] for p in preds[0]] == [p["seed"] for p in preds[1]]  # same evaluation samples
    assert json.loads((runs / "seed2" / "model" / "train_config.json").read_text())["seed"] == 2
    # the command line's list wins over the file's; dropping a finished seed on resume is refused
    with pytest.raises(SweepError, match="at least those seeds"):
        run_sweep(str(sweep_file), out, progress=False, resume=True, seeds=[0])
    assert cli(["sweep", str(sweep_file), "--out", str(out), "--resume", "--no-progress", "--seeds", "0,2"]) == 0
    assert "done earlier, kept" in capsys.readouterr().out
    assert cli(["sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--seeds", "0,x"]) == 2
    assert "expected seeds like 0,1,2" in capsys.readouterr().err
    bad = tmp_path / "bad_seeds.yaml"
    bad.write_text(text + "  seeds: [1, 1]\n")
    assert cli(["sweep", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "sweep.seeds" in capsys.readouterr().err


def test_content_gate_ablation_end_to_end(tmp_path):
    """A sweep over the recurrent block at share 1/2: CARVE content on, CARVE with an unquoted `content: off`
    (YAML's boolean false) and GDN-2. The report's ablation table names them from the blocks."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "abl.yaml").write_text("""name: abl
sweep:
  base: base.yaml
  vary:
    blocks.C:
      - {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
      - {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content: off}
      - {kind: gdn2, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8}
  name: "abl-{blocks.C}"
""")
    out = tmp_path / "out"
    assert cli(["sweep", str(tmp_path / "abl.yaml"), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [v["recurrent_mixer"] for v in report["variants"]] == ["carve", "carve-content-off", "gdn2"]
    assert {(a["kind"], a["length"]) for a in report["ablation"]} == {
        (k, n) for k in ("carve-content-off", "gdn2") for n in (320, 640)}
    md = (out / "report.md").read_text()
    assert "## Ablation: the content gate" in md and "| CARVE, content off |" in md and "| GDN-2 |" in md
