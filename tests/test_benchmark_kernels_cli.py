"""The command-line pieces of benchmarks/kernels.py that run without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _kernels_bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_carve_rows_record_the_settings_they_ran_with():
    """Each CARVE variant's settings, as the operator chooses them for its inputs (small CPU tensors here)."""
    pytest.importorskip("triton")
    import torch

    bench = _kernels_bench()
    x = {n: t.cpu() for n, t in bench.make(1, 64, 2, 16, 16, dev="cpu", dt=torch.float32).items()}
    for name in bench.CARVE_VARIANTS:
        st = bench.carve_settings(x, name).as_dict()
        assert st["kernel"] == "chunk" and st["tile_rows"] == 32, (name, st)  # C = 64 as two 32-row tiles
        assert {"precision", "value_split", "sweep_warps", "saved_state"} <= set(st)
    changed = bench.carve_settings(x, "carve_nocontent", bench.parse_settings(["value_split=4", "saved_state=bf16"]))
    assert (changed.value_split, changed.saved_state, changed.tile_rows) == (4, "bf16", 32)
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        bench.parse_settings(["value_splits=2"])


def test_target_lines_report_only_what_was_measured():
    bench = _kernels_bench()
    res = {"carve_content": dict(fwd_ms=3.2, fwdbwd_ms=10.33, peak_mib=3256),
           "carve_nocontent": dict(fwd_ms=2.9, fwdbwd_ms=9.57, peak_mib=3245),
           "fla_chunk_gdn2": dict(fwd_ms=1.9, fwdbwd_ms=11.07, peak_mib=4480),
           "fla_chunk_kda": dict(error="not measured: --time-limit reached")}
    lines = bench.target_lines(res)
    assert lines == ["content on vs chunk_gdn2: 0.933x fwd+bwd",
                     "content overhead: +7.9% fwd+bwd over content off",
                     "peak memory vs chunk_gdn2: 0.73x"]
    assert bench.target_lines({"fla_chunk_gdn2": res["fla_chunk_gdn2"]}) == []
    assert bench.TABLE[:3] == ["carve_content", "carve_nocontent", "carve_gdn2_mode"]


def test_table_lists_each_variant_with_its_own_kernels_then_the_targets():
    bench = _kernels_bench()
    res = {"carve_content": dict(fwd_ms=3.2, fwdbwd_ms=10.33, peak_mib=3256, settings={"kernel": "chunk", "tile_rows": 32},
                                 kernels_ms={"carve_chunk_fwd_kernel": 2.44, "tiny": 0.01}),
           "carve_nocontent": dict(fwd_ms=2.9, fwdbwd_ms=9.57, peak_mib=3245, kernels_ms={"carve_chunk_bwd_kernel": 3.5}),
           "fla_chunk_gdn2": dict(fwd_ms=1.9, fwdbwd_ms=11.07, peak_mib=4480)}
    lines = bench.table_lines(res)
    assert [ln.split()[0] for ln in lines] == ["carve_content", "settings", "2.440", "carve_nocontent", "3.500",
                                               "fla_chunk_gdn2", "->", "->", "->"]
    assert lines[1].split() == ["settings", "kernel=chunk", "tile_rows=32"]
    assert "carve_chunk_fwd_kernel" in lines[2] and "carve_chunk_bwd_kernel" in lines[4]


def test_long_context_table_and_targets():
    """--shapes parsing, the long table's ns per token and ratios, and its targets from what was measured."""
    bench = _kernels_bench()
    assert bench.parse_shapes("1x8x32768, 2x16x4096") == [(1, 8, 32768), (2, 16, 4096)]
    with pytest.raises(SystemExit, match="BxHxT"):
        bench.parse_shapes("1x8")
    assert len(bench.LONG_SHAPES) == 8 and {(b, h) for b, h, _ in bench.LONG_SHAPES} == {(1, 8), (1, 16)}
    row = lambda tokens, f, b: bench.per_token(dict(fwd_ms=f, fwdbwd_ms=b, peak_mib=10.0), tokens)
    res = {"1x16x32768": {"carve_content": row(32768, 4.0, 16.384), "fla_chunk_gdn2": row(32768, 3.0, 12.288),
                          "sdpa_cudnn_gqa": row(32768, 8.0, 32.768), "fla_chunk_kda": dict(error="boom")},
           "1x16x4096": {"carve_content": row(4096, 0.4, 1.6384)},
           "1x8x65536": {"carve_content": row(65536, 4.0, 16.0)}}
    assert res["1x16x32768"]["carve_content"]["fwdbwd_ns_per_token"] == pytest.approx(500.0)
    lines = bench.long_table_lines("1x16x32768", res["1x16x32768"])
    carve = lines[1].split()
    assert carve[0] == "carve_content" and carve[-4:-2] == ["1.33", "0.50"]  # fwd+bwd / gdn2, / attention
    assert "ERROR boom" in lines[-1]
    assert bench.long_target_lines(res) == [
        "1x16x32768 content on vs fla_chunk_gdn2: 1.333x fwd+bwd (target <= 1.0)",
        "1x16x32768 content on vs sdpa_cudnn_gqa: 0.500x fwd+bwd (goal <= 0.6)",
        "B*H=16 content on prefill ns/token over T=4096,32768: max/min 1.25",
        "B*H=16 content on fwd+bwd ns/token over T=4096,32768: max/min 1.25 (target <= 1.3)"]
