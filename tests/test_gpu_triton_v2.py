"""The v2 Triton CARVE kernels on a CUDA GPU against the float64 oracles (run: scripts/gpu-check).

Same cases and bounds as tests/test_gpu_triton.py (v1): bf16 inputs unless stated, relative RMS error
<= 5e-3 on outputs and states and <= 1e-2 on every gradient; every kernel output is poisoned with NaN
first, so an unwritten element fails. The oracle is the token-by-token float64 reference for short
sequences and the chunked float64 implementation (on the GPU) for long ones. v2 runs its kernels on
32-row tiles with 8 warps by default; the "_w4" case runs the sequential ones with 4. K or V above 128 falls back to v1
(the K256 case checks that the fallback is wired). These batches have few (sequence, head) pairs, so
the sweeps split V over 4 programs each (HYBRID_CARVE_V2_VSPLIT=auto); the vsplit1 knob cases run one. Cases are ordered by importance, so a run cut by a
time limit still reports the main ones ($OUT/gpu-errors-v2.jsonl is appended after every case).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

BF16 = torch.bfloat16
O_TOL, G_TOL = 5e-3, 1e-2

BASE = dict(H=2, K=128, V=128, r=16, C=64, dtype=BF16, device="cuda", impl="v2")
CASES = {
    # content on, scalar write gate: lengths around the chunk size and long, decay none..strong
    "T63_decay1": dict(B=2, T=63, decay=1.0, oracle="reference"),
    "T64_decay0": dict(B=2, T=64, decay=0.0, oracle="reference"),
    "T1000_decay0.05": dict(B=2, T=1000, decay=0.05, oracle="chunked"),
    "T4096_decay0.5": dict(B=1, T=4096, decay=0.5, oracle="chunked"),
    "T1000_decay30": dict(B=2, T=1000, decay=30.0, oracle="chunked"),
    # varlen, carried state in and out (gradients through both)
    "varlen_state": dict(lengths=[1, 63, 64, 65, 300, 7], init_state=True, final_grad=True, decay=2.0,
                         oracle="chunked"),
    # content off (CARVE ablation) and the GDN-2 mode (vector write gate)
    "gdn2_T1000": dict(B=2, T=1000, decay=1.0, content=False, vec_w=True, oracle="chunked"),
    "nocontent_T1000": dict(B=2, T=1000, decay=1.0, content=False, oracle="chunked"),
    "T64_decay5": dict(B=2, T=64, decay=5.0, oracle="reference"),
    "T1000_decay5": dict(B=2, T=1000, decay=5.0, oracle="chunked"),
    "T4096_decay5": dict(B=1, T=4096, decay=5.0, oracle="chunked"),
    "gdn2_T4096_decay8": dict(B=1, T=4096, decay=8.0, content=False, vec_w=True, oracle="chunked"),
    "varlen_gdn2_state": dict(lengths=[100, 33, 0, 190], init_state=True, final_grad=True, decay=1.0,
                              content=False, vec_w=True, oracle="chunked"),
    "detach_T500": dict(B=2, T=500, decay=1.0, content_grad="detach", oracle="chunked"),
    # values of 1e4: dP and dM overflow fp16 (the decayed products' default operands with bf16 inputs)
    # unless each operand tile is scaled first
    "large_values_T300": dict(B=2, T=300, decay=1.0, content=False, v_scale=1e4, oracle="chunked"),
    # 4 warps in the sequential kernels (8 is v2's default)
    "T1000_decay1_w4": dict(B=2, T=1000, decay=1.0, oracle="chunked", num_warps=4),
    # other dtypes and head sizes
    "K48_V80_T150": dict(B=2, T=150, decay=1.0, K=48, V=80, r=8, oracle="chunked", init_state=True,
                         final_grad=True),
    # fp16/fp32 inputs take fp32 operands: at K = V = 128 that falls back to v1 (shared memory), at
    # K = V = 64 it runs v2
    "fp16_T300_fallback_v1": dict(B=2, T=300, decay=1.0, dtype=torch.float16, oracle="chunked"),
    "fp32_T300_fallback_v1": dict(B=2, T=300, decay=1.0, dtype=torch.float32, oracle="chunked"),
    "fp32_K64_V64_T300": dict(B=2, T=300, decay=1.0, K=64, V=64, dtype=torch.float32, oracle="chunked"),
    "fp16_K64_V64_T300": dict(B=2, T=300, decay=1.0, K=64, V=64, dtype=torch.float16, oracle="chunked"),
    "K256_V256_T200_fallback_v1": dict(B=1, T=200, decay=1.0, K=256, V=256, oracle="chunked"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_triton_v2_matches_float64(name):
    from hybrid.kernels.triton_check import assert_within, record_errors, run_case

    cfg = {**BASE, **CASES[name]}
    errs = run_case(**cfg)
    print(name, {k: f"{v:.2e}" for k, v in errs.items()})
    record_errors(name, errs, "gpu-errors-v2.jsonl")
    assert_within(errs, O_TOL, G_TOL)


def test_triton_v2_equals_v1_forward_bf16():
    """v2 and v1 agree on one long bf16 forward. Each is within O_TOL of float64, so they may differ
    by up to twice that."""
    from hybrid.kernels.triton_carve import carve_triton
    from hybrid.kernels.triton_check import make_inputs, rel
    from hybrid.kernels.triton_v2 import carve_triton_v2

    gen = torch.Generator(device="cuda")
    gen.manual_seed(3)
    xs = make_inputs(2, 777, 4, 128, 128, 16, dtype=BF16, device="cuda", gen=gen)
    o1, s1 = carve_triton(*xs, output_final_state=True)
    o2, s2 = carve_triton_v2(*xs, output_final_state=True)
    assert rel(o2, o1) <= 2 * O_TOL and rel(s2.S, s1.S) <= 2 * O_TOL


# opt-in knobs, same bounds: HYBRID_CARVE_V2_DEC=bf16 or fp32 (bf16 or tf32 operands for M, P and their
# gradients; scaled fp16 is the default),
# HYBRID_CARVE_V2_SAVE_STATE=fp32 (chunk-start states kept in fp32 for the backward; bf16 is the
# default with bf16 inputs), and
# HYBRID_CARVE_V2_SUBCHUNK (64-token content chunks walked as 16- or 64-row tiles; 32 is the default),
# HYBRID_CARVE_V2_GATHER=1 (level reference decays gathered in registers), HYBRID_CARVE_V2_POST_BK, warp counts
KNOB_CASES = [
    ("T1000_decay30", "HYBRID_CARVE_V2_SUBCHUNK", "64", "tile64"),
    ("varlen_state", "HYBRID_CARVE_V2_SUBCHUNK", "64", "tile64"),
    ("T1000_decay30", "HYBRID_CARVE_V2_GATHER", "1", "gather1"),
    ("T1000_decay5", "HYBRID_CARVE_V2_POST_BK", "128", "postbk128"),
    ("T1000_decay5", "HYBRID_CARVE_V2_NUM_WARPS", "16", "w16"),
    ("varlen_state", "HYBRID_CARVE_V2_PAR_WARPS", "4", "pw4"),
    ("varlen_state", "HYBRID_CARVE_V2_BWD_WARPS", "16", "bw16"),
    ("T1000_decay30", "HYBRID_CARVE_V2_UNROLL", "all", "unroll_all"),
    ("T4096_decay0.5", "HYBRID_CARVE_V2_SUBCHUNK", "16", "sub16"),
    ("T1000_decay0.05", "HYBRID_CARVE_V2_SAVE_STATE", "fp32", "fp32_states"),
    ("varlen_state", "HYBRID_CARVE_V2_SAVE_STATE", "fp32", "fp32_states"),
    ("T1000_decay0.05", "HYBRID_CARVE_V2_DEC", "bf16", "dec_bf16"),
    ("T1000_decay30", "HYBRID_CARVE_V2_DEC", "bf16", "dec_bf16"),
    ("T1000_decay30", "HYBRID_CARVE_V2_DEC", "fp32", "dec_fp32"),
    ("varlen_state", "HYBRID_CARVE_V2_BWD", "n", "bwd_n"),
    ("T1000_decay30", "HYBRID_CARVE_V2_BWD", "n", "bwd_n"),
    ("varlen_state", "HYBRID_CARVE_V2_DS_OUT", "0", "ds_out0"),
    ("T1000_decay30", "HYBRID_CARVE_V2_NUM_STAGES", "2", "stages2"),
    # the erase gate kept in fp32 for the backward (bf16 by default), de passed on in bf16 (fp32 by default)
    ("T1000_decay30", "HYBRID_CARVE_V2_GBUF", "fp32", "gbuf_fp32"),
    ("T1000_decay30", "HYBRID_CARVE_V2_DE", "operand", "de_bf16"),
    ("varlen_state", "HYBRID_CARVE_V2_DE", "operand", "de_bf16"),
    # the backward sweep reading U_down, U_up once per content chunk instead of holding them
    ("T1000_decay30", "HYBRID_CARVE_V2_BWD_HOLD_U", "0", "hold_u0"),
    ("T4096_decay5", "HYBRID_CARVE_V2_BWD_HOLD_U", "0", "hold_u0"),
    # the V split (auto: these small batches run 4 programs per (sequence, head), see _vsplit): one
    # program per (sequence, head)
    ("T1000_decay30", "HYBRID_CARVE_V2_VSPLIT", "1", "vsplit1"),
    ("varlen_state", "HYBRID_CARVE_V2_VSPLIT", "1", "vsplit1"),
    ("T4096_decay5", "HYBRID_CARVE_V2_VSPLIT", "1", "vsplit1"),
    ("gdn2_T1000", "HYBRID_CARVE_V2_VSPLIT", "1", "vsplit1"),
]


@pytest.mark.parametrize("name,var,value,tag", KNOB_CASES)
def test_triton_v2_knobs(name, var, value, tag, monkeypatch):
    from hybrid.kernels.triton_check import assert_within, record_errors, run_case

    monkeypatch.setenv(var, value)
    errs = run_case(**{**BASE, **CASES[name]})
    print(name, tag, {k: f"{v:.2e}" for k, v in errs.items()})
    record_errors(f"{name}_{tag}", errs, "gpu-errors-v2.jsonl")
    assert_within(errs, O_TOL, G_TOL)
