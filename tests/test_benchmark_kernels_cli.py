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
        st = bench.carve_settings(x, name)
        assert st["kernel"] == "chunk" and st["tile_rows"] == 32, (name, st)  # C = 64 as two 32-row tiles
        assert {"precision", "value_split", "sweep_warps", "saved_state"} <= set(st)


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
