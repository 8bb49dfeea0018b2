"""benchmarks/models.py on a CPU: the five default layouts of an 8-layer recipe, and the note that
says how to get the calibrated predictions when the device has no calibration."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MICRO8 = """name: micro8
model: {d_model: 32, n_layers: 8, vocab_size: 256, mlp: {kind: swiglu, hidden: 64}, max_position_embeddings: 256}
blocks:
  C: {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
  A: {kind: attention, heads: 2, head_dim: 16}
layout: {ratio: "3:1", placement: spread}
train: {seq_len: 64, batch_size: 2, steps: 1}
"""


def _bench():
    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_default_layouts_are_transformer_7to1_3to1_1to1_and_all_carve():
    bench = _bench()
    assert [(label, f) for label, f in bench.parse_layouts(",".join(bench.LAYOUTS))] == [
        ("transformer", 1), ("7:1", Fraction(1, 8)), ("3:1", Fraction(1, 4)), ("1:1", Fraction(1, 2)), ("carve", 0)]
    assert [bench.parse_shapes(bench.DEFAULT_SHAPES)[i][1] for i in range(3)] == [4096, 16384, 32768]


def test_prediction_error_is_shown_for_long_steps_too():
    bench = _bench()
    assert bench._err(0.11, 0.1) == "110 ms (+10%)"
    assert bench._err(12.0, 15.0) == "12.00 s (-20%)"
    assert bench._err(None, 1.0) == "-"


def test_five_layouts_without_a_calibration(tmp_path, capsys):
    recipe = tmp_path / "micro8.yaml"
    recipe.write_text(MICRO8)
    out = tmp_path / "models.json"
    assert _bench().main([str(recipe), "--shapes", "1x32", "--device", "cpu", "--warmup", "1", "--steps", "1",
                          "--cache-dir", str(tmp_path / "empty"), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [(q["layout"], q["pattern"]) for q in res["rows"]] == [
        ("transformer", "AAAAAAAA"), ("7:1", "CCCCCCCA"), ("3:1", "CCCACCCA"), ("1:1", "CACACACA"),
        ("carve", "CCCCCCCC")]
    assert all(q["tokens_per_s"] > 0 and q["flops_per_token"] > 0 and "predicted_step_s" not in q
               for q in res["rows"])
    assert res["rows"][0]["vs_first"] == 1.0
    assert set(res["uncalibrated"]) == {"transformer", "7:1", "3:1", "1:1", "carve"}
    assert "calibrated step (err)" not in table and f"hybrid calibrate {recipe}" in table


@pytest.mark.gpu
def test_five_layouts_on_cuda_report_mfu_and_peak(tmp_path):
    recipe = tmp_path / "micro8.yaml"
    recipe.write_text(MICRO8)
    out = tmp_path / "models.json"
    assert _bench().main([str(recipe), "--shapes", "2x64", "--device", "cuda", "--warmup", "1", "--steps", "2",
                          "--cache-dir", str(tmp_path / "empty"), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and all(q["mfu"] > 0 and q["peak_bytes"] > 0 and q["tokens_per_s"] > 0 for q in rows)
