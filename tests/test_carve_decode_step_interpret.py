"""The fused CARVE decode step (hybrid.ops.carve_decode_step) under TRITON_INTERPRET=1 on CPU.

One subprocess with TRITON_INTERPRET=1 set before triton is imported (fp32, tiny shapes). Each case
runs a recurrent layer for a few tokens from a random carried state (rows at different chunk positions,
one of them crossing a chunk end) three ways: the fused kernel, the layer's own fp32 step
(``torch_step``), and that step in float64 (the operator through ``carve_step`` in float64). Outputs
and every state buffer are compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "carve_content": dict(kind="carve", K=16, V=8, C=4, conv=4, lengths=[3, 0, 6, 9]),
    "carve_no_content": dict(kind="carve", K=8, V=16, C=8, conv=4, content="off", lengths=[7, 1]),
    "gdn2_vector_w": dict(kind="gdn2", K=16, V=16, C=4, conv=4, lengths=[2, 3, 13]),
    "carve_conv2_odd_dims": dict(kind="carve", K=12, V=20, C=4, conv=2, lengths=[1, 2, 3], rank=3),
}
TOL = 2e-5

WORKER = r"""
import copy, json, sys
import torch
from hybrid.blocks.recurrent import RecurrentMixer
from hybrid.blocks.spec import normalize_block
from hybrid.blocks.recurrent_step import fused_step, torch_step
from hybrid.blocks.static_cache import StaticRecurrentLayer

def layer_for(m, lengths, dtype):
    B = lengths.numel()
    lay = StaticRecurrentLayer(B, 2 * m.H * m.K + m.H * m.V, m.conv_size, m.H, m.K, m.V, lengths, device="cpu")
    for name in ("conv_state", "S", "m_prev", "o_sum"):
        setattr(lay, name, getattr(lay, name).to(dtype))
    return lay

def run(kind, K, V, C, conv, lengths, content="self", rank=4, steps=3, d=24, H=2):
    torch.manual_seed(0)
    blk = {"kind": kind, "heads": H, "head_dim": K, "value_dim": V, "chunk_size": C, "conv_size": conv,
           "gate_rank": 8}
    if kind == "carve":
        blk.update(content=content, content_rank=rank)
    m = RecurrentMixer(normalize_block(blk, "layer"), d).eval()
    with torch.no_grad():
        if m.content:
            m.u_up.normal_(0.0, 0.5)
        m.dt_bias.add_(1.0)  # stronger decay than the init
    B = len(lengths)
    lens = torch.tensor(lengths)
    lays = {"fused": layer_for(m, lens, torch.float32), "fp32": layer_for(m, lens, torch.float32),
            "fp64": layer_for(m, lens, torch.float64)}
    init = {"conv_state": torch.randn_like(lays["fp32"].conv_state),
            "S": 0.3 * torch.randn_like(lays["fp32"].S),
            "m_prev": torch.randn_like(lays["fp32"].m_prev), "o_sum": torch.randn_like(lays["fp32"].o_sum)}
    for lay in lays.values():
        for name, t in init.items():
            getattr(lay, name).copy_(t)
        lay.pos.copy_(lens % C)
    m64 = copy.deepcopy(m).double()
    errs = {}
    with torch.no_grad():
        for step in range(steps):
            x = torch.randn(B, 1, d)
            y = {"fused": fused_step(m, x, lays["fused"]), "fp32": torch_step(m, x, lays["fp32"]),
                 "fp64": torch_step(m64, x.double(), lays["fp64"])}
            for name in ("fused", "fp32", "fp64"):
                assert lays[name].pos.tolist() == ((lens + 1) % C).tolist(), (name, lays[name].pos)
            lens += 1
            ref = y["fp64"]
            for name in ("fused", "fp32"):
                e = {"y": (y[name].double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-9)}
                for buf in ("conv_state", "S", "m_prev", "o_sum"):
                    r = getattr(lays["fp64"], buf)
                    e[buf] = (getattr(lays[name], buf).double() - r).abs().max().item() / max(r.abs().max().item(), 1e-9)
                for key, val in e.items():
                    errs[f"{name}_{key}"] = max(errs.get(f"{name}_{key}", 0.0), val)
    return errs

cases = json.loads(sys.argv[1])
print("RESULT" + json.dumps({name: run(**cfg) for name, cfg in cases.items()}))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(CASES)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", list(CASES))
def test_fused_decode_step_matches_float64_step(results, name):
    errs = results[name]
    assert {"fused_y", "fused_S", "fused_m_prev", "fused_o_sum", "fused_conv_state"} <= set(errs)
    for key, val in errs.items():
        assert val <= TOL, (name, key, val)  # NaN fails too
