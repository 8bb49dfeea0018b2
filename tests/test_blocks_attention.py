import pytest
import torch

from hybrid.blocks import AttentionBackendError, available_backends, causal_attention, masked_attention
from hybrid.blocks.attention import apply_rope, rope_angles
from hybrid.blocks.attention_backends import causal_mask

CASES = [  # (B, T, H, G, D, window, cu_seqlens)
    (2, 19, 4, 2, 8, None, None),
    (2, 19, 4, 4, 8, 5, None),
    (1, 23, 4, 1, 16, None, [0, 6, 6, 15, 23]),
    (1, 23, 2, 2, 8, 4, [0, 9, 23]),
]


def _inputs(B, T, H, G, D, device="cpu", dtype=torch.float32):
    q = torch.randn(B, T, H, D, device=device, dtype=dtype)
    k = torch.randn(B, T, G, D, device=device, dtype=dtype)
    v = torch.randn(B, T, G, D, device=device, dtype=dtype)
    return q, k, v


def _naive(q, k, v, window, cu):
    """Loop definition: query i sees keys j <= i of its own document, i - j < window."""
    B, T, H, D = q.shape
    G = k.shape[2]
    doc = torch.zeros(T, dtype=torch.long)
    if cu is not None:
        for n in range(len(cu) - 1):
            doc[cu[n]:cu[n + 1]] = n
    out = torch.zeros(B, T, H, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // G)
            for i in range(T):
                js = [j for j in range(i + 1) if doc[j] == doc[i] and (window is None or i - j < window)]
                s = torch.stack([(q[b, i, h].double() @ k[b, j, g].double()) * D ** -0.5 for j in js])
                p = torch.softmax(s, 0)
                out[b, i, h] = sum(p[n] * v[b, j, g].double() for n, j in enumerate(js))
    return out


@pytest.mark.parametrize("case", CASES)
def test_math_matches_definition(case):
    B, T, H, G, D, window, cu = case
    q, k, v = _inputs(B, T, H, G, D)
    cu_t = torch.tensor(cu) if cu is not None else None
    o = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="math")
    torch.testing.assert_close(o.double(), _naive(q, k, v, window, cu), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["sdpa", "sdpa-math", "flex", "auto"])
def test_cpu_backends_match_math(case, backend):
    B, T, H, G, D, window, cu = case
    q, k, v = _inputs(B, T, H, G, D)
    cu_t = torch.tensor(cu) if cu is not None else None
    ref = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="math")
    if backend == "sdpa-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            o = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="sdpa")
    else:
        if backend == "flex" and "flex" not in available_backends("cpu", q.dtype):
            pytest.skip("FlexAttention not in this torch")
        o = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend=backend)
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=2e-5)


def test_backward_matches_math():
    q, k, v = _inputs(1, 17, 4, 2, 8)
    cu = torch.tensor([0, 5, 17])
    grads = {}
    for backend in ("math", "sdpa"):
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        causal_attention(qq, kk, vv, window=4, cu_seqlens=cu, backend=backend).square().sum().backward()
        grads[backend] = (qq.grad, kk.grad, vv.grad)
    for a, b in zip(grads["math"], grads["sdpa"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_masked_attention_equals_causal_and_handles_empty_rows(backend):
    q, k, v = _inputs(2, 11, 4, 2, 8)
    allowed = causal_mask(11, "cpu", window=3).expand(2, 11, 11).clone()
    ref = causal_attention(q, k, v, window=3, backend="math")
    torch.testing.assert_close(masked_attention(q, k, v, allowed, backend=backend), ref, atol=2e-5, rtol=2e-5)
    allowed[1, 4] = False  # a query that sees nothing gets exactly zero, not NaN
    o = masked_attention(q, k, v, allowed, backend=backend)
    assert torch.isfinite(o).all() and (o[1, 4] == 0).all()


def test_unavailable_backend_is_a_clear_error():
    q, k, v = _inputs(1, 4, 2, 2, 8)
    with pytest.raises(AttentionBackendError, match="flash_attn"):
        causal_attention(q, k, v, backend="flash_attn")
    with pytest.raises(AttentionBackendError, match="unknown attention backend"):
        causal_attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="multiple"):
        causal_attention(q, k[:, :, :1].expand(1, 4, 3, 8), v[:, :, :1].expand(1, 4, 3, 8), backend="math")


def test_flex_refuses_small_head_dim_on_cuda_only():
    assert "flex" not in available_backends("cuda", torch.bfloat16, 8)
    assert "flex" in available_backends("cuda", torch.bfloat16, 16)
    assert "flex" in available_backends("cpu", torch.float32, 8)


@pytest.mark.parametrize("case", CASES)
def test_flex_compile_failure_falls_back_to_sdpa(case, monkeypatch):
    """When the compiler cannot build FlexAttention's kernel for a shape (seen on the H200 for T = 70,
    head_dim 32), that shape runs through SDPA with a warning, and is not compiled again."""
    import hybrid.blocks.attention_backends as ab

    if "flex" not in available_backends("cpu", torch.float32):
        pytest.skip("FlexAttention not in this torch")

    class NoValidChoices(RuntimeError):
        pass

    NoValidChoices.__module__ = "torch._inductor.exc"  # as raised by torch.compile's inductor
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise NoValidChoices("no valid choice")

    monkeypatch.setattr(ab, "_flex_fn", lambda device: broken)
    monkeypatch.setattr(ab, "_flex_refused", set())
    B, T, H, G, D, window, cu = case
    q, k, v = _inputs(B, T, H, G, D)
    cu_t = torch.tensor(cu) if cu is not None else None
    ref = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="math")
    with pytest.warns(UserWarning, match="runs through SDPA instead"):
        o = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="flex")
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=2e-5)
    o2 = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="flex")
    torch.testing.assert_close(o2, ref, atol=2e-5, rtol=2e-5)
    assert len(calls) == 1  # the refused shape is remembered

    def other_bug(*args, **kwargs):
        raise ValueError("a real error")

    monkeypatch.setattr(ab, "_flex_fn", lambda device: other_bug)
    ab._flex_refused.clear()
    with pytest.raises(ValueError, match="a real error"):  # not a compile failure: not hidden
        causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="flex")


def test_rope_relative():
    """RoPE scores depend only on the position difference."""
    q, k, _ = _inputs(1, 1, 1, 1, 16)
    def score(pq, pk):
        cq, sq = rope_angles(torch.tensor([[pq]]), 16, 10000.0)
        ck, sk = rope_angles(torch.tensor([[pk]]), 16, 10000.0)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()
    torch.testing.assert_close(score(7, 3), score(104, 100), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(7, 3), score(7, 4))


# ------------------------------------------------------------------------------------------- GPU
GPU_BACKENDS = ["sdpa", "flex", "varlen", "flash_attn", "auto"]


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES + [(2, 300, 8, 2, 64, None, None), (1, 400, 8, 2, 64, 128, [0, 130, 400])])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_backends_match_math(case, backend, dtype):
    B, T, H, G, D, window, cu = case
    if backend not in available_backends("cuda", dtype, D) + ["auto"]:
        pytest.skip(f"{backend} not available here")
    q, k, v = _inputs(B, T, H, G, D, device="cuda", dtype=dtype)
    cu_t = torch.tensor(cu, device="cuda") if cu is not None else None
    ref = causal_attention(q.float(), k.float(), v.float(), window=window, cu_seqlens=cu_t, backend="math")
    o = causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend=backend)
    assert o.dtype == dtype
    torch.testing.assert_close(o.float(), ref, atol=2e-2, rtol=2e-2)
    # gradients too
    qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
    causal_attention(qq, kk, vv, window=window, cu_seqlens=cu_t, backend=backend).float().sum().backward()
    qr, kr, vr = (x.float().clone().requires_grad_() for x in (q, k, v))
    causal_attention(qr, kr, vr, window=window, cu_seqlens=cu_t, backend="math").sum().backward()
    for a, b in ((qq, qr), (kk, kr), (vv, vr)):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
def test_cuda_sdpa_uses_cudnn_or_flash():
    """In bf16 the sdpa route must run without the math fallback (cuDNN or FlashAttention kernels)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _inputs(2, 256, 8, 2, 64, device="cuda", dtype=torch.bfloat16)
    ref = causal_attention(q, k, v, backend="sdpa")
    for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        with sdpa_kernel(be):
            o = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True)
        torch.testing.assert_close(o.transpose(1, 2), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "varlen", "flash_attn", "sdpa", "auto"])
def test_cuda_packed_layout_changes_every_call(backend):
    """Training packs a new document layout into the same total length every step: a compiled kernel
    must follow each call's documents, not keep an earlier call's (documents longer than a block)."""
    if backend not in available_backends("cuda", torch.bfloat16, 64) + ["auto"]:
        pytest.skip(f"{backend} not available here")
    gen = torch.Generator().manual_seed(0)
    T = 1536
    for _ in range(4):
        cu = [0, *sorted((torch.randperm(T - 1, generator=gen)[:5] + 1).tolist()), T]
        q, k, v = _inputs(1, T, 8, 2, 64, device="cuda", dtype=torch.bfloat16)
        cu_t = torch.tensor(cu, device="cuda")
        ref = causal_attention(q.float(), k.float(), v.float(), cu_seqlens=cu_t, backend="math")
        o = causal_attention(q, k, v, cu_seqlens=cu_t, backend=backend)
        torch.testing.assert_close(o.float(), ref, atol=2e-2, rtol=2e-2, msg=lambda m, cu=cu: f"layout {cu}: {m}")


def test_packed_block_mask_from_boundaries_matches_create_block_mask():
    """The packed-document block mask is built from the document boundaries (no T x T evaluation); its
    block structure must match torch's create_block_mask on the same mask: every block with an allowed
    pair is visited, and the fully allowed blocks are exactly the same."""
    import random

    fa = pytest.importorskip("torch.nn.attention.flex_attention")
    from hybrid.blocks.attention_backends import _flex_doc_block_mask

    def full_blocks(m):
        n, idx = m.full_kv_num_blocks[0, 0], m.full_kv_indices[0, 0]
        d = torch.zeros(n.numel(), idx.shape[-1], dtype=torch.bool)
        for i in range(n.numel()):
            d[i, idx[i, : n[i]].long()] = True
        return d

    r = random.Random(0)
    for _ in range(10):
        T = r.choice([300, 511, 640, 1000])
        cu = (0, *sorted(r.sample(range(1, T), r.randint(0, 6))), T)
        window = r.choice([None, None, 50, 200])
        doc = torch.searchsorted(torch.tensor(cu[1:]), torch.arange(T), right=True)

        def mask_mod(b, h, qi, ki, doc=doc, window=window):
            ok = (qi >= ki) & (doc[qi] == doc[ki])
            return ok if window is None else ok & (qi - ki < window)

        ref = fa.create_block_mask(mask_mod, None, None, T, T, device="cpu")
        mine = _flex_doc_block_mask(cu, window, "cpu")
        assert torch.equal(mine.to_dense()[0, 0].bool(), ref.to_dense()[0, 0].bool()), (cu, window)
        assert torch.equal(full_blocks(mine), full_blocks(ref)), (cu, window)
        q, k, v = _inputs(1, T, 2, 1, 8)
        cu_t = torch.tensor(cu)
        torch.testing.assert_close(causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="flex"),
                                   causal_attention(q, k, v, window=window, cu_seqlens=cu_t, backend="math"),
                                   atol=1e-4, rtol=1e-4)
