"""The fused CARVE decode step (hybrid.ops.carve_decode_step) under TRITON_INTERPRET=1 on CPU.

One subprocess with TRITON_INTERPRET=1 set before triton is imported (fp32, tiny shapes). Each case
runs a recurrent layer for a few tokens from a random carried state (rows at different chunk positions,
one of them crossing a chunk end) three ways: the fused kernel, the layer's own fp32 step
(``torch_step``), and that step in float64 (the operator through ``carve_step`` in float64). Outputs
and every state buffer are compared. The op alone is also checked on raw inputs against a float64
composition around ``carve_step`` (the operator's one-step definition, ``hybrid.ops.carve``)."""

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

def op_vs_carve_step(B=3, H=2, K=12, V=20, R=3, W=4, C=4, vec_w=False, content=True):
    # the op on raw inputs against a float64 composition around hybrid.ops.carve.carve_step
    import torch.nn.functional as F
    from hybrid.ops.carve import CarveState, carve_step
    from hybrid.ops.carve_decode_step import carve_decode_step
    torch.manual_seed(1)
    CH = 2 * H * K + H * V
    x = torch.randn(B, CH); conv = torch.randn(B, CH, W - 1); cw = torch.randn(CH, W) / 2
    f = torch.randn(B, H * K); dt = torch.randn(H * K); A_log = torch.rand(H) * 2
    a = torch.randn(B, H * K); w = torch.randn(B, H * V if vec_w else H); gate = torch.randn(B, H * V)
    ud = torch.randn(H, R, V) / 4 if content else None; uu = torch.randn(H, K, R) if content else None
    nw = torch.rand(V) + 0.5
    S = torch.randn(B, H, K, V) / 3; mp = torch.randn(B, H, V); os_ = torch.randn(B, H, V)
    lengths = torch.tensor([C - 1, 0, 2 * C + 1][:B]); pos = lengths % C
    d = lambda t: None if t is None else t.double()
    ext = torch.cat([d(conv), d(x)[:, :, None]], -1)
    qkv = F.silu((ext * d(cw)).sum(-1))
    q, k, v = torch.split(qkv, [H * K, H * K, H * V], -1)
    q = F.normalize(q.view(B, H, K), dim=-1, eps=1e-6); k = F.normalize(k.view(B, H, K), dim=-1, eps=1e-6)
    g = -torch.exp(d(A_log)).view(H, 1) * F.softplus(d(f).view(B, H, K) + d(dt).view(H, K))
    wt = torch.sigmoid(d(w)).view(B, H, V) if vec_w else torch.sigmoid(d(w))
    o, st = carve_step(q, k, v.view(B, H, V), g, d(a).view(B, H, K), wt, d(ud), d(uu),
                       CarveState(d(S), d(mp), d(os_), pos.clone()), scale=K ** -0.5, chunk_size=C)
    yref = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * d(nw) * F.silu(d(gate).view(B, H, V))
    bufs = [t.clone() for t in (conv, S, mp, os_, pos)]
    y = carve_decode_step(x, bufs[0], cw, f, dt, A_log, a, w, gate, ud, uu, nw, bufs[1], bufs[2], bufs[3], bufs[4],
                          lengths, chunk_size=C, eps=1e-6)
    rel = lambda got, ref: ((got.double() - ref).abs().max() / ref.abs().max()).item()
    return {"y": rel(y.view(B, H, V), yref), "S": rel(bufs[1], st.S), "m_prev": rel(bufs[2], st.m_prev),
            "o_sum": rel(bufs[3], st.o_sum), "conv_state": rel(bufs[0], ext[:, :, 1:]),
            "pos_ok": float(bufs[4].tolist() == st.pos.tolist())}

cases = json.loads(sys.argv[1])
res = {name: run(**cfg) for name, cfg in cases.items()}
res["op_vs_carve_step"] = op_vs_carve_step()
res["op_vs_carve_step_vector_w_no_content"] = op_vs_carve_step(vec_w=True, content=False, W=2)
print("RESULT" + json.dumps(res))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(CASES)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", ["op_vs_carve_step", "op_vs_carve_step_vector_w_no_content"])
def test_fused_op_matches_carve_step_in_float64(results, name):
    """The op alone on raw projections against a float64 composition of the conv, the norms, the gates,
    ``carve_step`` (the operator's one-step definition) and the gated RMSNorm."""
    errs = results[name]
    assert errs.pop("pos_ok") == 1.0, name
    assert set(errs) == {"y", "S", "m_prev", "o_sum", "conv_state"}
    for key, val in errs.items():
        assert val <= TOL, (name, key, val)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_decode_step_matches_float64_step(results, name):
    errs = results[name]
    assert {"fused_y", "fused_S", "fused_m_prev", "fused_o_sum", "fused_conv_state"} <= set(errs)
    for key, val in errs.items():
        assert val <= TOL, (name, key, val)  # NaN fails too
