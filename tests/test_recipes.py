"""The recipe language: shipped recipes, inheritance, overrides, sweeps, YAML quirks, building."""

from __future__ import annotations

import glob
import os
import textwrap

import pytest
import torch

from hybrid.blocks.params import count_params
from hybrid.recipes import RecipeError, apply_overrides, load_recipe, load_sweep, recipe_from_dict
from hybrid.recipes.sweep import is_sweep_file

ROOT = os.path.dirname(os.path.dirname(__file__))
RECIPES = sorted(f for f in glob.glob(os.path.join(ROOT, "recipes", "*.yaml")) if not is_sweep_file(f))
SWEEPS = sorted(f for f in glob.glob(os.path.join(ROOT, "recipes", "*.yaml")) if is_sweep_file(f))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_required_recipes_are_shipped():
    names = {os.path.basename(f) for f in RECIPES + SWEEPS}
    for n in ("carve.yaml", "transformer.yaml", "gdn2.yaml", "carve-3to1.yaml", "carve-7to1.yaml",
              "carve-1to1-swa2k.yaml", "tiny-cpu.yaml", "carve-350m-3to1.yaml", "sweep-ratios.yaml"):
        assert n in names


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.basename(f) for f in RECIPES])
def test_shipped_recipe_builds_on_meta_with_exact_params(path):
    from hybrid.analytic.measure import build_model, count_parameters

    r = load_recipe(path)
    assert len(r.layers) == r.model["n_layers"] == len(r.letters.replace(" ", ""))
    model = build_model(r, "meta")
    assert count_parameters(model) == count_params(r.model_config_kwargs())["total"]


@pytest.mark.parametrize("path", SWEEPS, ids=[os.path.basename(f) for f in SWEEPS])
def test_shipped_sweep_variants_build_on_meta(path):
    """Every variant of every shipped sweep file validates (train and eval sections included) and builds."""
    from hybrid.analytic.measure import build_model, count_parameters
    from hybrid.train.config import TrainConfig

    variants = load_sweep(path)
    assert variants and len({r.name for r in variants}) == len(variants)
    for r in variants:
        TrainConfig.from_dict(r.source["train"])
        assert count_parameters(build_model(r, "meta")) == count_params(r.model_config_kwargs())["total"]


def test_h200_sweep_has_the_shares_and_the_ablation():
    rs = load_sweep(os.path.join(ROOT, "recipes", "sweep-ruler-h200.yaml"))
    share = {r.letters: r.letters.count("A") / len(r.letters) for r in rs}
    assert sorted(set(share.values())) == [0, 0.125, 0.25, 0.5, 1]
    quarter = {r.letters: [layer.get("content", layer["kind"]) for layer in r.layers if layer["kind"] != "attention"]
               for r in rs if share[r.letters] == 0.25}
    assert {frozenset(v) for v in quarter.values()} == {frozenset({"self"}), frozenset({"off"}), frozenset({"gdn2"})}
    assert list(rs[0].eval["lengths"]) == ["1x", "2x", "4x", "8x"]


def test_expected_layouts():
    get = lambda n: load_recipe(os.path.join(ROOT, "recipes", n)).letters
    assert get("carve.yaml") == "C" * 16
    assert get("transformer.yaml") == "A" * 16
    assert get("gdn2.yaml") == "G" * 16
    assert get("carve-3to1.yaml") == "CCCA" * 4
    assert get("carve-7to1.yaml") == "CCCCCCCA" * 2
    assert get("carve-1to1-swa2k.yaml") == "CW" * 8
    assert get("tiny-cpu.yaml") == "CCCA"
    r = load_recipe(os.path.join(ROOT, "recipes", "carve-1to1-swa2k.yaml"))
    assert r.layers[1]["window"] == 2048 and r.layers[0]["kind"] == "carve"
    big = load_recipe(os.path.join(ROOT, "recipes", "carve-350m-3to1.yaml"))
    assert 330e6 < count_params(big.model_config_kwargs())["total"] < 370e6
    assert big.train["seq_len"] == 4096


def test_tiny_cpu_recipe_fits_the_brief():
    r = load_recipe(os.path.join(ROOT, "recipes", "tiny-cpu.yaml"))
    assert 64 <= r.model["d_model"] <= 128 and r.model["n_layers"] == 4 and r.model["vocab_size"] == 4096
    assert r.layer_types.count("attention") == 1
    assert all(16 <= b["chunk_size"] <= 64 for b in r.layers if b["kind"] == "carve")


def test_tiny_recipe_forward_backward():
    from hybrid.analytic.measure import build_model

    r = load_recipe(os.path.join(ROOT, "recipes", "tiny-cpu.yaml"))
    model = build_model(r)
    ids = torch.randint(0, 4096, (1, 40))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_sweep_ratios():
    rs = load_sweep(os.path.join(ROOT, "recipes", "sweep-ratios.yaml"))
    assert [r.name for r in rs] == ["ratio-1to0", "ratio-7to1", "ratio-3to1", "ratio-1to1", "ratio-0to1"]
    assert [r.layer_types.count("attention") for r in rs] == [0, 2, 4, 8, 16]
    assert rs[1].variant == {"layout.ratio": "7:1"}


def test_sweep_cartesian_product_and_set(tmp_path):
    base = _write(tmp_path, "b.yaml", """
        model: {d_model: 64, n_layers: 8, vocab_size: 256}
        blocks: {C: {kind: carve, heads: 2, head_dim: 32}, A: {kind: attention, heads: 2, head_dim: 32}}
        layout: {pattern: CCCA}
        train: {steps: 5}
    """)
    sweep = _write(tmp_path, "s.yaml", """
        name: grid
        sweep:
          base: b.yaml
          set: {train.seq_len: 64}
          vary:
            layout.ratio: ["3:1", "1:1"]
            train.lr: [1.0e-3, 3.0e-3, 1.0e-2]
    """)
    rs = load_sweep(sweep, overrides=["train.steps=7"])
    assert len(rs) == 6
    assert len({r.name for r in rs}) == 6
    assert rs[0].name == "grid-ratio3to1-lr0.001"
    assert all(r.train["seq_len"] == 64 and r.train["steps"] == 7 for r in rs)
    assert {r.letters for r in rs} == {"CCCACCCA", "CACACACA"}
    assert load_sweep(base)[0].letters == "CCCACCCA"  # a plain recipe is a one-element sweep


def test_extends_merges_and_overrides(tmp_path):
    _write(tmp_path, "base/m.yaml", """
        name: base-name
        model: {d_model: 64, n_layers: 8, vocab_size: 256, mlp: {kind: swiglu, hidden: 128}}
        blocks:
          C: {kind: carve, heads: 2, head_dim: 32, content_rank: 4}
          A: {kind: attention, heads: 2, head_dim: 32}
        layout: {pattern: CCCA}
        train: {steps: 10, lr: 1.0e-3}
    """)
    child = _write(tmp_path, "child.yaml", """
        extends: base/m.yaml
        model: {n_layers: 4}
        blocks:
          C: {heads: 4}                  # merged into the base template
          A: {kind: attention, heads: 4, head_dim: 16, window: 8}
        layout: {ratio: "1:1", placement: start}   # switches form: the base pattern is dropped
        train: {steps: 20}
    """)
    r = load_recipe(child)
    assert r.name == "child"  # names are not inherited
    assert r.model["n_layers"] == 4 and r.model["d_model"] == 64 and r.model["mlp"]["hidden"] == 128
    assert r.blocks["C"]["heads"] == 4 and r.blocks["C"]["content_rank"] == 4
    assert r.blocks["A"]["window"] == 8
    assert r.letters == "AACC"
    assert r.train == {"steps": 20, "lr": 1.0e-3}


def test_block_kind_change_keeps_only_valid_settings(tmp_path):
    _write(tmp_path, "b.yaml", """
        model: {d_model: 64, n_layers: 2, vocab_size: 256}
        blocks: {C: {kind: carve, heads: 2, head_dim: 32, content_rank: 4}}
        layout: {pattern: C}
    """)
    r = load_recipe(str(tmp_path / "b.yaml"), ["blocks.C.kind=gdn2"])
    assert r.blocks["C"]["kind"] == "gdn2" and r.blocks["C"]["heads"] == 2 and "content_rank" not in r.blocks["C"]


def test_list_of_bases(tmp_path):
    _write(tmp_path, "model.yaml", "model: {d_model: 64, n_layers: 4, vocab_size: 256}\n")
    _write(tmp_path, "blocks.yaml", "blocks: {C: {kind: carve, heads: 2}, A: {kind: attention, heads: 2}}\n")
    p = _write(tmp_path, "r.yaml", "extends: [model.yaml, blocks.yaml]\nlayout: {pattern: CCCA}\n")
    assert load_recipe(p).letters == "CCCA"


def test_overrides_are_yaml_typed():
    base = {"model": {"d_model": 64, "n_layers": 8, "vocab_size": 256},
            "blocks": {"C": {"kind": "carve", "heads": 2}, "A": {"kind": "attention", "heads": 2}},
            "layout": {"pattern": "CCCA"}}
    d = apply_overrides(base, ["layout.ratio=1:1", "train.steps=100", "train.lr=3e-4", "blocks.A.window=null",
                               "model.tie_embeddings=false"])
    assert d["layout"] == {"ratio": "1:1"}  # form switched, pattern removed
    assert d["train"] == {"steps": 100, "lr": "3e-4"} or d["train"]["lr"] == 3e-4
    assert d["blocks"]["A"]["window"] is None and d["model"]["tie_embeddings"] is False
    assert base["layout"] == {"pattern": "CCCA"}  # the input is not modified
    r = recipe_from_dict(base, overrides={"layout.at": {"A": [0]}, "layout.default": "C"})
    assert r.letters == "ACCCCCCC"
    r = recipe_from_dict(base, overrides=["layout.pattern=C C A A"])
    assert r.letters == "CCAACCAA"


def test_yaml_quirks(tmp_path):
    p = _write(tmp_path, "q.yaml", """
        model: {d_model: 64, n_layers: 8, vocab_size: 256, norm_eps: 1e-5}
        blocks:
          carve: &c {kind: carve, heads: 2, head_dim: 32}
          carve2: {<<: *c, heads: 4}
          attn: {kind: attention, heads: 2}
        layout:
          ratio: 3:1            # unquoted: YAML 1.1 would read base-60 181
          recurrent: carve2
    """)
    r = load_recipe(p)
    assert r.model["norm_eps"] == 1e-5
    assert r.layer_names == ["carve2"] * 3 + ["attn"] + ["carve2"] * 3 + ["attn"]
    assert r.letters == "carve2 carve2 carve2 attn carve2 carve2 carve2 attn"
    assert r.blocks["carve2"]["heads"] == 4 and r.blocks["carve2"]["head_dim"] == 32
    assert r.model_config_kwargs()["layers"][3]["kind"] == "attention"


def test_named_pattern_needs_spaces(tmp_path):
    p = _write(tmp_path, "n.yaml", """
        model: {d_model: 64, n_layers: 4, vocab_size: 256}
        blocks: {carve: {kind: carve, heads: 2}, attn: {kind: attention, heads: 2}}
        layout: {pattern: "carve carve carve attn"}
    """)
    assert load_recipe(p).layer_types == ["carve"] * 3 + ["attention"]
    with pytest.raises(RecipeError, match="separated by spaces"):
        load_recipe(p, ["layout.pattern=carveattn"])


def test_recipe_dict_forms():
    r = load_recipe(os.path.join(ROOT, "recipes", "carve-3to1.yaml"))
    d = r.to_dict()
    assert d["layout"] == r.layer_names and len(d["layers"]) == 16
    kw = r.model_config_kwargs()
    assert set(kw) == {"vocab_size", "d_model", "layers", "mlp", "norm_eps", "tie_embeddings",
                       "max_position_embeddings"}
    from hybrid.blocks.config import HybridConfig

    cfg = HybridConfig(**kw)
    assert cfg.layer_types == r.layer_types
    text = r.layout_text()
    assert text.splitlines()[0] == "C C C A C C C A C C C A C C C A"
    assert "x12" in text and "x4" in text


def test_bad_recipe_never_builds(monkeypatch, capsys):
    import hybrid.blocks.model as model_mod
    from hybrid.cli import main

    def boom(*a, **k):
        raise AssertionError("a model was built from a bad recipe")

    monkeypatch.setattr(model_mod.HybridForCausalLM, "__init__", boom)
    bad = os.path.join(ROOT, "tests", "data", "bad_recipes", "block_key_typo.yaml")
    assert main(["build", bad]) == 2
    assert "blocks.C.heds" in capsys.readouterr().err
