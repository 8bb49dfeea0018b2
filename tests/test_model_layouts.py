"""Tiny model layouts shared by the blocks/model tests (imported by the other test_model_* files)."""

from __future__ import annotations

import torch

from hybrid.blocks import HybridConfig, HybridForCausalLM, RecurrentMixer

VOCAB = 96
D = 32


def carve(**kw):
    return {"kind": "carve", "heads": 2, "head_dim": 16, "chunk_size": 8, "gate_rank": 8, "content_rank": 4, **kw}


def gdn2(**kw):
    return {"kind": "gdn2", "heads": 2, "head_dim": 16, "chunk_size": 8, "gate_rank": 8, **kw}


def attn(**kw):
    return {"kind": "attention", "heads": 4, "kv_heads": 2, "head_dim": 8, **kw}


LAYOUTS = {
    "carve": [carve(), carve()],
    "attention": [attn(), attn()],
    "3to1": [carve(), carve(), gdn2(), attn()],
    "1to1_swa": [carve(), attn(window=5), carve(value_dim=8), attn(window=3)],
}


def make_model(layers, *, seed=0, content_scale=0.5, **cfg_kw) -> HybridForCausalLM:
    """A tiny fp32 model in eval mode. U_up is made non-zero so that the content path is exercised."""
    torch.manual_seed(seed)
    cfg = HybridConfig(vocab_size=VOCAB, d_model=D, layers=layers, mlp={"kind": "swiglu", "hidden": 64}, **cfg_kw)
    model = HybridForCausalLM(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RecurrentMixer) and m.content and content_scale:
                m.u_up.normal_(0.0, content_scale)
    return model


def test_layouts_are_valid_configs():
    for name, layers in LAYOUTS.items():
        cfg = HybridConfig(vocab_size=VOCAB, d_model=D, layers=layers)
        assert len(cfg.layers) == len(layers), name
