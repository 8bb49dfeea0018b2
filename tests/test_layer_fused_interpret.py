"""The fused ops around the CARVE operator (hybrid.ops.short_conv, gates, gated_norm) and the layer that uses
them, under TRITON_INTERPRET=1 on CPU in fp32 against their PyTorch definitions: outputs and every gradient,
packed sequences with carried state, the in-place decode step continuing a prefill, the fused layer against
the layer on the PyTorch ops (output, input and every parameter gradient). One subprocess runs every case
(the interpreter must be on before triton is imported); the checks live in tests/layer_fused_checks.py."""

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
    "conv_state_final": ("check_conv", {}),
    "conv_varlen_short_and_empty": ("check_conv", dict(lengths=[5, 0, 2, 9, 1])),
    "conv_no_state_no_norm_width2": ("check_conv", dict(state=False, normalize=False, W=2, T=9)),
    "conv_value_dim_differs": ("check_conv", dict(K=16, V=8, T=7, W=3)),
    "conv_width2_state_varlen": ("check_conv", dict(W=2, lengths=[3, 1, 0, 6])),
    "conv_width6_state_varlen": ("check_conv", dict(W=6, lengths=[4, 9, 0, 2])),
    # more tokens than one program of the backward's first pass takes (its weight-gradient partial sums)
    "conv_several_programs": ("check_conv", dict(H=1, K=8, V=8, B=2, T=45, dpre_blocks=2)),
    "conv_decode_step": ("check_conv_step", {}),
    "gates_scalar_w": ("check_gates", {}),
    "gates_vector_w": ("check_gates", dict(vector_w=True)),
    "gated_norm": ("check_gated_norm", {}),
    "gated_norm_odd_dim": ("check_gated_norm", dict(shape=(3, 5, 2, 12))),
    "layer_carve_content": ("check_layer", {}),
    "layer_carve_no_content": ("check_layer", dict(content=False)),
    "layer_gdn2_packed": ("check_layer", dict(kind="gdn2", lengths=[7, 0, 20])),
    "layer_packed_and_padded": ("check_layer_packed", {}),
    "layer_decode_after_prefill": ("check_layer_decode", {}),
    "layer_under_torch_compile": ("check_layer_compiled", {}),
}
TOL = 1e-5

WORKER = """
import json, sys
import layer_fused_checks as checks
cases = json.loads(sys.argv[1])
print("RESULT" + json.dumps({name: getattr(checks, fn)(**kw) for name, (fn, kw) in cases.items()}))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(CASES)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_torch_under_interpreter(results, name):
    errs = results[name]
    assert errs, name
    for key, val in errs.items():
        assert val <= TOL, (name, key, val)  # NaN fails too


def test_layer_case_covers_every_parameter(results):
    """The layer cases compare the gradient of every parameter (a missing one would be inf above)."""
    from layer_fused_checks import mixer

    for name, kind, content in (("layer_carve_content", "carve", True), ("layer_carve_no_content", "carve", False),
                                ("layer_gdn2_packed", "gdn2", True)):
        params = {"d" + n for n, _ in mixer(kind, content).named_parameters()}
        assert params <= set(results[name]), (name, params - set(results[name]))


def test_ops_refuse_bad_input():
    import torch

    from hybrid.ops.gated_norm import gated_rms_norm
    from hybrid.ops.gates import gates
    from hybrid.ops.short_conv import conv_qkv, conv_qkv_step

    with pytest.raises(ValueError, match="conv_qkv"):
        conv_qkv(torch.randn(1, 4, 10), torch.randn(10, 4), 2, 2, 2)
    with pytest.raises(ValueError, match="state"):
        conv_qkv_step(torch.randn(2, 12), torch.randn(12, 4), torch.zeros(2, 12, 2), 2, 2, 2)
    with pytest.raises(ValueError, match="dt_bias"):
        gates(torch.randn(1, 3, 2, 4), torch.randn(7), torch.randn(2), torch.randn(1, 3, 2))
    with pytest.raises(ValueError, match="gated_rms_norm"):
        gated_rms_norm(torch.randn(2, 8), torch.randn(2, 4), torch.randn(8))
    with pytest.raises(ValueError, match="backend"):
        gated_rms_norm(torch.randn(2, 8), torch.randn(2, 8), torch.randn(8), backend="cuda")
