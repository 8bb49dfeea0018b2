"""The CARVE operator: chunked PyTorch against the float64 token-by-token reference, and the
properties the definition promises (causality, special cases, state carry, varlen, errors)."""

import pytest
import torch

from hybrid.ops.carve import CarveInputError, CarveState, carve, carve_chunked, carve_reference
from hybrid.ops.carve.testing import random_inputs, random_state, rel_err

DECAYS = [0.0, 0.05, 1.0, 5.0, 40.0]  # none .. log-decay down to -5 per step, and far beyond


def run_with_grads(fn, inp, state, chunk_size, content_grad="full", seed=7, **kw):
    """Forward + backward with random cotangents on o and on every part of the final state."""
    leaves = inp.requires_grad_().tensors()
    st_leaves = {}
    if state is not None:
        state = CarveState(state.S.clone().requires_grad_(), state.m_prev.clone().requires_grad_(),
                           state.o_sum.clone().requires_grad_(), state.pos)
        st_leaves = {"S0": state.S, "m_prev0": state.m_prev, "o_sum0": state.o_sum}
    o, fin = fn(*inp.args(), chunk_size=chunk_size, content_grad=content_grad, initial_state=state,
                output_final_state=True, **kw)
    gen = torch.Generator().manual_seed(seed)
    cot = lambda t: torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
    loss = (o * cot(o)).sum() + (fin.S * cot(fin.S)).sum() + (fin.m_prev * cot(fin.m_prev)).sum() \
        + (fin.o_sum * cot(fin.o_sum)).sum()
    names = list(leaves) + list(st_leaves)
    wrt = [*leaves.values(), *st_leaves.values()]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(wrt, grads)]  # unused = zero
    return o.detach(), fin, dict(zip(names, grads))


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("T,C", [(37, 8), (5, 8), (48, 16), (70, 32), (33, 64)])
def test_chunked_equals_reference_float64(decay, T, C):
    inp = random_inputs(B=2, T=T, H=2, K=8, V=6, r=3, decay=decay, seed=T + C)
    state = random_state(2, 2, 8, 6, C)
    o_ref, st_ref, g_ref = run_with_grads(carve_reference, inp, state, C)
    o, st, g = run_with_grads(carve_chunked, inp.to(dtype=torch.float64), state, C)
    assert rel_err(o, o_ref) < 1e-10
    for name in ("S", "m_prev", "o_sum"):
        assert rel_err(getattr(st, name), getattr(st_ref, name)) < 1e-10, name
    assert torch.equal(st.pos, st_ref.pos)
    for name, gr in g_ref.items():
        assert rel_err(g[name], gr) < 1e-10, (name, rel_err(g[name], gr))


@pytest.mark.parametrize("decay", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("vector_w", [False, True])
@pytest.mark.parametrize("content_grad", ["full", "detach"])
def test_chunked_float32_matches_reference(decay, vector_w, content_grad):
    C = 16
    inp = random_inputs(B=2, T=45, H=2, K=8, V=8, r=4, decay=decay, vector_w=vector_w, seed=3)
    state = random_state(2, 2, 8, 8, C)
    o_ref, st_ref, g_ref = run_with_grads(carve_reference, inp, state, C, content_grad)
    st32 = CarveState(state.S.float(), state.m_prev.float(), state.o_sum.float(), state.pos)
    o, st, g = run_with_grads(carve_chunked, inp.to(dtype=torch.float32), st32, C, content_grad)
    assert o.dtype == torch.float32 and st.S.dtype == torch.float32
    assert rel_err(o, o_ref) < 1e-5
    assert rel_err(st.S, st_ref.S) < 1e-5
    for name, gr in g_ref.items():
        assert rel_err(g[name], gr) < 1e-5, (name, rel_err(g[name], gr))


def test_content_grad_detach_changes_only_the_content_path():
    C = 8
    inp = random_inputs(B=1, T=30, H=2, K=4, V=4, r=2, seed=5)
    _, _, g_full = run_with_grads(carve_reference, inp, None, C, "full")
    _, _, g_det = run_with_grads(carve_reference, inp.to(dtype=torch.float64), None, C, "detach")
    # U still learns, but gradients differ once m feeds back through the outputs
    assert g_det["u_up"].abs().sum() > 0 and g_det["u_down"].abs().sum() > 0
    assert rel_err(g_det["q"], g_full["q"]) > 1e-6


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
@pytest.mark.parametrize("vector_w", [False, True])
def test_gradcheck(fn, vector_w):
    inp = random_inputs(B=1, T=7, H=1, K=3, V=2, r=2, decay=1.0, vector_w=vector_w, seed=11)
    inp.requires_grad_()
    state = random_state(1, 1, 3, 2, 4, seed=2)
    S0 = state.S.clone().requires_grad_()

    def f(q, k, v, g, a, w, ud, uu, S):
        st = CarveState(S, state.m_prev, state.o_sum, state.pos)
        o, fin = fn(q, k, v, g, a, w, ud, uu, chunk_size=4, initial_state=st, output_final_state=True)
        return o, fin.S, fin.m_prev

    assert torch.autograd.gradcheck(f, (*inp.args(), S0), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
def test_causality_bit_identical(fn):
    C, T = 8, 29
    inp = random_inputs(B=1, T=T, H=2, K=4, V=4, r=2, dtype=torch.float32, seed=9)
    o1, _ = fn(*inp.args(), chunk_size=C)
    for t in (0, 7, 8, 13, 28):
        other = random_inputs(B=1, T=T, H=2, K=4, V=4, r=2, dtype=torch.float32, seed=100 + t)
        mixed = inp.to(dtype=torch.float32)
        for name in ("q", "k", "v", "g", "a", "w"):
            getattr(mixed, name)[:, t:] = getattr(other, name)[:, t:]
        o2, _ = fn(*mixed.args(), chunk_size=C)
        assert torch.equal(o1[:, :t], o2[:, :t]), t
        assert not torch.equal(o1[:, t:], o2[:, t:])


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
def test_zero_u_up_equals_gdn2_with_broadcast_scalar_write_bitwise(fn):
    inp = random_inputs(B=2, T=40, H=2, K=6, V=5, r=3, dtype=torch.float32, seed=4)
    u_up0 = torch.zeros_like(inp.u_up)
    o_carve, s_carve = fn(inp.q, inp.k, inp.v, inp.g, inp.a, inp.w, inp.u_down, u_up0, chunk_size=16,
                          output_final_state=True)
    w_vec = inp.w.unsqueeze(-1).expand(*inp.w.shape, inp.v.shape[-1]).contiguous()
    o_gdn2, s_gdn2 = fn(inp.q, inp.k, inp.v, inp.g, inp.a, w_vec, None, None, chunk_size=16,
                        output_final_state=True)
    assert torch.equal(o_carve, o_gdn2)
    assert torch.equal(s_carve.S, s_gdn2.S)


def _kda_recurrence(q, k, v, g, beta, scale):
    """Kimi Delta Attention written on its own: S <- exp(g) S; S += beta k (v - S^T k)^T; o = S^T q s."""
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], dtype=q.dtype)
    outs = []
    for t in range(T):
        S = S * torch.exp(g[:, t]).unsqueeze(-1)
        pred = torch.einsum("bhkv,bhk->bhv", S, k[:, t])
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, t], beta[:, t].unsqueeze(-1) * (v[:, t] - pred))
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t] * scale))
    return torch.stack(outs, 1)


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
@pytest.mark.parametrize("mode", ["kda", "gdn"])
def test_special_cases_kda_and_gdn(fn, mode):
    inp = random_inputs(B=1, T=33, H=2, K=6, V=4, decay=2.0, content=False, seed=21)
    beta = inp.w  # [B, T, H] in (0, 1)
    g = inp.g
    if mode == "gdn":  # GDN: one decay per head, equal across the K channels
        g = g[..., :1].expand_as(g).contiguous()
    a = torch.logit(beta).unsqueeze(-1).expand_as(inp.q).contiguous()  # b = sigmoid(a) = beta * 1
    o, _ = fn(inp.q, inp.k, inp.v, g, a, beta, None, None, chunk_size=8)
    ref = _kda_recurrence(inp.q, inp.k, inp.v, g, beta, inp.q.shape[-1] ** -0.5)
    assert rel_err(o, ref) < 1e-12


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
@pytest.mark.parametrize("split", [3, 8, 13, 16])
def test_prefill_then_token_by_token_equals_one_call(fn, split):
    C, T = 8, 27
    inp = random_inputs(B=2, T=T, H=2, K=4, V=5, r=2, dtype=torch.float32, seed=split)
    o_full, st_full = fn(*inp.args(), chunk_size=C, output_final_state=True)
    o_pre, st = fn(*(x[:, :split] for x in inp.args()[:6]), inp.u_down, inp.u_up, chunk_size=C,
                   output_final_state=True)
    outs = [o_pre]
    for t in range(split, T):
        o_t, st = fn(*(x[:, t : t + 1] for x in inp.args()[:6]), inp.u_down, inp.u_up, chunk_size=C,
                     initial_state=st, output_final_state=True)
        outs.append(o_t)
    o_inc = torch.cat(outs, dim=1)
    assert rel_err(o_inc, o_full) < 1e-6
    assert rel_err(st.S, st_full.S) < 1e-6 and rel_err(st.m_prev, st_full.m_prev) < 1e-6
    assert torch.equal(st.pos, st_full.pos)


def test_chunked_continuation_from_mid_chunk_state():
    """A call that starts mid-chunk (pos != 0) continues the chunk count and the content mean."""
    C = 8
    inp = random_inputs(B=3, T=30, H=2, K=4, V=4, r=2, seed=12)
    state = random_state(3, 2, 4, 4, C, seed=3)
    state.pos = torch.tensor([0, 5, 7])
    o_ref, s_ref = carve_reference(*inp.args(), chunk_size=C, initial_state=state, output_final_state=True)
    o, s = carve_chunked(*inp.args(), chunk_size=C, initial_state=state, output_final_state=True)
    assert rel_err(o, o_ref) < 1e-10 and rel_err(s.S, s_ref.S) < 1e-10 and rel_err(s.o_sum, s_ref.o_sum) < 1e-10
    assert torch.equal(s.pos, s_ref.pos)


@pytest.mark.parametrize("fn", [carve_reference, carve_chunked], ids=["reference", "chunked"])
def test_varlen_packed_equals_one_by_one(fn):
    C = 8
    lens = [5, 17, 1, 12]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    inp = random_inputs(B=1, T=sum(lens), H=2, K=4, V=3, r=2, seed=31)
    state = random_state(len(lens), 2, 4, 3, C)
    o, st = fn(*inp.args(), chunk_size=C, cu_seqlens=cu, initial_state=state, output_final_state=True)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one = CarveState(state.S[i : i + 1], state.m_prev[i : i + 1], state.o_sum[i : i + 1], state.pos[i : i + 1])
        o_i, st_i = fn(*(x[:, s:e] for x in inp.args()[:6]), inp.u_down, inp.u_up, chunk_size=C,
                       initial_state=one, output_final_state=True)
        assert rel_err(o[:, s:e], o_i) < 1e-12
        assert rel_err(st.S[i : i + 1], st_i.S) < 1e-12 and torch.equal(st.pos[i : i + 1], st_i.pos)


def test_dispatch_torch_backend_on_cpu_matches_chunked():
    inp = random_inputs(B=1, T=20, H=2, K=4, V=4, r=2, dtype=torch.float32)
    o1, _ = carve(*inp.args(), chunk_size=8)
    o2, _ = carve_chunked(*inp.args(), chunk_size=8)
    assert torch.equal(o1, o2)
    o3, _ = carve(*inp.args(), chunk_size=8, backend="reference")
    assert rel_err(o3, o1) < 1e-5


# ---------------------------------------------------------------- bad input gets a clear error
def _bad(**changes):
    inp = random_inputs(B=1, T=6, H=2, K=4, V=3, r=2, dtype=torch.float32)
    kw = dict(zip(["q", "k", "v", "g", "a", "w", "u_down", "u_up"], inp.args()))
    opts = {"chunk_size": 8}
    for key, val in changes.items():
        (opts if key in ("chunk_size", "content_grad", "cu_seqlens", "initial_state", "backend") else kw)[key] = val
    return kw, opts


@pytest.mark.parametrize("changes,match", [
    (dict(q=torch.randn(1, 6, 2)), r"q must be \[B, T, H, K\]"),
    (dict(k=torch.randn(1, 6, 2, 5)), "k must have the shape of q"),
    (dict(v=torch.randn(1, 5, 2, 3)), "v must be"),
    (dict(g=torch.randn(1, 6, 2, 3)), "g must be"),
    (dict(w=torch.rand(1, 6, 3)), "w must be"),
    (dict(q=torch.randint(0, 3, (1, 6, 2, 4))), "q must be a floating tensor"),
    (dict(chunk_size=0), "chunk_size must be a positive integer"),
    (dict(chunk_size=-4), "chunk_size must be a positive integer"),
    (dict(content_grad="partial"), "content_grad must be one of"),
    (dict(u_up=None), "both be given"),
    (dict(u_down=torch.randn(2, 2, 4)), "u_down must be"),
    (dict(u_up=torch.randn(2, 4, 5)), "u_up must be"),
    (dict(cu_seqlens=torch.tensor([0, 3, 5])), "cu_seqlens must start at 0, end at T=6"),
    (dict(cu_seqlens=torch.tensor([0.0, 6.0])), "cu_seqlens must be a 1-D int"),
    (dict(initial_state=CarveState.zeros(2, 2, 4, 3)), r"initial_state.S must be \[N, H, K, V\]"),
    (dict(backend="cuda-magic"), "backend must be one of"),
])
def test_bad_input_raises_clear_error(changes, match):
    kw, opts = _bad(**changes)
    with pytest.raises(CarveInputError, match=match):
        carve(*kw.values(), **opts)


def test_head_dim_over_256_is_refused():
    q = torch.randn(1, 2, 1, 257)
    w = torch.rand(1, 2, 1)
    with pytest.raises(CarveInputError, match="<= 256"):
        carve_chunked(q, q, torch.randn(1, 2, 1, 4), -torch.rand(1, 2, 1, 257), q, w)


def test_nan_guard_is_opt_in(monkeypatch):
    inp = random_inputs(B=1, T=6, H=1, K=4, V=3, r=2, dtype=torch.float32)
    inp.v[0, 2, 0, 1] = float("nan")
    o, _ = carve_chunked(*inp.args(), chunk_size=4)  # default: no scan (it would cost a sync)
    assert torch.isnan(o).any()
    monkeypatch.setenv("HYBRID_CHECK_FINITE", "1")
    with pytest.raises(CarveInputError, match="v contains NaN"):
        carve_chunked(*inp.args(), chunk_size=4)
    inp2 = random_inputs(B=1, T=6, H=1, K=4, V=3, r=2, dtype=torch.float32)
    inp2.g[0, 0, 0, 0] = 0.5
    with pytest.raises(CarveInputError, match="must be <= 0"):
        carve_chunked(*inp2.args(), chunk_size=4)
