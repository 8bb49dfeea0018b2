"""CarveSettings: what choose_settings picks per shape, dtype and device, its validation, and that no
experiment switch reads the environment."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from hybrid.ops.carve import settings as carve_settings  # noqa: E402
from hybrid.ops.carve.inputs import CarveInputError, CarveShapes  # noqa: E402
from hybrid.ops.carve.settings import CarveSettings, check_value_split, choose_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def shapes(N=2, H=2, K=128, V=128, r=16):
    return CarveShapes(B=N, T=100, H=H, K=K, V=V, r=r, vector_w=False, n_seq=N)


@pytest.fixture
def h200(monkeypatch):
    """choose_settings as on a GPU with 132 multiprocessors (no GPU is touched)."""
    monkeypatch.setattr(carve_settings, "interpreting", lambda: False)
    monkeypatch.setattr(carve_settings, "_multiprocessors", lambda index: 132)


def test_bf16_gpu_settings(h200):
    st = choose_settings(shapes(), torch.bfloat16, CUDA, 64)
    assert st.as_dict() == dict(
        kernel="chunk", precision="tf32", low_precision=True, inverse_precision="tf32", fp16_decayed=True,
        saved_state="bf16", saved_gate="bf16", tile_rows=32, value_split=8, sweep_warps=8, prep_warps=4,
        bprep_warps=4, post_warps=8, par_maxnreg=128, prep_maxnreg=168, post_columns=64, du_slots=128,
        num_stages=1)
    assert st.state_dtype == torch.bfloat16 and st.gate_dtype == torch.bfloat16
    assert choose_settings(shapes(), torch.bfloat16, CUDA, 16).tile_rows == 16


def test_value_split_by_shape(h200):
    """The largest split of 8 and 4 whose nv N H programs fit one per multiprocessor, each keeping >= 16
    value columns with a valid one in the last; 1 where none does (and off the GPU)."""
    split = lambda **kw: choose_settings(shapes(**kw), torch.bfloat16, CUDA, 64).value_split
    assert split(N=1, H=8) == 8  # 64 programs of 16 columns
    assert split(N=1, H=16) == 8  # 128 programs <= 132
    assert split(N=2, H=16) == 4  # 128 programs
    assert split(N=4, H=16) == 1  # 64 pairs: no split of 2 (see VALUE_SPLITS)
    assert split(N=3, H=11) == 4  # 132 programs
    assert split(N=4, H=8) == 4  # 32 pairs
    assert split(N=8, H=8) == 1  # 64 pairs
    assert split(N=8, H=16) == 1  # 128 pairs: one program each (the T = 4096, B = 8 table row)
    assert split(N=1, H=16, V=64) == 4  # 16 columns per program at most
    assert split(N=1, H=16, V=80) == 1  # 8 or 4 programs would leave the last (112.. or 96..) without a valid column
    assert split(N=1, H=16, V=32) == 1
    assert split(N=1, H=16, V=16) == 1
    assert choose_settings(shapes(), torch.bfloat16, torch.device("cpu"), 64).value_split == 1


def test_value_split_is_checked_against_the_shape(h200):
    """A split that the shape or the device cannot run is refused before any kernel runs."""
    st = lambda nv: replace(choose_settings(shapes(), torch.bfloat16, CUDA, 64), value_split=nv)
    check_value_split(st(8), shapes(N=1, H=16), CUDA)  # fits: no error
    with pytest.raises(CarveInputError, match="columns per program"):
        check_value_split(st(8), shapes(N=1, H=16, V=64), CUDA)
    with pytest.raises(CarveInputError, match="multiprocessors"):
        check_value_split(st(8), shapes(N=2, H=16), CUDA)  # 256 programs would wait for each other forever
    check_value_split(st(8), shapes(N=2, H=16, r=0), CUDA)  # content off: the programs never wait
    with pytest.raises(CarveInputError, match="needs a GPU"):
        check_value_split(st(4), shapes(), torch.device("cpu"))


def test_wide_kernels_by_head_and_dtype(h200):
    pick = lambda dtype, **kw: choose_settings(shapes(**kw), dtype, CUDA, 64)
    assert pick(torch.bfloat16).kernel == "chunk"
    assert pick(torch.bfloat16, K=256, V=256).kernel == "wide"
    fp32 = pick(torch.float32)
    assert fp32.kernel == "wide" and not fp32.low_precision and fp32.value_split == 1  # content on: no split
    assert pick(torch.float32, r=0).value_split == 4  # content off: value slices are independent
    small = pick(torch.float16, K=64, V=64)
    assert small.kernel == "chunk" and small.saved_state == "fp32" and not small.fp16_decayed


def test_interpreter_settings(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    st = choose_settings(shapes(K=16, V=16), torch.float32, torch.device("cpu"), 64)
    assert (st.kernel, st.precision, st.low_precision, st.value_split, st.par_maxnreg) == ("chunk", "ieee", False, 1, 0)


def test_settings_are_validated():
    base = choose_settings(shapes(K=16, V=16), torch.float32, torch.device("cpu"), 32)
    for bad in (dict(kernel="v3"), dict(tile_rows=48), dict(value_split=3), dict(saved_state="fp8"),
                dict(precision="tf32x3"), dict(post_columns=8), dict(du_slots=0), dict(value_split=2)):
        with pytest.raises(CarveInputError, match="CarveSettings"):
            replace(base, **bad)
    with pytest.raises(CarveInputError, match="chunk_size"):
        choose_settings(shapes(), torch.bfloat16, CUDA, 8)
    with pytest.raises(AttributeError):
        base.tile_rows = 16  # frozen
    assert isinstance(base, CarveSettings)


def test_only_documented_environment_variables_are_read():
    """Tuning is data: the package reads no HYBRID_* variable but the NaN guard and the peak-FLOPs
    override (docs/kernels.md lists them)."""
    names = set()
    for path in (ROOT / "hybrid").rglob("*.py"):
        names |= set(re.findall(r"HYBRID_[A-Z0-9_]+", path.read_text()))
    assert names <= {"HYBRID_CHECK_FINITE", "HYBRID_PEAK_FLOPS"}, names
