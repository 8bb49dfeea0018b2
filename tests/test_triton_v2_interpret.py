"""The v2 Triton CARVE kernels under TRITON_INTERPRET=1 on CPU, against the float64 reference.

Same scheme as tests/test_triton_interpret.py (one subprocess with TRITON_INTERPRET=1 set before
triton is imported; fp32 inputs, tiny shapes), for ``carve_triton_v2``: forward, final state and every
gradient, odd lengths, T < C, decay none..very strong (mean -20 per step), content on/off, scalar and
vector w, detach, varlen with an empty sequence, carried state in and out with a mid-chunk start, chunk
sizes 16/32/64, 64- and 32-token content chunks walked as smaller tiles, chunk-start states saved in bf16.
"""

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
    # 64-row tiles (the tile size before 32 became the default), the post-pass split over key columns
    # (K = 20 as two programs of 16), and the level reference decays gathered from the tile
    "c64_two_chunks_odd": dict(C=64, T=70, K=20, V=24, env={"HYBRID_CARVE_V2_SUBCHUNK": "64",
                                                            "HYBRID_CARVE_V2_POST_BK": "16"}),
    "c64_short": dict(C=64, T=21, K=16, V=16, init_state=True, final_grad=True),
    "c64_strong_decay_state": dict(C=64, T=150, K=16, V=16, decay=20.0, init_state=True, final_grad=True,
                                   env={"HYBRID_CARVE_V2_GATHER": "1"}),
    "c64_tile64_strong_decay_state": dict(C=64, T=150, K=16, V=16, decay=20.0, init_state=True, final_grad=True,
                                          env={"HYBRID_CARVE_V2_SUBCHUNK": "64"}),
    "c64_mixed_decay": dict(C=64, T=200, K=16, V=16, decay=3.5),  # in-chunk decays from 1 to e^-400 (32-row tiles)
    "c16_odd": dict(C=16, T=37),
    "c32_vector_w_state": dict(C=32, T=50, init_state=True, final_grad=True, vec_w=True),
    "gdn2_mode_vector_w": dict(C=16, T=37, vec_w=True, content=False),
    "nocontent_scalar_w": dict(C=16, T=45, content=False, init_state=True, final_grad=True),
    "strong_decay": dict(C=16, T=37, decay=20.0),
    "no_decay": dict(C=16, T=37, decay=0.0),
    "state_in_out": dict(C=16, T=37, init_state=True, final_grad=True),
    "varlen_with_state": dict(C=16, lengths=[5, 0, 33, 16], init_state=True, final_grad=True),
    "varlen_c64_no_state": dict(C=64, lengths=[70, 0, 9], K=16, V=16),
    "detach": dict(C=16, T=37, content_grad="detach"),
    "detach_state": dict(C=32, T=40, content_grad="detach", init_state=True, final_grad=True),
    # 64-token content chunks walked as 32- or 16-row tiles (HYBRID_CARVE_V2_SUBCHUNK): the same operator
    "c64_sub32_state": dict(C=64, T=150, K=16, V=16, decay=3.5, init_state=True, final_grad=True,
                            env={"HYBRID_CARVE_V2_SUBCHUNK": "32"}),
    "c64_sub32_strong_decay": dict(C=64, T=200, K=16, V=16, decay=20.0, env={"HYBRID_CARVE_V2_SUBCHUNK": "32"}),
    "c64_sub16_varlen_state": dict(C=64, lengths=[70, 0, 9, 130], K=16, V=16, init_state=True, final_grad=True,
                                   env={"HYBRID_CARVE_V2_SUBCHUNK": "16"}),
    "c32_sub16_detach_vector_w": dict(C=32, T=50, content_grad="detach", vec_w=True, init_state=True,
                                      final_grad=True, env={"HYBRID_CARVE_V2_SUBCHUNK": "16"}),
    # the dyadic level loops unrolled in every kernel (HYBRID_CARVE_V2_UNROLL)
    "c64_unroll_all_strong_decay_state": dict(C=64, T=150, K=16, V=16, decay=20.0, init_state=True, final_grad=True,
                                              env={"HYBRID_CARVE_V2_UNROLL": "all"}),
    # the content maps' gradients summed from many partial sums (3 tile slots per du program), and the
    # backward sweep reading U_down, U_up once per content chunk (HYBRID_CARVE_V2_BWD_HOLD_U=0)
    "du_parts_hold_u0_varlen_state": dict(C=64, lengths=[70, 0, 9, 130], K=16, V=16, decay=2.0, init_state=True,
                                          final_grad=True, env={"HYBRID_CARVE_V2_DU_SLOTS": "3",
                                                                "HYBRID_CARVE_V2_BWD_HOLD_U": "0"}),
    # the backward sweep forming dkt and the tile-decay gradient itself (HYBRID_CARVE_V2_DS_OUT=0)
    # instead of saving dS per tile for the post-pass
    "ds_out0_varlen_state": dict(C=64, lengths=[70, 0, 9, 130], K=16, V=16, decay=2.0, init_state=True,
                                 final_grad=True, env={"HYBRID_CARVE_V2_DS_OUT": "0"}),
    # the backward sweep on [C, *] tiles (HYBRID_CARVE_V2_BWD=n) instead of the transposed one
    "bwd_n_strong_decay_state": dict(C=64, T=150, K=16, V=24, decay=20.0, init_state=True, final_grad=True,
                                     env={"HYBRID_CARVE_V2_BWD": "n"}),
    # chunk-start states saved in bf16 for the backward (HYBRID_CARVE_V2_SAVE_STATE): own bound, below
    "save_state_bf16": dict(C=64, T=300, K=32, V=32, decay=0.05, init_state=True, final_grad=True,
                            env={"HYBRID_CARVE_V2_SAVE_STATE": "bf16"}),
    # fp16 operands in the decayed products (HYBRID_CARVE_V2_DEC=fp16, the default for bf16 inputs on a
    # GPU), each operand tile scaled by its largest entry: own bound, below. Values of 1e5 make dP and dM
    # overflow fp16 (65504) unless scaled.
    "dec_fp16_strong_decay_state": dict(C=64, T=150, K=16, V=16, decay=20.0, init_state=True, final_grad=True,
                                        env={"HYBRID_CARVE_V2_DEC": "fp16"}),
    "dec_fp16_mixed_decay_vector_w": dict(C=64, T=200, K=16, V=16, decay=3.5, vec_w=True,
                                          env={"HYBRID_CARVE_V2_DEC": "fp16"}),
    "dec_fp16_large_values": dict(C=32, T=70, K=16, V=16, content=False, v_scale=1e5,
                                  env={"HYBRID_CARVE_V2_DEC": "fp16"}),
}
TOL = 1e-4
# bf16 chunk-start states: the forward is unchanged (fp32 here), the gradients that read the state lose
# about 8 bits. Measured on this case: dq 1.2e-3, du_down 1.4e-3, dm0 1.5e-3 (fp32 states: <= 5.1e-7).
TOL_BF16_STATE = 5e-3
# fp16 decayed products: operands rounded to 11 significant bits, as tf32 on the GPU. Bound set from
# the measured errors of the cases above (see the test).
TOL_DEC_FP16 = 2e-3

WORKER = """
import json, sys
from hybrid.kernels.triton_check import run_case
import os
cases = json.loads(sys.argv[1])
out = {}
for name, cfg in cases.items():
    env = cfg.pop("env", {})
    os.environ.update(env)
    try:
        out[name] = run_case(impl="v2", **cfg)
    finally:
        for key in env:
            os.environ.pop(key)
print("RESULT" + json.dumps(out))
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
def test_triton_v2_interpreter_matches_reference(results, name):
    errs = results[name]
    assert errs, name
    env = CASES[name].get("env", {})
    bf16_state = env.get("HYBRID_CARVE_V2_SAVE_STATE") == "bf16"
    dec_fp16 = env.get("HYBRID_CARVE_V2_DEC") == "fp16"
    for key, val in errs.items():
        if key.endswith("_ok"):
            assert val == 1.0, (name, key)
        elif bf16_state and key.startswith("d"):
            assert val <= TOL_BF16_STATE, (name, key, val)
        elif dec_fp16:
            assert val <= TOL_DEC_FP16, (name, key, val)
        else:
            assert val <= TOL, (name, key, val)  # NaN (unwritten output) fails too
    assert {"dq", "dk", "dv", "dg", "da", "dw"} <= set(errs), name
    if CASES[name].get("content", True):
        assert {"du_down", "du_up"} <= set(errs), name
    if CASES[name].get("init_state"):
        assert {"S_final", "m_final", "osum_final", "dS0", "dm0", "dos0"} <= set(errs), name


def test_triton_v2_rejects_small_chunks_cleanly():
    """chunk sizes outside 16/32/64 raise CarveInputError (checked without running a kernel)."""
    import torch

    from hybrid.kernels.inputs import CarveInputError
    from hybrid.kernels.triton_v2 import carve_triton_v2

    x = [torch.randn(1, 8, 1, 16) for _ in range(5)]
    with pytest.raises(CarveInputError):
        carve_triton_v2(*x, torch.rand(1, 8, 1), chunk_size=8)


TILE_WORKER = """
import torch
from hybrid.kernels import triton_v2
seen = []
for name in ("carve_v2_fwd_kernel", "carve_v2_bwd_kernel", "carve_v2_bwdt_kernel"):
    real = getattr(triton_v2, name)

    class Spy:
        def __init__(self, real, name):
            self.real, self.name = real, name

        def __getitem__(self, grid):
            launch = self.real[grid]

            def run(*args, **kw):
                seen.append((self.name, kw["C"], kw["SUB"]))
                return launch(*args, **kw)
            return run
    setattr(triton_v2, name, Spy(real, name))
x = [torch.randn(1, 70, 1, 16, requires_grad=True) for _ in range(5)]
w = torch.rand(1, 70, 1, requires_grad=True)
o, _ = triton_v2.carve_triton_v2(*x, w, torch.randn(1, 4, 16), torch.randn(1, 16, 4), chunk_size=64)
o.sum().backward()
print("SEEN", sorted(set(seen)))
"""


def test_subchunk_knob_runs_smaller_tiles():
    """By default the sweeps run on 32-row tiles, two per 64-token content chunk (the cases above check
    that the function is still the C = 64 operator); a bad HYBRID_CARVE_V2_SUBCHUNK is refused."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("HYBRID_CARVE_V2_SUBCHUNK", None)
    proc = subprocess.run([sys.executable, "-c", TILE_WORKER], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = [ln for ln in proc.stdout.splitlines() if ln.startswith("SEEN")][-1]
    assert seen == "SEEN [('carve_v2_bwdt_kernel', 32, 2), ('carve_v2_fwd_kernel', 32, 2)]", seen

    import torch

    from hybrid.kernels.inputs import CarveInputError
    from hybrid.kernels.triton_v2 import carve_triton_v2

    x = [torch.randn(1, 8, 1, 16) for _ in range(5)]
    for bad in ("48", "64", "x"):
        os.environ["HYBRID_CARVE_V2_SUBCHUNK"] = bad
        try:
            with pytest.raises(CarveInputError, match="SUBCHUNK"):
                carve_triton_v2(*x, torch.rand(1, 8, 1), chunk_size=32)
        finally:
            os.environ.pop("HYBRID_CARVE_V2_SUBCHUNK")


def test_vsplit_policy(monkeypatch):
    """The V split (HYBRID_CARVE_V2_VSPLIT): auto splits only on a GPU, into 4 programs per (sequence,
    head) when 4 N H programs fit one per multiprocessor and every program keeps 32 or more value columns
    with at least one valid; the interpreter and CPU always run 1; a value other than auto, 1, 4 is refused."""
    import torch

    from hybrid.kernels import triton_v2
    from hybrid.kernels.inputs import CarveInputError

    assert triton_v2._vsplit_fits(4, 128, 128) and triton_v2._vsplit_fits(1, 48, 64)
    assert not triton_v2._vsplit_fits(4, 64, 64)  # 16 columns per program
    assert not triton_v2._vsplit_fits(4, 80, 128)  # the last block (96..127) would have no valid column
    cpu = torch.device("cpu")
    for raw in ("auto", "1", "4"):
        monkeypatch.setenv("HYBRID_CARVE_V2_VSPLIT", raw)
        assert triton_v2._vsplit(4, 128, 128, True, cpu) == 1
    for bad in ("2", "8", "x"):
        monkeypatch.setenv("HYBRID_CARVE_V2_VSPLIT", bad)
        with pytest.raises(CarveInputError, match="VSPLIT"):
            triton_v2._vsplit(4, 128, 128, True, cpu)
    # 64-row tiles are never split (wrong on the H200 split in 4), even forced and on a CUDA device
    monkeypatch.setattr(triton_v2.v1, "_interpreting", lambda: False)
    for raw in ("auto", "4"):
        monkeypatch.setenv("HYBRID_CARVE_V2_VSPLIT", raw)
        assert triton_v2._vsplit(4, 128, 128, True, torch.device("cuda"), 64) == 1
