"""The fused RoPE + KV-buffer write of the attention decode step (hybrid.ops.rope_kv_write) under
TRITON_INTERPRET=1, against the layer's unfused RoPE and indexed writes (StaticAttentionLayer.write)."""

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
from hybrid.blocks.static_cache import StaticAttentionLayer
from hybrid.ops.rope_kv_write import rope_kv_write

torch.manual_seed(0)
out = {}
cases = {"full": dict(H=4, G=2, D=8, slots=40, window=None, pos=[0, 5, 39]),
         "ring_wraps": dict(H=6, G=3, D=12, slots=4, window=4, pos=[3, 4, 1000]),
         "mha_big_theta": dict(H=2, G=2, D=16, slots=64, window=None, pos=[63, 17], theta=500000.0)}
for name, c in cases.items():
    B = len(c["pos"])
    theta = c.get("theta", 10000.0)
    lay = [StaticAttentionLayer(B, c["G"], c["D"], c["slots"], c["window"], device="cpu", dtype=torch.float32)
           for _ in range(2)]
    for t in ("keys", "values"):
        noise = torch.randn_like(getattr(lay[0], t))
        for x in lay:
            getattr(x, t).copy_(noise)
    q = torch.randn(B, 1, c["H"], c["D"])
    k = torch.randn(B, 1, c["G"], c["D"])
    v = torch.randn(B, 1, c["G"], c["D"])
    pos = torch.tensor(c["pos"])
    qa = rope_kv_write(q, k, v, pos, lay[0].inv_freq(theta, c["D"]), lay[0].keys, lay[0].values, lay[0].slot_pos)
    qb = lay[1].write(q, k, v, pos, theta)
    err = lambda a, b: (a - b).abs().max().item()
    out[name] = {"q": err(qa, qb), "keys": err(lay[0].keys, lay[1].keys), "values": err(lay[0].values, lay[1].values),
                 "slot_pos_equal": float(torch.equal(lay[0].slot_pos, lay[1].slot_pos)),
                 "slots_written": int((lay[0].slot_pos >= 0).sum())}
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


@pytest.mark.parametrize("name", ["full", "ring_wraps", "mha_big_theta"])
def test_fused_rope_write_matches_the_layer(results, name):
    r = results[name]
    # angles up to 1000 rad: cos/sin of the same fp32 angle may differ by an ulp between libraries
    assert r["q"] <= 1e-5 and r["keys"] <= 1e-5, r
    assert r["values"] == 0.0 and r["slot_pos_equal"] == 1.0, r
    assert r["slots_written"] == len({"full": [0, 5, 39], "ring_wraps": [3, 4, 1000],
                                      "mha_big_theta": [63, 17]}[name]), r
