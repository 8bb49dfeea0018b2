"""The pieces of benchmarks/layers.py that run without a GPU: shapes, layer construction, the profile's
kernel families, ratios and the printed table."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _layers_bench():
    spec = importlib.util.spec_from_file_location("bench_layers", ROOT / "benchmarks" / "layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shapes_parse_and_bad_ones_are_refused():
    bench = _layers_bench()
    assert bench.parse_shape("8x4096") == (8, 4096)
    for bad in ("8", "8x", "ax4096"):
        with pytest.raises(argparse.ArgumentTypeError, match="BxT"):
            bench.parse_shape(bad)


def test_our_layers_build_at_the_benchmark_width():
    bench = _layers_bench()
    x = torch.randn(1, 5, bench.D_MODEL)
    for name in bench.OURS:
        m, call = bench.build(name, None)
        assert call(m, x).shape == x.shape, name
    m, _ = bench.build("carve_content", None)
    assert (m.H, m.K, m.V, m.content) == (8, 128, 128, True)
    with pytest.raises(RuntimeError, match="fla"):
        bench.build("fla_gdn2", None)


def test_kernel_families_and_ratios():
    bench = _layers_bench()
    assert bench.family("carve_chunk_fwd_kernel") == "carve_operator"
    assert bench.family("short_conv_bwd_kernel") == "fused_ops"
    assert bench.family("gated_norm_fwd_kernel") == "fused_ops"
    assert bench.family("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NTT") == "gemm"
    assert bench.family("void at::native::elementwise_kernel<128, 4>") == "other"
    res = {"carve_content": dict(fwd_ms=3.0, fwdbwd_ms=10.0, peak_mib=500.0),
           "fla_gdn2": dict(fwd_ms=4.0, fwdbwd_ms=12.5, peak_mib=1000.0),
           "fla_gdn": dict(error="boom")}
    bench.ratios(res)
    assert res["carve_content"]["x_fla_gdn2"] == 0.8 and res["carve_content"]["peak_x_fla_gdn2"] == 0.5
    assert "x_fla_gdn" not in res["carve_content"]
    lines = bench.table(res)
    assert lines[1].startswith("carve_content") and "0.800" in lines[1] and "boom" in lines[-1]
