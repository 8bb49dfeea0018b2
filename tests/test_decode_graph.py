"""Bucketed static caches and the CUDA-graph decode step (graph tests marked ``gpu``).

On the device: ``python -m pytest -m gpu tests/test_decode_graph.py``."""

import pytest
import torch
from test_model_layouts import LAYOUTS, VOCAB, attn, carve, gdn2, make_model

from hybrid.blocks import HybridCache
from hybrid.blocks.decode_graph import (
    bucket,
    decode_cache,
    generate_cache,
    greedy_decode,
    length_bucket,
    release_decode_caches,
)
from hybrid.blocks.model import _CACHE_FIELD  # the name generate() takes a cache by in this transformers
from hybrid.blocks.static_cache import StaticHybridCache

RING = [carve(), attn(window=4), gdn2(), attn()]


def _left_padded(prompts, device="cpu"):
    T = max(p.numel() for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, T - p.numel():], mask[b, T - p.numel():] = p, 1
    return ids, mask


def _greedy_full(model, prompt, steps):
    seq = prompt[None]
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[0, prompt.numel():].tolist()


def test_buckets_are_powers_of_two():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert bucket(10, 256) == 256 and bucket(257, 256) == 512
    assert [length_bucket(n) for n in (1, 256, 257, 4096, 4160, 8256)] == [256, 256, 512, 4096, 5120, 10240]


def test_decode_cache_pool_reuses_buckets_on_cpu():
    model = make_model(LAYOUTS["3to1"])
    a = decode_cache(model, 3, 40)
    assert isinstance(a, StaticHybridCache) and (a.capacity, a.max_len) == (4, 256) and a.step_fn is None
    with torch.no_grad():
        model(torch.randint(1, VOCAB, (3, 5)), cache=a)
    b = decode_cache(model, 4, 200)
    assert b is a and b.seen_tokens == 0 and b.rows == 0 and not b.lengths.any()  # reused and reset
    c = decode_cache(model, 5, 40)
    d = decode_cache(model, 1, 300)
    assert c.capacity == 8 and (d.capacity, d.max_len) == (1, 512)
    assert decode_cache(model, 2, 10) is not a  # only the last two buckets are kept
    release_decode_caches(model)
    assert "_decode_caches" not in model.__dict__


def test_pooled_cache_serves_inference_mode_then_no_grad():
    """The pool's buffers are normal tensors: a cache first used under inference mode still decodes
    under plain no_grad (what a RULER run followed by a test or a demo does)."""
    model = make_model(LAYOUTS["3to1"])
    ids = torch.randint(1, VOCAB, (2, 12))
    with torch.inference_mode():
        a = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0,
                           **{_CACHE_FIELD: decode_cache(model, 2, 18)})
    cache = decode_cache(model, 2, 18)
    assert not cache.lengths.is_inference()
    b = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, **{_CACHE_FIELD: cache})
    c = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert a.tolist() == b.tolist() == c.tolist() and cache.seen_tokens == 12 + 5


def test_weight_updates_invalidate_the_stacked_weight_and_the_pool():
    from hybrid.blocks.recurrent_step import stacked_in_weight

    model = make_model(LAYOUTS["3to1"])
    mixer = model.model.layers[0].mixer
    w0 = stacked_in_weight(mixer)
    assert stacked_in_weight(mixer) is w0 and w0.shape[1] == mixer.q_proj.weight.shape[1]
    assert torch.equal(w0[: mixer.q_proj.weight.shape[0]], mixer.q_proj.weight)
    a = decode_cache(model, 2, 20)
    with torch.no_grad():
        mixer.b_proj.weight.mul_(2.0)  # an in-place update (an optimizer step)
    w1 = stacked_in_weight(mixer)
    assert w1 is not w0 and torch.equal(w1[-mixer.g_proj[0].weight.shape[0]:], mixer.g_proj[0].weight)
    rows = slice(w1.shape[0] - sum(p.shape[0] for p in (mixer.b_proj.weight, mixer.w_proj.weight,
                                                         mixer.g_proj[0].weight)), None)
    assert torch.equal(w1[rows][: mixer.b_proj.weight.shape[0]], mixer.b_proj.weight)
    assert decode_cache(model, 2, 20) is not a


def test_generate_keeps_the_dynamic_cache_on_cpu():
    model = make_model(LAYOUTS["3to1"])
    assert generate_cache(model, torch.ones(2, 5, dtype=torch.long), {"max_new_tokens": 4}) is None


def test_greedy_decode_equals_generate_on_an_eager_static_cache():
    """The loop that reads back every few tokens gives generate's tokens, pads after each row's end-of-text
    as generate does, and stops early once every row has ended."""
    model = make_model(LAYOUTS["3to1"])
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,)) for n in (21, 6, 13)])
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0)[:, 21:]
    with torch.no_grad():
        got = greedy_decode(model, ids, mask, 40, pad_token_id=0, cache=decode_cache(model, 3, 61))
    assert got.tolist() == ref.tolist()
    eos = int(ref[1, 3])  # a token row 1 makes early: every row after its first eos holds pad
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0,
                         eos_token_id=eos)[:, 21:]
    with torch.no_grad():
        got = greedy_decode(model, ids, mask, 40, eos_token_id=eos, pad_token_id=0,
                            cache=decode_cache(model, 3, 61))
    width = ref.shape[1]  # generate stops when every row has ended
    assert got[:, :width].tolist() == ref.tolist() and not got[:, width:].any()
    for row in got.tolist():
        if eos in row:
            assert not any(row[row.index(eos) + 1:])


def _forced_full(model, prompt, forced):
    """Greedy predictions of every forced token from a full forward over the row alone."""
    with torch.no_grad():
        logits = model(torch.cat([prompt, forced])[None]).logits[0]
    return logits[prompt.numel() - 1: prompt.numel() - 1 + forced.numel()].argmax(-1).tolist()


@pytest.mark.parametrize("layout", ["3to1", "carve", "ring"])
def test_teacher_forcing_from_the_prefill_equals_full_forwards(layout):
    """Forced continuations (right-padded) continue the prefill's state: each row's predictions equal a
    full forward over that row's prompt and continuation alone, and the greedy tokens are unchanged (the
    cache is restored after the forced steps; "ring": a window of 4 whose slots those steps overwrite)."""
    model = make_model(RING if layout == "ring" else LAYOUTS[layout])
    prompts = [torch.randint(1, VOCAB, (n,)) for n in (21, 6, 13)]
    conts = [torch.randint(1, VOCAB, (n,)) for n in (5, 1, 9)]
    ids, mask = _left_padded(prompts)
    forced = torch.zeros(3, 9, dtype=torch.long)
    for b, c in enumerate(conts):
        forced[b, :c.numel()] = c
    state = lambda c: [t.clone() for layer in c.layers for t in layer.step_buffers()] + [c.lengths.clone()]
    with torch.no_grad():
        cache = decode_cache(model, 3, 40)
        plain = greedy_decode(model, ids, mask, 12, pad_token_id=0, cache=cache)
        after_plain = state(cache)
        got, pred = greedy_decode(model, ids, mask, 12, pad_token_id=0, cache=decode_cache(model, 3, 40),
                                  forced=forced)
    assert got.tolist() == plain.tolist()
    # the forced steps left no trace: after the same greedy steps the cache holds the same state
    assert all(torch.equal(a, b) for a, b in zip(state(cache), after_plain))
    assert pred.shape == (3, 9)
    for b, (p, c) in enumerate(zip(prompts, conts)):
        assert pred[b, :c.numel()].tolist() == _forced_full(model, p, c)


def test_greedy_decode_refuses_a_cache_without_room_for_the_forced_tokens():
    model = make_model(LAYOUTS["3to1"])
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,)) for n in (10, 6)])
    forced = torch.randint(1, VOCAB, (2, 12))
    with torch.no_grad(), pytest.raises(ValueError, match="do not fit a StaticHybridCache"):
        greedy_decode(model, ids, mask, 4, pad_token_id=0, cache=StaticHybridCache(model.config, 2, 16),
                      forced=forced)


def test_snapshot_restore_undoes_decode_steps():
    """Steps after a snapshot are undone by restore: recurrent states, slot occupancy, the window's ring
    slots, lengths and the token count are as before, and the next step gives the same logits."""
    model = make_model(RING)
    prompts = [torch.randint(1, VOCAB, (n,)) for n in (11, 7)]
    ids, mask = _left_padded(prompts)
    tok = torch.randint(1, VOCAB, (2, 1))
    with torch.no_grad():
        cache = decode_cache(model, 2, 40)
        model(input_ids=ids, attention_mask=mask, cache=cache)
        before = [[t.clone() for t in layer.step_buffers()] for layer in cache.layers]
        lengths, seen = cache.lengths.clone(), cache.seen_tokens
        snap = cache.snapshot()
        for _ in range(6):  # more than the window's 4 slots: every ring slot is overwritten
            model(input_ids=torch.randint(1, VOCAB, (2, 1)), cache=cache)
        assert cache.seen_tokens == seen + 6
        cache.restore(snap)
        assert cache.seen_tokens == seen and torch.equal(cache.lengths, lengths)
        for layer, old in zip(cache.layers, before):
            assert all(torch.equal(t, o) for t, o in zip(layer.step_buffers(), old))
        got = model(input_ids=tok, cache=cache).logits
        fresh = decode_cache(model, 2, 40)
        model(input_ids=ids, attention_mask=mask, cache=fresh)
        assert torch.equal(got, model(input_ids=tok, cache=fresh).logits)


def test_greedy_new_tokens_leaves_the_cpu_to_generate():
    model = make_model(LAYOUTS["3to1"])
    assert model.greedy_new_tokens(torch.ones(2, 5, dtype=torch.long), max_new_tokens=4) is None


# ------------------------------------------------------------------------------------------------ GPU
def _cuda_model(layers, dtype=torch.float32):
    """The tiny layouts with 16-token chunks: the prefill runs the Triton chunk kernels, which take
    chunk sizes 16, 32 and 64 (the CPU layouts use 8)."""
    layers = [b if b["kind"] == "attention" else {**b, "chunk_size": 16} for b in layers]
    return make_model(layers).to(device="cuda", dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["3to1", "carve", "attention", "ring"])
def test_graph_greedy_equals_full_forward(layout):
    model = _cuda_model(RING if layout == "ring" else LAYOUTS[layout])
    prompts = [torch.randint(1, VOCAB, (n,), device="cuda") for n in (21, 6, 13)]
    ids, mask = _left_padded(prompts, "cuda")
    g = model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0)
    (cache,) = model._decode_caches.values()
    assert cache.step_fn is not None and cache.capacity == 4 and cache.seen_tokens == 21 + 19
    for b, p in enumerate(prompts):
        assert g[b, ids.shape[1]:].tolist() == _greedy_full(model, p, 20), b


@pytest.mark.gpu
def test_graph_generate_equals_dynamic_generate_and_reuses_its_capture():
    model = _cuda_model(RING)
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,), device="cuda") for n in (30, 9, 17)], "cuda")
    dyn = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0,
                         **{_CACHE_FIELD: HybridCache(model.config)})
    fast = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert fast.tolist() == dyn.tolist()
    (cache,) = model._decode_caches.values()
    step = cache.step_fn
    # a batch of 4 falls in the same bucket: same buffers, same graph
    ids4 = torch.cat([ids, ids[:1]])
    fast4 = model.generate(ids4, attention_mask=torch.cat([mask, mask[:1]]), max_new_tokens=16, do_sample=False,
                           pad_token_id=0)
    assert list(model._decode_caches.values()) == [cache] and cache.step_fn is step
    assert fast4[:3].tolist() == fast.tolist() and fast4[3].tolist() == fast[0].tolist()


@pytest.mark.gpu
def test_greedy_new_tokens_equal_graph_generate_on_cuda():
    model = _cuda_model(RING)
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,), device="cuda") for n in (30, 9, 17)], "cuda")
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        got = model.greedy_new_tokens(ids, mask, max_new_tokens=40, pad_token_id=0)
    assert got.tolist() == ref[:, 30:].tolist()
    (cache,) = model._decode_caches.values()  # the same bucket: generate's capture served the loop
    assert cache.step_fn is not None and cache.seen_tokens == 30 + 39


@pytest.mark.gpu
def test_teacher_forcing_on_cuda_equals_a_separate_forward():
    """On CUDA (captured step) the forced predictions equal those of a forward over prompt + continuation."""
    model = _cuda_model(RING)
    prompts = [torch.randint(1, VOCAB, (n,), device="cuda") for n in (30, 9, 17)]
    conts = [torch.randint(1, VOCAB, (n,), device="cuda") for n in (4, 7, 1)]
    ids, mask = _left_padded(prompts, "cuda")
    forced = torch.zeros(3, 7, dtype=torch.long, device="cuda")
    for b, c in enumerate(conts):
        forced[b, :c.numel()] = c
    with torch.inference_mode():
        got, pred = model.greedy_new_tokens(ids, mask, max_new_tokens=20, pad_token_id=0, forced=forced)
        plain = model.greedy_new_tokens(ids, mask, max_new_tokens=20, pad_token_id=0)
    assert got.tolist() == plain.tolist()
    for b, (p, c) in enumerate(zip(prompts, conts)):
        assert pred[b, :c.numel()].tolist() == _forced_full(model, p, c)


@pytest.mark.gpu
def test_graph_replay_equals_eager_static_step_bf16():
    model = _cuda_model(RING, torch.bfloat16)
    x = torch.randint(1, VOCAB, (3, 40), device="cuda")
    graphed = decode_cache(model, 3, 64)
    eager = StaticHybridCache(model.config, 4, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        model(x[:, :24], cache=graphed)
        model(x[:, :24], cache=eager)
        for t in range(24, 40):
            a = model(x[:, t:t + 1], cache=graphed).logits
            b = model(x[:, t:t + 1], cache=eager).logits
            torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=1e-2)
    for la, lb in zip(graphed.layers, eager.layers):
        for ta, tb in zip(la.buffers(), lb.buffers()):
            torch.testing.assert_close(ta.float(), tb.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
def test_graph_generate_under_inference_mode_then_no_grad():
    model = _cuda_model(LAYOUTS["3to1"])
    ids = torch.randint(1, VOCAB, (2, 12), device="cuda")
    with torch.inference_mode():
        a = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    b = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert a.tolist() == b.tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["carve", "3to1"])
def test_fused_recurrent_step_equals_torch_step_on_cuda(layout):
    """The fused Triton step against the layer's own step (v1 decode kernel), fp32, 70 tokens from a prefill
    of 37 (several chunk ends)."""
    from hybrid.blocks.recurrent_step import fused_step, torch_step
    from hybrid.blocks.static_cache import StaticRecurrentLayer

    model = _cuda_model(LAYOUTS[layout])
    x = torch.randint(1, VOCAB, (3, 37), device="cuda")
    a = StaticHybridCache(model.config, 3, 128, device="cuda")
    b = StaticHybridCache(model.config, 3, 128, device="cuda")
    with torch.no_grad():
        model(x, cache=a)
        model(x, cache=b)
        for mixer_layer, la, lb in zip(model.model.layers, a.layers, b.layers):
            if isinstance(la, StaticRecurrentLayer):
                for _ in range(70):
                    h = torch.randn(3, 1, model.config.d_model, device="cuda")
                    torch.testing.assert_close(fused_step(mixer_layer.mixer, h, la),
                                               torch_step(mixer_layer.mixer, h, lb), atol=1e-4, rtol=1e-4)
                    la.lengths.add_(1)  # shared by the layers of one cache: advance it as a step does
                    lb.lengths.add_(1)
                for ta, tb in zip(la.buffers(), lb.buffers()):
                    torch.testing.assert_close(ta, tb, atol=1e-4, rtol=1e-4)
                a.lengths.sub_(70)
                b.lengths.sub_(70)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_add_rmsnorm_equals_eager_on_cuda(dtype):
    from hybrid.blocks.norms import RMSNorm
    from hybrid.ops.add_rmsnorm import add_rmsnorm

    norm = RMSNorm(1024, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        h = (3 * torch.randn(7, 1, 1024, device="cuda")).to(dtype)
        d = torch.randn(7, 1, 1024, device="cuda").to(dtype)
        h1, y1 = add_rmsnorm(h, d, norm.weight, norm.eps)
        assert torch.equal(h1, h + d)
        torch.testing.assert_close(y1, norm(h + d), atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rope_write_equals_the_layer_on_cuda(dtype):
    from hybrid.blocks.static_cache import StaticAttentionLayer
    from hybrid.ops.rope_kv_write import rope_kv_write

    B, H, G, D = 3, 16, 4, 64
    a, b = (StaticAttentionLayer(B, G, D, 128, 64, device="cuda", dtype=dtype) for _ in range(2))
    q, k, v = (torch.randn(B, 1, n, D, device="cuda").to(dtype) for n in (H, G, G))
    pos = torch.tensor([0, 70, 131071], device="cuda")
    qa = rope_kv_write(q, k, v, pos, a.inv_freq(10000.0, D), a.keys, a.values, a.slot_pos)
    qb = b.write(q, k, v, pos, 10000.0)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(qa, qb, **tol)
    torch.testing.assert_close(a.keys, b.keys, **tol)
    assert torch.equal(a.values, b.values) and torch.equal(a.slot_pos, b.slot_pos)


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", ["CCCA", "C"])
def test_graph_step_of_the_350m_recipe_follows_the_dynamic_path(pattern):
    """The recipe's real shapes (K = V = 128, chunk 64, content rank 16, GQA 16/4 x 64), bf16: 300 prompt
    tokens, then 70 teacher-forced tokens through the captured static step and through the dynamic cache."""
    from hybrid.blocks import HybridConfig, HybridForCausalLM
    from hybrid.recipes import load_recipe

    rec = load_recipe("recipes/carve-350m-3to1.yaml", [f"layout.pattern={pattern}"])
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**rec.model_config_kwargs())).to(device="cuda", dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "u_up"):
                m.u_up.normal_(0.0, 0.3)
        x = torch.randint(3, model.config.vocab_size, (2, 370), device="cuda")
        static = decode_cache(model, 2, 370)
        assert static.step_fn is not None
        model(x[:, :300], cache=static)
        dyn = model(x[:, :300], use_cache=True)
        dyn = dyn.cache if getattr(dyn, "cache", None) is not None else dyn.past_key_values
        for t in range(300, 370):
            la = model(x[:, t:t + 1], cache=static).logits.float()
            lb = model(x[:, t:t + 1], cache=dyn).logits.float()
            err = (la - lb).abs().max().item() / lb.abs().max().item()
            assert err < 5e-2, (t, err)
