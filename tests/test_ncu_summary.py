"""benchmarks/ncu_summary.py on a small export in Nsight Compute's source-page CSV layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAD = ['"Kernel Name","carve_chunk_bwd_kernel",',
        '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed","stall_long_sb",'
        '"stall_barrier","stall_long_sb (Not Issued)"']
ROWS = [('0x10', '      LDL R1, [R1+0x8]', 30, 100, 25, 5, 1),
        ('0x20', '      FMUL R2, R3, R4', 60, 400, 10, 50, 1),
        ('0x30', '  @!P1  STL [R1+0x4], R2', 10, 100, 10, 0, 0)]


def test_summary_counts_samples_reasons_and_spills(tmp_path):
    path = tmp_path / "ncu-source-bwd.csv"
    lines = HEAD + [",".join(f'"{x}"' for x in r) for r in ROWS]
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ncu_summary.py"), str(path), "--top", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "3 instructions, 100 stall samples" in out
    assert "long_sb 45.0%" in out and "barrier 55.0%" in out  # reasons over all samples, Not-Issued columns left out
    assert "FMUL 60.0% (1)" in out and "LDL 30.0% (1)" in out and "STL 10.0% (1)" in out
    assert "local-memory instructions: 2 static, 200 warp-level executed (all instructions: 600)" in out
    top = out.split("top 2 instructions")[1].strip().splitlines()[1:]
    assert len(top) == 2 and "FMUL" in top[0] and "LDL" in top[1]
