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


def test_variant_spec_parses_name_base_and_settings():
    bench = _kernels_bench()
    name, base, env = bench.parse_variant(
        "carve_bw16:carve_content:HYBRID_CARVE_V2_BWD_WARPS=16,HYBRID_CARVE_V2_POST_BK=128")
    assert (name, base) == ("carve_bw16", "carve_content")
    assert env == {"HYBRID_CARVE_V2_BWD_WARPS": "16", "HYBRID_CARVE_V2_POST_BK": "128"}


@pytest.mark.parametrize("spec", ["carve_x", "carve_x:carve_content:NOEQUALS", "x:fla_chunk_gdn2:A=1"])
def test_bad_variant_spec_is_refused(spec):
    bench = _kernels_bench()
    with pytest.raises(SystemExit, match="variant"):
        bench.parse_variant(spec)


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
    res = {"carve_content": dict(fwd_ms=3.2, fwdbwd_ms=10.33, peak_mib=3256,
                                 kernels_ms={"carve_v2_fwd_kernel": 2.44, "tiny": 0.01}),
           "carve_nocontent": dict(fwd_ms=2.9, fwdbwd_ms=9.57, peak_mib=3245, kernels_ms={"carve_v2_bwdt_kernel": 3.5}),
           "fla_chunk_gdn2": dict(fwd_ms=1.9, fwdbwd_ms=11.07, peak_mib=4480)}
    lines = bench.table_lines(res)
    assert [ln.split()[0] for ln in lines] == ["carve_content", "2.440", "carve_nocontent", "3.500",
                                               "fla_chunk_gdn2", "->", "->", "->"]
    assert "carve_v2_fwd_kernel" in lines[1] and "carve_v2_bwdt_kernel" in lines[3]
