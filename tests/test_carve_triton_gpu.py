"""The Triton CARVE operator on a CUDA GPU against the float64 oracles (run: scripts/gpu-check).

bf16 inputs at K = V = 128 unless stated; relative RMS error <= 5e-3 on outputs and states and <= 1e-2
on every gradient. Every kernel output is poisoned with NaN first, so an unwritten element fails. The
oracle is the token-by-token float64 reference for short sequences and the chunked float64
implementation (on the GPU) for long ones. Each case runs the settings ``choose_settings`` picks for
its shape and dtype (recorded with its errors in $OUT/gpu-errors.jsonl, appended after every case, so
a run cut by a time limit still reports): the chunk kernels with the V split for these small batches
(8 or 4 programs per (sequence, head); unsplit for B8_H16), the wide kernels for fp16/fp32 at
K = V = 128 and for K = V = 256. Cases are ordered by importance.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytestmark = pytest.mark.gpu

BF16 = torch.bfloat16
O_TOL, G_TOL = 5e-3, 1e-2

BASE = dict(H=2, K=128, V=128, r=16, C=64, dtype=BF16, device="cuda")
CASES = {
    # content on, scalar write gate: lengths around the chunk size and long, decay none..strong
    "T63_decay1": dict(B=2, T=63, decay=1.0, oracle="reference"),
    "T64_decay0": dict(B=2, T=64, decay=0.0, oracle="reference"),
    "T1000_decay0.05": dict(B=2, T=1000, decay=0.05, oracle="chunked"),
    "T4096_decay0.5": dict(B=1, T=4096, decay=0.5, oracle="chunked"),
    # long sequences with few (sequence, head) pairs: the V split in 8 and 4 programs per pair, each
    # about one program per multiprocessor (the content exchange between them every 64 tokens)
    "B1_H16_T4096_split8": dict(B=1, H=16, T=4096, decay=0.5, oracle="chunked"),
    "B1_H8_T4096_decay5_state_split8": dict(B=1, H=8, T=4096, decay=5.0, init_state=True, final_grad=True,
                                            oracle="chunked"),
    "B2_H16_T2048_split4": dict(B=2, H=16, T=2048, decay=1.0, oracle="chunked"),
    "B4_H8_T1024_split4": dict(B=4, H=8, T=1024, decay=1.0, oracle="chunked"),
    "B1_H16_T4096_gdn2_split8": dict(B=1, H=16, T=4096, decay=2.0, content=False, vec_w=True, oracle="chunked"),
    "T1000_decay30": dict(B=2, T=1000, decay=30.0, oracle="chunked"),
    # varlen, carried state in and out (gradients through both)
    "varlen_state": dict(lengths=[1, 63, 64, 65, 300, 7], init_state=True, final_grad=True, decay=2.0,
                         oracle="chunked"),
    # content off (CARVE ablation) and the GDN-2 mode (vector write gate)
    "gdn2_T1000": dict(B=2, T=1000, decay=1.0, content=False, vec_w=True, oracle="chunked"),
    "nocontent_T1000": dict(B=2, T=1000, decay=1.0, content=False, oracle="chunked"),
    # enough (sequence, head) pairs that the sweeps run one program each (no V split)
    "B8_H16_T512_nosplit": dict(B=8, H=16, T=512, decay=1.0, oracle="chunked"),
    "T64_decay5": dict(B=2, T=64, decay=5.0, oracle="reference"),
    "T1000_decay5": dict(B=2, T=1000, decay=5.0, oracle="chunked"),
    "T4096_decay5": dict(B=1, T=4096, decay=5.0, oracle="chunked"),
    "gdn2_T4096_decay8": dict(B=1, T=4096, decay=8.0, content=False, vec_w=True, oracle="chunked"),
    "varlen_gdn2_state": dict(lengths=[100, 33, 0, 190], init_state=True, final_grad=True, decay=1.0,
                              content=False, vec_w=True, oracle="chunked"),
    "detach_T500": dict(B=2, T=500, decay=1.0, content_grad="detach", oracle="chunked"),
    # values of 1e4: dP and dM overflow fp16 (the decayed products' operands with bf16 inputs) unless
    # each operand tile is scaled first
    "large_values_T300": dict(B=2, T=300, decay=1.0, content=False, v_scale=1e4, oracle="chunked"),
    # other head sizes and dtypes: fp16/fp32 inputs take fp32 operands, which fit the chunk kernels up
    # to K * V = 128 * 64 and run the wide kernels above; K, V above 128 run the wide kernels
    "K48_V80_T150": dict(B=2, T=150, decay=1.0, K=48, V=80, r=8, oracle="chunked", init_state=True,
                         final_grad=True),
    "fp32_K64_V64_T300": dict(B=2, T=300, decay=1.0, K=64, V=64, dtype=torch.float32, oracle="chunked"),
    "fp16_K64_V64_T300": dict(B=2, T=300, decay=1.0, K=64, V=64, dtype=torch.float16, oracle="chunked"),
    "fp16_T300_wide": dict(B=2, T=300, decay=1.0, dtype=torch.float16, oracle="chunked"),
    "fp32_T300_wide": dict(B=2, T=300, decay=1.0, dtype=torch.float32, oracle="chunked"),
    "fp32_gdn2_T300_wide_vsplit": dict(B=2, T=300, decay=1.0, dtype=torch.float32, content=False, vec_w=True,
                                       oracle="chunked"),
    "K256_V256_T200_wide": dict(B=1, T=200, decay=1.0, K=256, V=256, oracle="chunked"),
}
KERNEL = {"fp16_T300_wide": "wide", "fp32_T300_wide": "wide", "fp32_gdn2_T300_wide_vsplit": "wide",
          "K256_V256_T200_wide": "wide"}
# programs per (sequence, head) that choose_settings picks on the H200 (132 multiprocessors) for the chunk
# cases at K = V = 128; 8 for the others (N H <= 16)
SPLIT = {"B2_H16_T2048_split4": 4, "B4_H8_T1024_split4": 4, "B8_H16_T512_nosplit": 1}


@pytest.mark.parametrize("name", list(CASES))
def test_carve_triton_matches_float64(name):
    from hybrid.ops.carve.harness import assert_within, record_errors, run_case

    errs = run_case(**{**BASE, **CASES[name]})
    print(name, {k: f"{v:.2e}" for k, v in errs.items() if k != "settings"}, errs["settings"])
    record_errors(name, errs, "gpu-errors.jsonl")
    assert errs["settings"]["kernel"] == KERNEL.get(name, "chunk"), errs["settings"]
    if name.endswith("_vsplit"):
        assert errs["settings"]["value_split"] > 1, errs["settings"]
    if name not in KERNEL and CASES[name].get("K", 128) == 128:
        assert errs["settings"]["value_split"] == SPLIT.get(name, 8), errs["settings"]
    assert_within(errs, O_TOL, G_TOL)


@pytest.mark.parametrize("content,vec_w", [(True, False), (False, True)])
def test_carve_decode_continues_prefill(content, vec_w):
    from hybrid.ops.carve.harness import decode_case

    errs = decode_case(N=3, H=4, K=128, V=128, r=16, C=64, steps=80, content=content, vec_w=vec_w,
                       dtype=torch.float32, device="cuda")
    print(errs)
    for key, val in errs.items():
        assert val == 1.0 if key.endswith("_ok") else val <= 1e-3, (key, errs)


def test_chunk_and_wide_kernels_agree_bf16():
    """The chunk and the wide kernels agree on one long bf16 forward. Each is within O_TOL of float64,
    so they may differ by up to twice that."""
    from hybrid.ops.carve.chunk import carve_triton
    from hybrid.ops.carve.harness import make_inputs, rel
    from hybrid.ops.carve.inputs import validate
    from hybrid.ops.carve.settings import choose_settings

    gen = torch.Generator(device="cuda")
    gen.manual_seed(3)
    xs = make_inputs(2, 777, 4, 128, 128, 16, dtype=BF16, device="cuda", gen=gen)
    chosen = choose_settings(validate(*xs, chunk_size=64, content_grad="full", initial_state=None, cu_seqlens=None),
                             BF16, xs[0].device, 64)
    assert chosen.kernel == "chunk"
    o1, s1 = carve_triton(*xs, output_final_state=True)
    o2, s2 = carve_triton(*xs, output_final_state=True, settings=replace(chosen, kernel="wide", value_split=1,
                                                                         tile_rows=64, sweep_warps=4))
    assert rel(o2, o1) <= 2 * O_TOL and rel(s2.S, s1.S) <= 2 * O_TOL


def test_dispatch_uses_triton_on_cuda():
    from hybrid.ops.carve import carve, carve_chunked
    from hybrid.ops.carve.harness import make_inputs, rel

    xs = make_inputs(2, 130, 2, 64, 64, 8, dtype=BF16, device="cuda")
    o, st = carve(*xs, output_final_state=True)
    o64, _ = carve_chunked(*[x.double() for x in xs], output_final_state=True)
    assert o.dtype == BF16 and st.S.dtype == torch.float32
    assert rel(o, o64) <= O_TOL
