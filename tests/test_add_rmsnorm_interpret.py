"""The fused residual add + RMSNorm of the decode step (hybrid.ops.add_rmsnorm) under TRITON_INTERPRET=1,
against the eager add and the model's RMSNorm module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json
import torch
from hybrid.blocks.norms import RMSNorm
from hybrid.ops.add_rmsnorm import add_rmsnorm

torch.manual_seed(0)
out = {}
for name, (rows, n, dtype) in {"fp32_odd_width": (3, 40, torch.float32), "fp32_rows": (5, 64, torch.float32),
                               "bf16": (4, 48, torch.bfloat16)}.items():
    norm = RMSNorm(n, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        h = (3 * torch.randn(rows, 1, n)).to(dtype)
        d = torch.randn(rows, 1, n).to(dtype)
        h1, y1 = add_rmsnorm(h, d, norm.weight, norm.eps)
        ref_h = h + d
        ref_y = norm(ref_h)
        h2, y2 = add_rmsnorm(h, None, norm.weight, norm.eps)
    err = lambda a, b: ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    out[name] = {"h": err(h1, ref_h), "y": err(y1, ref_y), "y_no_add": err(y2, norm(h)),
                 "same_h": float(h2.data_ptr() == h.data_ptr()), "dtype_ok": float(y1.dtype == dtype == h1.dtype)}
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", ["fp32_odd_width", "fp32_rows", "bf16"])
def test_add_rmsnorm_matches_eager(results, name):
    r = results[name]
    fp32 = name.startswith("fp32")
    tol = 1e-6 if fp32 else 1e-2  # bf16: one rounding of the output
    # the residual add rounds as the eager add does (the interpreter's bf16 rounding can differ by one unit)
    assert r["h"] <= (0.0 if fp32 else 2.0 ** -8), r
    assert r["y"] <= tol and r["y_no_add"] <= tol, r
    assert r["same_h"] == 1.0 and r["dtype_ok"] == 1.0, r
