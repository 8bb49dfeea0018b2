"""Incremental decoding, left padding and generate() against full forward passes (fp32, CPU)."""

import pytest
import torch
from test_model_layouts import LAYOUTS, VOCAB, attn, carve, make_model

from hybrid.blocks import HybridCache
from hybrid.blocks.cache import AttentionCacheLayer, RecurrentCacheLayer

ATOL = 2e-5


def _cache(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_incremental_decoding_equals_full_forward(layout):
    """Prefill 11 tokens (crosses chunk 8), decode 10 one by one (uses carve_decode), then a block of 6."""
    model = make_model(LAYOUTS[layout])
    x = torch.randint(0, VOCAB, (2, 27))
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :11], use_cache=True)
        cache = _cache(out)
        assert isinstance(cache, HybridCache)
        logits = [out.logits]
        for t in range(11, 21):
            out = model(x[:, t:t + 1], cache=cache)
            logits.append(out.logits)
        logits.append(model(x[:, 21:], cache=cache).logits)
    assert cache.get_seq_length() == 27 and cache.real_len.tolist() == [27, 27]
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=ATOL, rtol=1e-4)


def test_sliding_window_cache_is_bounded():
    model = make_model([carve(), attn(window=5), attn()])
    x = torch.randint(0, VOCAB, (1, 30))
    with torch.no_grad():
        out = model(x[:, :12], use_cache=True)
        cache = _cache(out)
        for t in range(12, 30):
            model(x[:, t:t + 1], cache=cache)
    layers = cache.layers
    assert isinstance(layers[0], RecurrentCacheLayer) and isinstance(layers[1], AttentionCacheLayer)
    assert layers[1].keys.shape[2] == 5 and layers[1].pos[0].tolist() == list(range(25, 30))
    assert layers[2].keys.shape[2] == 30
    assert layers[0].state.S.shape == (1, 2, 16, 16) and layers[0].conv_state.shape == (1, 96, 3)


PADDED_LAYOUTS = dict(LAYOUTS, **{  # sdpa: the per-row prefill path that replaces a packed mask
    "1to1_swa_sdpa": [carve(), attn(window=5, backend="sdpa"), carve(), attn(backend="sdpa")]})


@pytest.mark.parametrize("layout", ["3to1", "1to1_swa", "carve", "1to1_swa_sdpa"])
def test_left_padded_rows_equal_unpadded(layout):
    """Prefill of a left-padded batch, then decoding: each row equals that row run alone."""
    model = make_model(PADDED_LAYOUTS[layout])
    lens = [19, 6, 13]
    T = max(lens)
    seqs = [torch.randint(1, VOCAB, (n + 7,)) for n in lens]  # 7 extra tokens to decode
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, T - n:] = seqs[b][:n]
        mask[b, T - n:] = 1
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        cache = _cache(out)
        steps = [out.logits]
        for j in range(7):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
            tok = torch.stack([s[n + j] for s, n in zip(seqs, lens)]).unsqueeze(1)
            steps.append(model(tok, attention_mask=mask, cache=cache).logits)
        batched = torch.cat(steps, 1)
        for b, n in enumerate(lens):
            alone = model(seqs[b].unsqueeze(0)).logits[0]
            torch.testing.assert_close(batched[b, T - n:], alone, atol=ATOL, rtol=1e-4)
    # the padded rows' recurrent state equals the unpadded one: position in chunk and chunk mean too
    with torch.no_grad():
        c1 = _cache(model(seqs[1][:6].unsqueeze(0), use_cache=True))
        cb = _cache(model(ids, attention_mask=mask[:, :T], use_cache=True))
    for la, lb in zip(c1.layers, cb.layers):
        if isinstance(la, RecurrentCacheLayer):
            assert lb.state.pos[1].item() == la.state.pos[0].item() == 6
            torch.testing.assert_close(lb.state.S[1], la.state.S[0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(lb.state.o_sum[1], la.state.o_sum[0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(lb.conv_state[1], la.conv_state[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layout", ["3to1", "1to1_swa"])
def test_generate_greedy_matches_manual_and_batched_left_padding(layout):
    model = make_model(LAYOUTS[layout])
    prompts = [torch.randint(1, VOCAB, (n,)) for n in (12, 5, 9)]
    singles = []
    for p in prompts:
        g = model.generate(p.unsqueeze(0), max_new_tokens=8, do_sample=False, pad_token_id=0)
        singles.append(g[0, p.numel():])
        # greedy = argmax of the full forward, one token at a time (no cache)
        seq = p.unsqueeze(0)
        with torch.no_grad():
            for _ in range(8):
                nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], 1)
        assert seq[0, p.numel():].tolist() == singles[-1].tolist()
    T = max(p.numel() for p in prompts)
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, T - p.numel():] = p
        mask[b, T - p.numel():] = 1
    g = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    for b in range(3):
        assert g[b, T:].tolist() == singles[b].tolist()


def test_generate_sampling_runs_and_is_seeded():
    model = make_model(LAYOUTS["1to1_swa"])
    x = torch.randint(1, VOCAB, (2, 7))
    torch.manual_seed(3)
    a = model.generate(x, max_new_tokens=10, do_sample=True, top_k=20, temperature=0.9, pad_token_id=0)
    torch.manual_seed(3)
    b = model.generate(x, max_new_tokens=10, do_sample=True, top_k=20, temperature=0.9, pad_token_id=0)
    assert a.shape == (2, 17) and torch.equal(a, b) and torch.equal(a[:, :7], x)


def test_generate_stops_at_eos_and_beam_search_runs():
    model = make_model(LAYOUTS["3to1"])
    x = torch.randint(1, VOCAB, (1, 6))
    first = model.generate(x, max_new_tokens=1, do_sample=False)[0, -1].item()
    g = model.generate(x, max_new_tokens=5, do_sample=False, eos_token_id=first, pad_token_id=0)
    assert g.shape[1] == 7 and g[0, -1].item() == first
    beams = model.generate(x, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0)
    no_cache = model.generate(x, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0, use_cache=False)
    assert beams.shape == (1, 10) and torch.equal(beams, no_cache)  # cache reordering across beams is right
