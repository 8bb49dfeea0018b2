import pytest

from hybrid.blocks import HybridConfig, HybridForCausalLM, SpecError, block_params, count_params, mlp_params

D = 48

BLOCKS = [
    {"kind": "carve", "heads": 3, "head_dim": 16},
    {"kind": "carve", "heads": 2, "head_dim": 16, "value_dim": 24, "gate_rank": 8, "content_rank": 5},
    {"kind": "carve", "heads": 2, "head_dim": 8, "content": "off", "conv_size": 3},
    {"kind": "gdn2", "heads": 3, "head_dim": 16},
    {"kind": "gdn2", "heads": 2, "head_dim": 8, "value_dim": 12, "gate_rank": 4, "conv_size": 2},
    {"kind": "attention", "heads": 4, "head_dim": 8},
    {"kind": "attention", "heads": 6, "kv_heads": 2, "head_dim": 10, "window": 16},
]
MLPS = [{"kind": "swiglu", "hidden": 80}, {"kind": "none"}, None]


def _numel(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b['kind']}-{len(b)}")
@pytest.mark.parametrize("mlp", MLPS, ids=["swiglu", "none", "default"])
def test_formula_equals_module(block, mlp):
    cfg = HybridConfig(vocab_size=100, d_model=D, layers=[block], mlp=mlp)
    model = HybridForCausalLM(cfg)
    layer = model.model.layers[0]
    assert _numel(layer) == block_params(block, D) + mlp_params(mlp, D)
    counts = count_params(cfg)
    assert counts["total"] == _numel(model)
    assert counts["per_layer"] == [_numel(layer)]
    assert counts["embedding"] == 100 * D and counts["lm_head"] == 0


def test_untied_and_mixed_stack():
    layers = BLOCKS[:4] + BLOCKS[5:]
    cfg = HybridConfig(vocab_size=77, d_model=D, layers=layers, mlp={"hidden": 64}, tie_embeddings=False)
    model = HybridForCausalLM(cfg)
    counts = count_params(cfg)
    assert counts["total"] == _numel(model)
    assert counts["lm_head"] == 77 * D
    assert counts["non_embedding"] == counts["total"] - 2 * 77 * D
    assert counts["per_layer"] == [_numel(layer) for layer in model.model.layers]
    # a plain mapping works too
    as_dict = {"vocab_size": 77, "d_model": D, "layers": layers, "mlp": {"hidden": 64}, "tie_embeddings": False}
    assert count_params(as_dict) == counts


@pytest.mark.parametrize("H,K,V,d", [(2, 16, 16, 32), (4, 8, 24, 64), (3, 32, 16, 48)])
def test_carve_saves_write_projection(H, K, V, d):
    common = {"heads": H, "head_dim": K, "value_dim": V, "gate_rank": 8}
    carve_off = block_params({"kind": "carve", "content": "off", **common}, d)
    gdn2 = block_params({"kind": "gdn2", **common}, d)
    assert gdn2 - carve_off == (H * V - H) * d
    # with the content term on, CARVE adds exactly U_down + U_up = H r (V + K)
    carve_on = block_params({"kind": "carve", "content_rank": 4, **common}, d)
    assert carve_on - carve_off == H * 4 * (V + K)
    # and the modules agree
    for kind, extra, count in (("carve", {"content": "off"}, carve_off), ("gdn2", {}, gdn2)):
        cfg = HybridConfig(vocab_size=10, d_model=d, layers=[{"kind": kind, **extra, **common}], mlp={"kind": "none"})
        assert _numel(HybridForCausalLM(cfg).model.layers[0]) == count


def test_bad_inputs_raise_with_path():
    with pytest.raises(SpecError, match="heads"):
        block_params({"kind": "carve"}, 32)
    with pytest.raises(SpecError, match="d_model"):
        block_params({"kind": "carve", "heads": 2}, 0)
    with pytest.raises(SpecError, match="layers"):
        count_params({"vocab_size": 10, "d_model": 8, "layers": []})
