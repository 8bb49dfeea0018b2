"""Correctness harness for the Triton CARVE kernels against the float64 oracles.

Used by tests/test_carve_triton_cpu.py (TRITON_INTERPRET=1) and tests/test_carve_triton_gpu.py (run
by scripts/gpu-check). ``run_case`` draws fresh random inputs (never zeros), poisons every
kernel output with NaN first, runs forward and backward (including gradients through the final
state when asked) and returns relative RMS errors ||x - ref|| / ||ref|| per tensor.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import replace

import torch
import torch.nn.functional as F

from . import layout
from .chunk import carve_triton
from .chunked import carve_chunked
from .decode import carve_decode_triton
from .inputs import CarveState, validate
from .reference import carve_reference
from .settings import choose_settings
from .testing import rel_err as rel  # relative RMS error; non-finite results count as inf


@contextlib.contextmanager
def poisoned():
    """Kernel outputs start as NaN inside this block, so an element a kernel forgot to write fails."""
    layout.POISON = True
    try:
        yield
    finally:
        layout.POISON = False


def make_inputs(B, T, H, K, V, r, *, content=True, vec_w=False, decay=1.0, dtype=torch.float32, device="cpu",
                gen=None, v_scale=1.0):
    """Random CARVE inputs like a block produces: L2-normalised q/k, log-decay g <= 0 with a mean
    strength ``decay`` per step (uniform in [0, 2*decay]), gate logits, write gates in (0, 1); values
    standard normal times ``v_scale``."""
    def rnd(*s):
        return torch.randn(*s, generator=gen, device=device)

    def uni(*s):
        return torch.rand(*s, generator=gen, device=device)

    q = F.normalize(rnd(B, T, H, K), dim=-1)
    k = F.normalize(rnd(B, T, H, K), dim=-1)
    v = rnd(B, T, H, V) * v_scale
    g = -decay * 2.0 * uni(B, T, H, K)
    a = rnd(B, T, H, K)
    w = uni(B, T, H, V) if vec_w else uni(B, T, H)
    ud = rnd(H, r, V) * (1.0 / math.sqrt(V)) if content else None
    uu = rnd(H, K, r) * (2.0 / math.sqrt(r)) if content else None
    xs = [q, k, v, g, a, w]
    xs = [x.to(dtype) for x in xs]
    return xs + [ud, uu]


def random_state(N, H, K, V, C, *, device="cpu", gen=None):
    S = torch.randn(N, H, K, V, generator=gen, device=device) * 0.3
    m = torch.randn(N, H, V, generator=gen, device=device) * 0.3
    pos = torch.randint(0, C, (N,), generator=gen, device=device)
    o_sum = torch.randn(N, H, V, generator=gen, device=device) * 0.3 * pos.view(N, 1, 1).float().sqrt()
    return CarveState(S, m, o_sum, pos)


def run_case(*, B=2, T=37, H=2, K=20, V=24, r=4, C=64, content=True, vec_w=False, decay=1.0,
             dtype=torch.float32, device="cpu", init_state=False, lengths=None, final_grad=False,
             content_grad="full", oracle="reference", seed=0, backward=True, v_scale=1.0,
             settings: dict | None = None) -> dict:
    """Runs one case of ``carve_triton``. ``lengths`` packs varlen sequences (B becomes 1, T = sum(lengths)).

    ``settings``: fields of CarveSettings to change from what ``choose_settings`` picks for the case
    (e.g. ``{"kernel": "wide"}``, or in the interpreter the GPU's bf16 choices); also reported, as
    ``settings`` in the result."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    cu = None
    if lengths is not None:
        B, T = 1, int(sum(lengths))
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64, device=device)
    N = B if cu is None else len(lengths)
    xs = make_inputs(B, T, H, K, V, r, content=content, vec_w=vec_w, decay=decay, dtype=dtype, device=device,
                     gen=gen, v_scale=v_scale)
    st = random_state(N, H, K, V, C, device=device, gen=gen) if init_state else None
    need_state = final_grad or init_state
    leaves = [x.clone().requires_grad_(backward) if x is not None else None for x in xs]
    st_t = None
    if st is not None:
        st_t = CarveState(st.S.clone().requires_grad_(backward), st.m_prev.clone().requires_grad_(backward),
                          st.o_sum.clone().requires_grad_(backward), st.pos.clone())
    shapes = validate(*xs, chunk_size=C, content_grad=content_grad, initial_state=st, cu_seqlens=cu)
    chosen = replace(choose_settings(shapes, dtype, torch.device(device), C), **(settings or {}))
    with poisoned():
        o, fin = carve_triton(*leaves, scale=None, chunk_size=C, content_grad=content_grad, initial_state=st_t,
                              output_final_state=need_state, cu_seqlens=cu, settings=chosen)
    leaves64 = [x.detach().double().requires_grad_(backward) if x is not None else None for x in xs]
    st64 = None
    if st is not None:
        st64 = CarveState(st.S.double().requires_grad_(backward), st.m_prev.double().requires_grad_(backward),
                          st.o_sum.double().requires_grad_(backward), st.pos.clone())
    fn = carve_reference if oracle == "reference" else carve_chunked
    o64, fin64 = fn(*leaves64, scale=None, chunk_size=C, content_grad=content_grad, initial_state=st64,
                    output_final_state=need_state, cu_seqlens=cu)
    out = {"o": rel(o, o64), "o_dtype_ok": float(o.dtype == xs[0].dtype), "settings": chosen.as_dict()}
    if need_state:
        out["S_final"] = rel(fin.S, fin64.S)
        out["m_final"] = rel(fin.m_prev, fin64.m_prev)
        out["osum_final"] = rel(fin.o_sum, fin64.o_sum) if fin64.o_sum.abs().sum() > 0 else (
            fin.o_sum.abs().max().item())
        out["pos_ok"] = float(torch.equal(fin.pos.cpu(), fin64.pos.cpu()))
    if not backward:
        return out
    do = torch.randn(o.shape, generator=gen, device=device)
    loss = (o.float() * do).sum()
    loss64 = (o64 * do.double()).sum()
    if final_grad:
        dS = torch.randn(fin.S.shape, generator=gen, device=device)
        dm = torch.randn(fin.m_prev.shape, generator=gen, device=device)
        dos = torch.randn(fin.o_sum.shape, generator=gen, device=device)
        loss = loss + (fin.S * dS).sum() + (fin.m_prev * dm).sum() + (fin.o_sum * dos).sum()
        loss64 = loss64 + (fin64.S * dS.double()).sum() + (fin64.m_prev * dm.double()).sum() + (
            fin64.o_sum * dos.double()).sum()
    with poisoned():
        loss.backward()
    loss64.backward()
    names = ["q", "k", "v", "g", "a", "w", "u_down", "u_up"]
    for name, x, y in zip(names, leaves, leaves64):
        if x is not None:
            out["d" + name] = rel(x.grad, y.grad)
    if st is not None:
        out["dS0"] = rel(st_t.S.grad, st64.S.grad)
        out["dm0"] = rel(st_t.m_prev.grad, st64.m_prev.grad)
        out["dos0"] = rel(st_t.o_sum.grad, st64.o_sum.grad)
    return out


def decode_case(*, N=3, H=2, K=20, V=24, r=4, C=16, steps=40, content=True, vec_w=False, decay=1.0,
                dtype=torch.float32, device="cpu", seed=0) -> dict:
    """Prefill with carve_triton then decode token by token (carve_decode_triton); compare with one long
    float64 call."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    T0 = 29
    xs = make_inputs(N, T0 + steps, H, K, V, r, content=content, vec_w=vec_w, decay=decay, dtype=dtype,
                     device=device, gen=gen)
    q, k, v, g, a, w, ud, uu = xs
    o_pre, st = carve_triton(q[:, :T0], k[:, :T0], v[:, :T0], g[:, :T0], a[:, :T0], w[:, :T0], ud, uu,
                             scale=None, chunk_size=C, output_final_state=True)
    outs = [o_pre]
    for t in range(T0, T0 + steps):
        o_t, st = carve_decode_triton(q[:, t], k[:, t], v[:, t], g[:, t], a[:, t], w[:, t], ud, uu, st,
                                      scale=None, chunk_size=C)
        outs.append(o_t.unsqueeze(1))
    o = torch.cat(outs, 1)
    x64 = [x.double() if x is not None else None for x in xs]
    o64, st64 = carve_chunked(*x64, chunk_size=C, output_final_state=True)
    return {"o": rel(o, o64), "S_final": rel(st.S, st64.S), "m_final": rel(st.m_prev, st64.m_prev),
            "osum_final": rel(st.o_sum, st64.o_sum), "pos_ok": float(torch.equal(st.pos.cpu(), st64.pos.cpu()))}


def record_errors(name: str, errs: dict, filename: str) -> None:
    """Append one case's errors to $OUT/<filename> (or ./out), so that a run cut by a time limit still reports."""
    import json

    d = os.environ.get("OUT", "out")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, filename), "a") as f:
        f.write(json.dumps({"case": name, **errs}) + "\n")


def assert_within(errs: dict, o_tol: float, g_tol: float) -> None:
    """Flags (``*_ok``) must be 1, gradients (``d*``) within g_tol, outputs and states within o_tol."""
    for key, val in errs.items():
        if key == "settings":
            continue
        if key.endswith("_ok"):
            assert val == 1.0, (key, errs)
        elif key.startswith("d"):
            assert val <= g_tol, (key, errs)
        else:
            assert val <= o_tol, (key, errs)
    assert {"dq", "dk", "dv", "dg", "da", "dw"} <= set(errs), errs
