"""Model-level checks on CUDA (Triton CARVE kernels, GPU attention backends, bf16 autocast).

Run on the device: ``python -m pytest -m gpu tests/test_model_gpu.py tests/test_blocks_attention.py``."""

import pytest
import torch

from hybrid.blocks import HybridConfig, HybridForCausalLM, RecurrentMixer, bf16_autocast

pytestmark = pytest.mark.gpu

VOCAB = 128


def _layers(name):
    c = {"kind": "carve", "heads": 2, "head_dim": 32, "chunk_size": 16, "gate_rank": 16, "content_rank": 8}
    g = {"kind": "gdn2", "heads": 2, "head_dim": 32, "chunk_size": 16, "gate_rank": 16}
    a = {"kind": "attention", "heads": 4, "kv_heads": 2, "head_dim": 32}
    return {
        "3to1": [c, c, g, a],
        "1to1_swa": [c, {**a, "window": 24}, c, a],
    }[name]


def _model(name, device="cuda"):
    torch.manual_seed(0)
    cfg = HybridConfig(vocab_size=VOCAB, d_model=64, layers=_layers(name), mlp={"hidden": 128})
    m = HybridForCausalLM(cfg).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, RecurrentMixer) and mod.content:
                mod.u_up.normal_(0, 0.5)
    return m.to(device)


@pytest.mark.parametrize("name", ["3to1", "1to1_swa"])
def test_cuda_fp32_matches_cpu(name):
    x = torch.randint(0, VOCAB, (2, 70))
    cpu = _model(name, "cpu")
    gpu = _model(name)
    with torch.no_grad():
        ref = cpu(x).logits
        out = gpu(x.cuda()).logits.cpu()
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", ["3to1", "1to1_swa"])
def test_bf16_autocast_forward_backward(name):
    model = _model(name).train()
    x = torch.randint(0, VOCAB, (2, 128), device="cuda")
    with torch.no_grad():
        ref = model(x).logits
    with bf16_autocast(model):
        out = model(x, labels=x)
    assert out.logits.dtype == torch.bfloat16
    torch.testing.assert_close(out.logits.float(), ref, atol=5e-2, rtol=5e-2)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["3to1", "1to1_swa"])
def test_cuda_incremental_decoding(name):
    model = _model(name)
    x = torch.randint(0, VOCAB, (2, 60), device="cuda")
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :37], use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        logits = [out.logits]
        for t in range(37, 60):
            logits.append(model(x[:, t:t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=2e-3, rtol=2e-3)


def test_cuda_left_padded_generate():
    model = _model("1to1_swa")
    prompts = [torch.randint(1, VOCAB, (n,), device="cuda") for n in (40, 17)]
    ids = torch.zeros(2, 40, dtype=torch.long, device="cuda")
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, 40 - p.numel():], mask[b, 40 - p.numel():] = p, 1
    g = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    for b, p in enumerate(prompts):
        single = model.generate(p[None], max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert g[b, 40:].tolist() == single[0, p.numel():].tolist()


def test_cuda_packed_bf16():
    model = _model("1to1_swa")
    cu = [0, 50, 51, 130, 200]
    x = torch.randint(0, VOCAB, (1, cu[-1]), device="cuda")
    with torch.no_grad(), bf16_autocast(model):
        packed = model(x, cu_seqlens=torch.tensor(cu, device="cuda")).logits.float()
        for s, e in zip(cu[:-1], cu[1:]):
            torch.testing.assert_close(packed[:, s:e], model(x[:, s:e]).logits.float(), atol=5e-2, rtol=5e-2)
