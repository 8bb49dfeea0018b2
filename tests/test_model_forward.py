import pytest
import torch
from test_model_layouts import LAYOUTS, VOCAB, attn, carve, make_model
from transformers import AutoConfig, AutoModelForCausalLM

import hybrid.blocks  # noqa: F401  (registers the Auto classes)
from hybrid.blocks import HybridCache, HybridConfig, HybridForCausalLM, SpecError, count_params


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_forward_backward(layout):
    model = make_model(LAYOUTS[layout]).train()
    x = torch.randint(0, VOCAB, (2, 21))
    out = model(x, labels=x)
    assert out.logits.shape == (2, 21, VOCAB)
    assert torch.isfinite(out.loss) and abs(out.loss.item() - torch.log(torch.tensor(float(VOCAB)))) < 0.5
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert count_params(model.config)["total"] == sum(p.numel() for p in model.parameters())


def test_loss_is_shifted_cross_entropy():
    model = make_model(LAYOUTS["3to1"])
    x = torch.randint(0, VOCAB, (2, 12))
    labels = x.clone()
    labels[0, 5] = -100
    out = model(x, labels=labels)
    lg = out.logits[:, :-1].reshape(-1, VOCAB)
    ref = torch.nn.functional.cross_entropy(lg, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)


def test_gradient_checkpointing_same_grads():
    x = torch.randint(0, VOCAB, (1, 17))
    grads = []
    for ckpt in (False, True):
        model = make_model(LAYOUTS["1to1_swa"]).train()
        if ckpt:
            model.gradient_checkpointing_enable()
        model(x, labels=x).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_roundtrip(tmp_path, tie):
    model = make_model(LAYOUTS["1to1_swa"], tie_embeddings=tie, eos_token_id=2)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "model.safetensors"))
    assert ("lm_head.weight" in stored) == (not tie)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HybridForCausalLM)
    assert loaded.config.layers == model.config.layers and loaded.config.eos_token_id == 2
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p, p2), n
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    x = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, atol=0, rtol=0)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HybridConfig)


def test_init_scales():
    model = make_model([carve(), attn(), carve()], content_scale=0)
    std = model.model.embed_tokens.weight.std().item()
    assert 0.015 < std < 0.025
    attn_o = model.model.layers[1].mixer.o_proj.weight.std().item()
    assert abs(attn_o - 0.02 / (2 * 3) ** 0.5) < 0.004
    for i in (0, 2):
        assert (model.model.layers[i].mixer.u_up == 0).all()


def test_layer_types_and_aliases():
    cfg = HybridConfig(vocab_size=VOCAB, d_model=32, layers=LAYOUTS["3to1"])
    assert cfg.layer_types == ["carve", "carve", "gdn2", "attention"]
    assert cfg.hidden_size == 32 and cfg.n_layers == 4 and cfg.tie_word_embeddings is True
    assert cfg.layers[0]["value_dim"] == 16  # defaults filled in by normalize_block


@pytest.mark.parametrize(
    "kwargs, path",
    [
        ({"layers": [{"kind": "carve", "heads": 2, "head_dm": 16}]}, r"model\.layers\[0\]\.head_dm"),
        ({"layers": [{"kind": "carv", "heads": 2}]}, r"model\.layers\[0\]\.kind"),
        ({"layers": [carve(), {"kind": "attention", "heads": 3, "kv_heads": 2}]}, r"model\.layers\[1\]\.kv_heads"),
        ({"layers": [{"kind": "attention", "heads": 2, "head_dim": 7}]}, r"model\.layers\[0\]\.head_dim"),
        ({"layers": [carve()], "d_model": 0}, r"model\.d_model"),
        ({"layers": [carve()], "mlp": {"kind": "geglu"}}, r"model\.mlp\.kind"),
        ({"layers": [carve()], "mlp": {"hidden": -3}}, r"model\.mlp\.hidden"),
        ({"layers": [carve()], "eos_token_id": 500}, r"model\.eos_token_id"),
        ({"layers": "carve"}, r"model\.layers"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, path):
    kw = {"vocab_size": VOCAB, "d_model": 32, **kwargs}
    with pytest.raises(SpecError, match=path):
        HybridConfig(**kw)


def test_empty_config_cannot_build():
    with pytest.raises(SpecError, match="model.layers"):
        HybridForCausalLM(HybridConfig())


def test_bad_forward_inputs():
    model = make_model(LAYOUTS["3to1"])
    x = torch.randint(0, VOCAB, (2, 8))
    with pytest.raises(ValueError, match="batch size must be 1"):
        model(x, cu_seqlens=torch.tensor([0, 4, 8]))
    with pytest.raises(ValueError, match="end at T"):
        model(x[:1], cu_seqlens=torch.tensor([0, 4, 7]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(x, attention_mask=torch.ones(2, 1, 8, 8))
    out = model(x, use_cache=True)
    assert isinstance(out.cache if hasattr(out, "cache") else out.past_key_values, HybridCache)
