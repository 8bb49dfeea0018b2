"""Checks of the fused ops around the CARVE operator (hybrid.ops) and of the layer that uses them, shared by
tests/test_layer_fused_interpret.py (Triton interpreter on CPU, fp32) and tests/test_layer_fused_gpu.py
(CUDA, fp32 and bf16). Each check returns ``{name: relative max error}`` of the Triton path against the
PyTorch one (computed in fp32 from the same inputs), over outputs and every gradient."""

from __future__ import annotations

import torch

from hybrid.blocks import RecurrentMixer, normalize_block
from hybrid.blocks.cache import RecurrentCacheLayer
from hybrid.ops.gated_norm import gated_rms_norm
from hybrid.ops.gates import gates
from hybrid.ops.short_conv import conv_qkv, conv_qkv_step


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    if got.shape != want.shape:
        return float("inf")
    if want.numel() == 0:
        return 0.0
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-6))


def _grads_of(fn, inputs, seed=1):
    """Outputs of ``fn(*inputs)`` and the gradients of a random projection of them w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    outs = [o for o in fn(*leaves) if o is not None]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs)
    loss.backward()
    return outs, [t.grad for t in leaves if t is not None]


def _compare(names_out, names_in, fused, ref, inputs, dtype, params=()):
    """Run ``fused`` on inputs in ``dtype`` (those at the indices ``params`` stay fp32, as parameters do)
    and ``ref`` on the same values in fp32; errors by name."""
    low = [t.to(dtype) if t is not None and i not in params else t for i, t in enumerate(inputs)]
    o1, g1 = _grads_of(fused, low)
    o2, g2 = _grads_of(ref, [t.float() if t is not None else None for t in low])
    errs = {n: rel(a, b) for n, a, b in zip(names_out, o1, o2)}
    errs.update({"d" + n: rel(a, b) for n, a, b in zip(names_in, g1, g2)})
    return errs


def check_conv(device="cpu", dtype=torch.float32, *, H=2, K=8, V=16, W=4, lengths=None, B=2, T=11, state=True,
               normalize=True, seed=0, dpre_blocks=None):
    """conv_qkv (Triton) against its PyTorch definition: q, k, v, final state; dx (a strided slice of a wider
    projection), dweight, dstate. ``dpre_blocks``: token blocks per program of the backward's first pass
    (fewer than the default reach several programs, and their partial sums, at small T)."""
    if dpre_blocks is not None:
        from hybrid.ops import short_conv

        default, short_conv.DPRE_BLOCKS = short_conv.DPRE_BLOCKS, dpre_blocks
        try:
            return check_conv(device, dtype, H=H, K=K, V=V, W=W, lengths=lengths, B=B, T=T, state=state,
                              normalize=normalize, seed=seed)
        finally:
            short_conv.DPRE_BLOCKS = default
    torch.manual_seed(seed)
    C = 2 * H * K + H * V
    cu = None
    if lengths is not None:
        cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), device=device)
        B, T = 1, sum(lengths)
    N = B if cu is None else len(lengths)
    wide = torch.randn(B, T, C + 6, device=device)
    weight = torch.randn(C, W, device=device) * 0.7
    s0 = torch.randn(N, C, W - 1, device=device) if state else None

    def run(backend):
        def fn(wd, w, s):
            return conv_qkv(wd[..., 3:3 + C], w, H, K, V, cu_seqlens=cu, initial_state=s, output_final_state=True,
                            normalize_qk=normalize, backend=backend)
        return fn

    return _compare(["q", "k", "v", "final"], ["x", "weight", "state"], run("triton"), run("torch"),
                    [wide, weight, s0], dtype, params=(1,))


def check_conv_step(device="cpu", dtype=torch.float32, *, H=2, K=8, V=16, W=4, N=3, T=5, seed=0):
    """Decoding token by token with conv_qkv_step (state shifted in place) continues a prefill exactly:
    each step's q, k, v equal the sequence's, and the state ends as the sequence's final state."""
    torch.manual_seed(seed)
    C = 2 * H * K + H * V
    x = torch.randn(N, 2 * T, C, device=device, dtype=dtype)
    weight = torch.randn(C, W, device=device)
    q, k, v, fin = conv_qkv(x, weight, H, K, V, output_final_state=True, backend="torch")
    _, _, _, st = conv_qkv(x[:, :T], weight, H, K, V, output_final_state=True, backend="triton")
    errs = {"q": 0.0, "k": 0.0, "v": 0.0}
    for t in range(T, 2 * T):
        qt, kt, vt = conv_qkv_step(x[:, t], weight, st, H, K, V, backend="triton")
        for n, a, b in (("q", qt, q[:, t]), ("k", kt, k[:, t]), ("v", vt, v[:, t])):
            errs[n] = max(errs[n], rel(a, b))
    errs["state"] = rel(st, fin)
    return errs


def check_gates(device="cpu", dtype=torch.float32, *, B=2, T=70, H=3, K=8, V=16, vector_w=False, seed=0):
    """gates (Triton) against PyTorch: g, w; df (a strided slice), d dt_bias, d A_log, d logits."""
    torch.manual_seed(seed)
    wide = torch.randn(B, T, H * K + 5, device=device) * 3
    dt = torch.randn(H * K, device=device)
    alog = torch.randn(H, device=device)
    wl = torch.randn(B, T, H, V, device=device) if vector_w else torch.randn(B, T, H, device=device)

    def run(backend):
        def fn(f, d, a, w):
            return gates(f[..., 2:2 + H * K].reshape(B, T, H, K), d, a, w, backend=backend)
        return fn

    return _compare(["g", "w"], ["f", "dt_bias", "A_log", "w_logits"], run("triton"), run("torch"),
                    [wide, dt, alog, wl], dtype, params=(1, 2))


def check_gated_norm(device="cpu", dtype=torch.float32, *, shape=(2, 33, 3, 16), seed=0):
    torch.manual_seed(seed)
    x = torch.randn(*shape, device=device)
    gate = torch.randn(*shape, device=device)
    weight = torch.randn(shape[-1], device=device)

    def run(backend):
        return lambda a, b, c: (gated_rms_norm(a, b, c, 1e-6, backend=backend),)

    return _compare(["y"], ["x", "gate", "weight"], run("triton"), run("torch"), [x, gate, weight], dtype,
                    params=(2,))


def mixer(kind="carve", content=True, *, d_model=32, heads=2, head_dim=16, chunk=16, rank=8, device="cpu", seed=0):
    torch.manual_seed(seed)
    block = {"kind": kind, "heads": heads, "head_dim": head_dim, "chunk_size": chunk, "gate_rank": rank}
    if kind == "carve":
        block["content"] = "self" if content else "off"
    m = RecurrentMixer(normalize_block(block), d_model).to(device)
    if m.content:
        with torch.no_grad():
            m.u_up.normal_(0, 0.5)  # zero at init: make the content term count
    return m


def check_layer(device="cpu", *, kind="carve", content=True, B=2, T=37, lengths=None, autocast=None, seed=0,
                **mixer_kw):
    """The layer with the fused ops (ops_backend triton) against the same layer on the PyTorch ops in fp32:
    output and the gradient of the input and of every parameter. ``autocast``: a dtype for the fused run."""
    m = mixer(kind, content, device=device, seed=seed, **mixer_kw)
    torch.manual_seed(seed + 1)
    cu = None
    if lengths is not None:
        cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), device=device)
        B, T = 1, sum(lengths)
    x = torch.randn(B, T, m.o_proj.out_features, device=device)
    gy = torch.randn(B, T, m.o_proj.out_features, device=device)
    res = []
    for backend in ("triton", "torch"):
        m.ops_backend = backend
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        ctx = torch.autocast(device, dtype=autocast, enabled=autocast is not None and backend == "triton")
        with ctx:
            y = m(xi, cu_seqlens=cu)
        (y.float() * gy).sum().backward()
        res.append((y.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (y1, dx1, p1), (y2, dx2, p2) = res
    errs = {"y": rel(y1, y2), "dx": rel(dx1, dx2)}
    for n in p2:
        errs["d" + n] = rel(p1[n], p2[n]) if p1[n] is not None and p2[n] is not None else float("inf")
    return errs


def check_layer_packed(device="cpu", *, lengths=(5, 0, 21, 9), kind="carve", seed=0):
    """Packed sequences (cu_seqlens) and left-padded rows (valid) through the fused layer equal each
    sequence run alone."""
    m = mixer(kind, device=device, seed=seed)
    m.ops_backend = "triton"
    torch.manual_seed(seed + 1)
    xs = [torch.randn(1, n, m.o_proj.out_features, device=device) for n in lengths]
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), device=device)
    T = max(lengths)
    xpad = torch.zeros(len(lengths), T, m.o_proj.out_features, device=device)
    valid = torch.zeros(len(lengths), T, dtype=torch.bool, device=device)
    for i, x in enumerate(xs):  # left padded
        xpad[i, T - x.shape[1]:] = x[0]
        valid[i, T - x.shape[1]:] = True
    with torch.no_grad():
        yp = m(torch.cat(xs, 1), cu_seqlens=cu)
        ys = [m(x) if x.shape[1] else x for x in xs]
        ypad = m(xpad, valid=valid)
    return {"packed": rel(yp, torch.cat(ys, 1)), "padded": rel(ypad[valid], torch.cat(ys, 1)[0])}


def check_layer_decode(device="cpu", *, kind="carve", B=2, prefill=19, steps=6, seed=0):
    """Prefill with a cache, then one token at a time (the convolution state shifted in place): equal to
    one run over the whole sequence."""
    m = mixer(kind, device=device, seed=seed)
    m.ops_backend = "triton"
    torch.manual_seed(seed + 1)
    x = torch.randn(B, prefill + steps, m.o_proj.out_features, device=device)
    with torch.no_grad():
        full = m(x)
        cache = RecurrentCacheLayer()
        outs = [m(x[:, :prefill], cache_layer=cache)]
        for t in range(prefill, prefill + steps):
            outs.append(m(x[:, t:t + 1], cache_layer=cache))
    return {"decode": rel(torch.cat(outs, 1), full)}


def check_layer_compiled(device="cpu", *, B=2, T=20, seed=0, backend=None):
    """The fused layer under torch.compile (the fused ops stay eager, as train.compile runs them): output
    and parameter gradients equal the uncompiled layer's. ``backend``: torch.compile's (default: inductor
    on CUDA, eager elsewhere)."""
    backend = backend or ("inductor" if device == "cuda" else "eager")
    m = mixer("carve", device=device, seed=seed)
    m.ops_backend = "triton"
    torch.manual_seed(seed + 1)
    x = torch.randn(B, T, m.o_proj.out_features, device=device)
    res = []
    for fn in (m, torch.compile(m, backend=backend)):
        m.zero_grad(set_to_none=True)
        y = fn(x)
        y.square().sum().backward()
        res.append((y.detach(), {n: p.grad for n, p in m.named_parameters()}))
    errs = {"y": rel(res[0][0], res[1][0])}
    errs.update({"d" + n: rel(res[1][1][n], g) for n, g in res[0][1].items()})
    return errs
