"""benchmarks/ruler_eval.py: the row comparison, argument errors, and a tiny evaluation through both
decode paths (CPU; on the GPU the static path must be the captured graph)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MICRO = """name: micro
model: {d_model: 32, n_layers: 2, vocab_size: 4096, mlp: {kind: swiglu, hidden: 64},
        max_position_embeddings: 2048}
blocks:
  C: {kind: carve, heads: 2, head_dim: 16, chunk_size: 16, gate_rank: 8, content_rank: 4}
  A: {kind: attention, heads: 2, head_dim: 16}
layout: {pattern: CA}
train: {seq_len: 256, batch_size: 2, steps: 1}
"""


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ruler_eval", ROOT / "benchmarks" / "ruler_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_counts_rows_that_differ():
    compare = _bench().compare
    same = compare([[1, 2, 3], [4]], [[1, 2, 3], [4]])
    assert same["mismatched_rows"] == 0 and same["tokens_before_first_difference"] == same["tokens"] == 4
    diff = compare([[1, 2, 3], [4, 5], [6]], [[1, 9, 3], [4], [6]], ["vt#0", "vt#1", "vt#2"])
    assert diff["mismatched_rows"] == 2 and diff["tokens"] == 3 + 2 + 1
    assert diff["tokens_before_first_difference"] == 1 + 1 + 1
    assert diff["mismatches"] == [{"row": "vt#0", "first_difference": 1, "tokens": [3, 3]},
                                  {"row": "vt#1", "first_difference": 1, "tokens": [2, 1]}]
    with pytest.raises(ValueError):
        compare([[1]], [])


@pytest.mark.parametrize("argv", [["--samples", "0"], ["--tasks", "no_such_task"], ["--warmup-samples", "-1"],
                                  ["--dtype", "fp8"], [str(ROOT / "tests"), "--pattern", "CA"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as e:
        _bench().main(argv + ["--device", "cpu"])
    assert e.value.code != 0


def _micro_run(tmp_path, *extra):
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(MICRO)
    out = tmp_path / "ruler-eval.json"
    assert _bench().main([str(recipe), "--tasks", "vt", "--samples", "2", "--length", "512", "--batch-size", "2",
                          "--warmup-samples", "0", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_tiny_evaluation_through_both_paths_on_cpu(tmp_path):
    res = _micro_run(tmp_path, "--device", "cpu")
    static, dynamic = res["paths"]["static"], res["paths"]["dynamic"]
    assert res["model"]["layout"] == "CA" and res["model"]["weights"].startswith("random init")
    # on a CPU generate keeps the dynamic cache: one generate call (2 samples, batch 2) per path
    assert static["decode_caches"] == dynamic["decode_caches"] == {"HybridCache": 1}
    assert static["generated_tokens"] == dynamic["generated_tokens"] > 0
    assert static["seconds"] >= static["generation_seconds"] > 0 and dynamic["ms_per_generated_token"] > 0
    assert 0 < res["samples_seconds"] < static["seconds"]
    assert res["generations"]["rows"] == 2 and res["generations"]["mismatched_rows"] == 0
    assert static["scores"] == dynamic["scores"]
    assert "| generate given a dynamic HybridCache" in res["markdown"] and "0 of 2 rows differ" in res["markdown"]


def test_profile_on_cpu_reports_its_batches_without_phases(tmp_path):
    # on a CPU the static path is generate (no greedy_decode phases, no CUDA kernels); the profile still runs
    res = _micro_run(tmp_path, "--device", "cpu", "--profile")
    assert res["profile"]["batches"] == 1 and res["profile"]["seconds"] > 0
    assert res["profile"]["phases"] == {} and res["profile"]["kernels"] == []


@pytest.mark.gpu
def test_tiny_evaluation_decodes_through_the_graph_on_cuda(tmp_path):
    res = _micro_run(tmp_path, "--device", "cuda", "--dtype", "fp32", "--profile")
    assert res["paths"]["static"]["decode_caches"] == {"StaticHybridCache + CUDA graph, greedy loop": 1}
    assert res["paths"]["dynamic"]["decode_caches"] == {"HybridCache": 1}
    assert res["generations"]["mismatched_rows"] == 0
    phases = res["profile"]["phases"]  # the static path's three phases, each with CUDA work
    assert set(phases) == {"greedy_decode.prefill", "greedy_decode.answer_check", "greedy_decode.steps"}
    assert all(p["calls"] == 1 and p["host_s"] > 0 and p["cuda_ms"] > 0 for p in phases.values())
    assert res["profile"]["kernels"] and all(k["cuda_ms"] > 0 for k in res["profile"]["kernels"])
