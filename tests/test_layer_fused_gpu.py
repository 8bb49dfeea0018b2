"""The fused ops around the CARVE operator and the fused layer on a CUDA GPU: the Triton kernels against
their PyTorch definitions in fp32 (tight) and with bf16 inputs (against fp32 PyTorch on the same rounded
inputs), at the layer's head sizes (128). Checks in tests/layer_fused_checks.py."""

from __future__ import annotations

import layer_fused_checks as checks
import pytest
import torch

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
BIG = dict(H=4, K=128, V=128)


def _ok(errs, tol):
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, bad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [dict(B=2, T=300), dict(lengths=[300, 0, 2, 77, 1]),
                                  dict(B=3, T=65, state=False, normalize=False), dict(W=6, B=2, T=130)])
def test_conv_gpu(dtype, case):
    _ok(checks.check_conv("cuda", dtype, **BIG, **case), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_step_gpu(dtype):
    _ok(checks.check_conv_step("cuda", dtype, **BIG, N=4, T=9), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vector_w", [False, True])
def test_gates_gpu(dtype, vector_w):
    _ok(checks.check_gates("cuda", dtype, B=2, T=333, **BIG, vector_w=vector_w), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_norm_gpu(dtype):
    _ok(checks.check_gated_norm("cuda", dtype, shape=(2, 333, 4, 128)), TOL[dtype])


LAYER = dict(d_model=256, heads=2, head_dim=128, chunk=64, rank=32)


@pytest.mark.parametrize("kind,content", [("carve", True), ("carve", False), ("gdn2", True)])
def test_fused_layer_fp32_gpu(kind, content):
    _ok(checks.check_layer("cuda", kind=kind, content=content, B=2, T=200, **LAYER), 1e-3)


def test_fused_layer_packed_fp32_gpu():
    _ok(checks.check_layer("cuda", lengths=[130, 0, 7, 64], **LAYER), 1e-3)


@pytest.mark.parametrize("kind", ["carve", "gdn2"])
def test_fused_layer_bf16_autocast_gpu(kind):
    """The fused layer under bf16 autocast against the PyTorch ops in fp32."""
    _ok(checks.check_layer("cuda", kind=kind, B=2, T=256, autocast=torch.bfloat16, **LAYER), 5e-2)


def test_fused_layer_packed_padded_and_decode_gpu():
    _ok(checks.check_layer_packed("cuda", lengths=(70, 0, 130, 9)), 1e-3)
    _ok(checks.check_layer_decode("cuda", B=3, prefill=70, steps=5), 1e-3)


def test_fused_layer_under_torch_compile_gpu():
    """train.compile's path: the layer compiled by inductor around the eager fused ops, fp32."""
    _ok(checks.check_layer_compiled("cuda", B=2, T=200), 1e-4)
