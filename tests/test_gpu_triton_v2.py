"""The v2 Triton CARVE kernels on a CUDA GPU against the float64 oracles (run: scripts/gpu-check).

Same cases and bounds as tests/test_gpu_triton.py (v1): bf16 inputs unless stated, relative RMS error
<= 5e-3 on outputs and states and <= 1e-2 on every gradient; every kernel output is poisoned with NaN
first, so an unwritten element fails. The oracle is the token-by-token float64 reference for short
sequences and the chunked float64 implementation (on the GPU) for long ones. v2 runs its sequential
kernels with 8 warps by default; the "_w4" cases run them with 4. K or V above 128 falls back to v1
(the K256 case checks that the fallback is wired). Cases are ordered by importance, so a run cut by a
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


@pytest.mark.parametrize("name", ["T1000_decay0.05", "T1000_decay30"])
def test_triton_v2_bf16_decayed_products(name, monkeypatch):
    """Opt-in HYBRID_CARVE_V2_DEC=bf16 (bf16 operands for M, P and their gradients): same bounds."""
    from hybrid.kernels.triton_check import assert_within, record_errors, run_case

    monkeypatch.setenv("HYBRID_CARVE_V2_DEC", "bf16")
    errs = run_case(**{**BASE, **CASES[name]})
    print(name, "bf16 decayed products", {k: f"{v:.2e}" for k, v in errs.items()})
    record_errors(name + "_dec_bf16", errs, "gpu-errors-v2.jsonl")
    assert_within(errs, O_TOL, G_TOL)


@pytest.mark.parametrize("name", ["T1000_decay0.05", "varlen_state"])
def test_triton_v2_bf16_saved_states(name, monkeypatch):
    """Chunk-start states kept in bf16 for the backward (HYBRID_CARVE_V2_SAVE_STATE=bf16): same bounds."""
    from hybrid.kernels.triton_check import assert_within, record_errors, run_case

    monkeypatch.setenv("HYBRID_CARVE_V2_SAVE_STATE", "bf16")
    errs = run_case(**{**BASE, **CASES[name]})
    print(name, "bf16 states", {k: f"{v:.2e}" for k, v in errs.items()})
    record_errors(name + "_bf16_states", errs, "gpu-errors-v2.jsonl")
    assert_within(errs, O_TOL, G_TOL)


@pytest.mark.parametrize("name,rows", [("T1000_decay30", "32"), ("varlen_state", "32"), ("T4096_decay0.5", "16")])
def test_triton_v2_subchunk_tiles(name, rows, monkeypatch):
    """HYBRID_CARVE_V2_SUBCHUNK: 64-token content chunks walked as 32- or 16-row tiles. Same operator,
    same bounds."""
    from hybrid.kernels.triton_check import assert_within, record_errors, run_case

    monkeypatch.setenv("HYBRID_CARVE_V2_SUBCHUNK", rows)
    errs = run_case(**{**BASE, **CASES[name]})
    print(name, f"{rows}-row tiles", {k: f"{v:.2e}" for k, v in errs.items()})
    record_errors(f"{name}_sub{rows}", errs, "gpu-errors-v2.jsonl")
    assert_within(errs, O_TOL, G_TOL)
