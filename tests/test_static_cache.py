"""The static hybrid cache against the dynamic one, and greedy decoding through it (fp32, CPU, eager)."""

import pytest
import torch
from test_model_layouts import LAYOUTS, VOCAB, attn, carve, gdn2, make_model

from hybrid.blocks.model import _CACHE_FIELD  # the name generate() takes a cache by in this transformers
from hybrid.blocks.static_cache import StaticAttentionLayer, StaticHybridCache, StaticRecurrentLayer

STATIC_LAYOUTS = dict(LAYOUTS, ring=[carve(), attn(window=4), gdn2(), attn()])


def _cache(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values


def _left_padded(prompts):
    T = max(p.numel() for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, T - p.numel():] = p
        mask[b, T - p.numel():] = 1
    return ids, mask


@pytest.mark.parametrize("layout", ["3to1", "ring"])
def test_static_cache_equals_dynamic_after_prefill(layout):
    model = make_model(STATIC_LAYOUTS[layout])
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,)) for n in (13, 6, 10)])
    with torch.no_grad():
        dyn = _cache(model(ids, attention_mask=mask, use_cache=True))
        static = StaticHybridCache(model.config, 4, 32)
        model(ids, attention_mask=mask, cache=static)
    assert static.rows == 3 and static.seen_tokens == dyn.seen_tokens == 13
    assert static.real_len.tolist() == dyn.real_len.tolist() == [13, 6, 10]
    for s, d in zip(static.layers, dyn.layers):
        if isinstance(s, StaticRecurrentLayer):
            torch.testing.assert_close(s.conv_state[:3], d.conv_state, rtol=0, atol=0)
            for name in ("S", "m_prev", "o_sum", "pos"):
                torch.testing.assert_close(getattr(s, name)[:3], getattr(d.state, name), rtol=0, atol=0)
            assert not s.S[3].any() and not s.conv_state[3].any()
            continue
        assert isinstance(s, StaticAttentionLayer)
        for b in range(3):
            keep = d.valid[b]
            pos = d.pos[b, keep]
            slots = pos % s.slots
            assert s.slot_pos[b, slots].tolist() == pos.tolist()
            assert int((s.slot_pos[b] >= 0).sum()) == int(keep.sum())  # nothing else is filled
            torch.testing.assert_close(s.keys[b][:, slots], d.keys[b][:, keep], rtol=0, atol=0)
            torch.testing.assert_close(s.values[b][:, slots], d.values[b][:, keep], rtol=0, atol=0)
        assert (s.slot_pos[3] == -1).all()


@pytest.mark.parametrize("layout", list(STATIC_LAYOUTS))
def test_static_greedy_equals_full_forward(layout):
    """Left-padded prompts, one spare row, chunk boundaries and a wrapping ring buffer: every greedy token
    through the static cache equals the argmax of a full forward over the growing sequence."""
    model = make_model(STATIC_LAYOUTS[layout])
    prompts = [torch.randint(1, VOCAB, (n,)) for n in (11, 4, 7)]
    ids, mask = _left_padded(prompts)
    steps = 12
    static = StaticHybridCache(model.config, 4, 32)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, cache=static)
        toks = [out.logits[:, -1].argmax(-1)]
        for _ in range(steps - 1):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
            out = model(toks[-1][:, None], attention_mask=mask, cache=static)
            toks.append(out.logits[:, -1].argmax(-1))
        got = torch.stack(toks, 1)
        for b, p in enumerate(prompts):
            seq = p[None]
            for _ in range(steps):
                seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
            assert got[b].tolist() == seq[0, p.numel():].tolist(), (layout, b)
    assert static.lengths.tolist()[:3] == [p.numel() + steps - 1 for p in prompts]


def test_static_logits_equal_dynamic_logits():
    model = make_model(STATIC_LAYOUTS["ring"])
    x = torch.randint(1, VOCAB, (2, 30))
    static = StaticHybridCache(model.config, 2, 30)
    with torch.no_grad():
        dyn = _cache(model(x[:, :9], use_cache=True))
        model(x[:, :9], cache=static)
        for t in range(9, 30):
            a = model(x[:, t:t + 1], cache=dyn).logits
            b = model(x[:, t:t + 1], cache=static).logits
            torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_generate_with_static_cache_equals_dynamic():
    model = make_model(STATIC_LAYOUTS["ring"])
    ids, mask = _left_padded([torch.randint(1, VOCAB, (n,)) for n in (9, 5)])
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    static = StaticHybridCache(model.config, 2, 24)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                         **{_CACHE_FIELD: static})
    assert got.tolist() == ref.tolist()
    assert static.seen_tokens == 9 + 9


def test_static_cache_refuses_misuse():
    model = make_model(LAYOUTS["3to1"])
    x = torch.randint(1, VOCAB, (2, 6))
    with pytest.raises(ValueError, match="capacity"):
        StaticHybridCache(model.config, 0, 8)
    static = StaticHybridCache(model.config, 2, 8)
    with torch.no_grad():
        with pytest.raises(ValueError, match="holds 8"):
            model(torch.randint(1, VOCAB, (2, 9)), cache=static)
        model(x, cache=static)
        with pytest.raises(ValueError, match="one token per row"):
            model(x[:, :2], cache=static)
        with pytest.raises(ValueError, match="2 rows"):
            model(x[:1, :1], cache=static)
        with pytest.raises(ValueError, match="last column"):
            model(x[:, :1], attention_mask=torch.tensor([[1] * 7, [1] * 6 + [0]]), cache=static)
        model(x[:, :1], cache=static)
        model(x[:, :1], cache=static)
        with pytest.raises(ValueError, match="full"):
            model(x[:, :1], cache=static)
        with pytest.raises(ValueError, match="inputs_embeds"):
            model(inputs_embeds=torch.zeros(2, 1, 32), cache=static)


def test_rows_prefilled_apart_equal_rows_prefilled_together():
    model = make_model(STATIC_LAYOUTS["ring"])
    x = torch.randint(1, VOCAB, (3, 12))
    together = StaticHybridCache(model.config, 3, 20)
    apart = StaticHybridCache(model.config, 3, 20)
    with torch.no_grad():
        model(x, cache=together)
        apart.load(_cache(model(x[:2], use_cache=True)))
        apart.load(_cache(model(x[2:], use_cache=True)), start=2)
        with pytest.raises(ValueError, match="do not fit"):
            apart.load(_cache(model(x[2:], use_cache=True)), start=3)
        with pytest.raises(ValueError, match="one width"):
            apart.load(_cache(model(x[2:, :5], use_cache=True)), start=2)
        assert (apart.rows, apart.seen_tokens) == (3, 12)
        for a, b in zip(apart.layers, together.layers):
            for ta, tb in zip(a.buffers(), b.buffers()):
                torch.testing.assert_close(ta, tb, atol=1e-6, rtol=1e-5)
        nxt = x[:, :1]
        torch.testing.assert_close(model(nxt, cache=apart).logits, model(nxt, cache=together).logits)
