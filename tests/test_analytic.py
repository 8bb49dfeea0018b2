"""The analytic cost model against hand derivations and against the real model's measurements."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import pytest
import torch

from hybrid.analytic import compare, costs, frontier
from hybrid.analytic.measure import build_model, count_parameters, prefill_cache_bytes, tensor_bytes
from hybrid.analytic.rates import KNOWN, DeviceRates, rates_for
from hybrid.analytic.roofline import predict_step_time
from hybrid.blocks.spec import normalize_block
from hybrid.recipes import load_recipe, recipe_from_dict

ROOT = os.path.dirname(os.path.dirname(__file__))


def tiny(layout="CCWA", window=16, n_layers=4, **model):
    return recipe_from_dict({
        "model": {"d_model": 64, "n_layers": n_layers, "vocab_size": 512, **model},
        "blocks": {"C": {"kind": "carve", "heads": 2, "head_dim": 32, "chunk_size": 16, "gate_rank": 16},
                   "G": {"kind": "gdn2", "heads": 2, "head_dim": 16, "value_dim": 32, "chunk_size": 16},
                   "A": {"kind": "attention", "heads": 4, "kv_heads": 2, "head_dim": 16},
                   "W": {"kind": "attention", "heads": 2, "head_dim": 32, "window": window}},
        "layout": {"pattern": layout},
    })


def test_mean_context():
    assert costs.mean_context(8, None) == 4.5
    assert costs.mean_context(8, 100) == 4.5
    # window 2 over 4 tokens: contexts 1, 2, 2, 2
    assert costs.mean_context(4, 2) == pytest.approx(7 / 4)


def test_core_flops_by_hand():
    att = normalize_block({"kind": "attention", "heads": 4, "head_dim": 64})
    assert costs.core_fwd_flops(att, 1000) == 4 * 4 * 64 * 500.5
    assert costs.core_decode_flops(att, 1000) == 4 * 4 * 64 * 1000
    rec = normalize_block({"kind": "carve", "heads": 4, "head_dim": 64, "chunk_size": 64})
    assert costs.core_fwd_flops(rec, 4096) == 4 * (6 * 64 * 64 + 64 * (6 * 64 + 4 * 64) + 64 * 64 / 3)
    assert costs.core_decode_flops(rec, 10**6) == 7 * 4 * 64 * 64


def test_toy_crossovers_match_the_closed_forms():
    # notes/ruler-hybrid-data.md 3.3 toy config: h = 4, K = V = d_h = 64, bf16 cache, fp32 state
    rec = normalize_block({"kind": "carve", "heads": 4, "head_dim": 64})
    att = normalize_block({"kind": "attention", "heads": 4, "head_dim": 64})
    pl = compare.per_layer_crossovers(rec, att, 2)
    assert pl["T_mem"] == 64 and pl["T_flop"] == 112
    # whole model of one layer: the bisection finds the first length where the hybrid is not dearer;
    # the recurrent layer's small bookkeeping (conv state, chunk mean) moves it by a few tokens
    cfg = {"d_model": 256, "vocab_size": 100, "layers": [rec], "mlp": {"kind": "none"}}
    cx = compare.crossovers(cfg, 2)
    assert 64 <= cx["cache_memory"] <= 64 + 20
    assert cx["reference"].startswith("pure transformer")


def test_crossover_edge_cases():
    assert compare.crossover(lambda x: 0, lambda x: 1) == "always"
    assert compare.crossover(lambda x: 2, lambda x: 1) is None
    assert compare.crossover(lambda x: 100, lambda x: x) == 100


def test_recall_capacity_proxy():
    C = normalize_block({"kind": "carve", "heads": 4, "head_dim": 64})
    A = normalize_block({"kind": "attention", "heads": 4, "head_dim": 64})
    W = normalize_block({"kind": "attention", "heads": 4, "head_dim": 64, "window": 800})
    assert compare.recall_capacity([C, C], 80000, 8) == 256  # one layer's H*K, not the sum
    assert compare.recall_capacity([C], 800, 8) == 100  # never more than the facts in context
    assert compare.recall_capacity([C, A], 80000, 8) == 10000
    assert compare.recall_capacity([C, W], 80000, 8) == 100 + 256
    assert compare.recall_capacity([W], 80000, 8) == 100


def test_params_and_cache_match_the_built_model():
    r = tiny("CGWA")
    model = build_model(r)
    c = costs.ModelCosts(r.model_config_kwargs())
    assert count_parameters(model) == c.params()["total"]
    for t in (5, 16, 40):  # below, at and above the window of W
        assert prefill_cache_bytes(model, t) == c.cache_bytes(t, 4)["total"]


def test_train_flops_match_torch_counter_for_attention():
    from hybrid.analytic.report import count_flops

    r = tiny("A", n_layers=2)
    model = build_model(r)
    n = 32
    counted = count_flops(model, 1, n) / n
    predicted = costs.ModelCosts(r.model_config_kwargs()).train_flops_per_token(n)
    # the projections/MLP/head part is exact; torch counts the causal core as full N x N
    assert abs(predicted["total"] - counted) / counted < 0.05


def test_peak_memory_terms_and_roofline():
    r = load_recipe(os.path.join(ROOT, "recipes", "carve-350m-3to1.yaml"))
    c = costs.ModelCosts(r.model_config_kwargs())
    p = c.train_peak_bytes(8, 4096, 2)
    assert p["weights"] == p["grads"] == 4 * c.params()["total"]
    assert p["total"] == pytest.approx(sum(v for k, v in p.items() if k != "total"))
    h200 = KNOWN["H200"]
    t1 = predict_step_time(c, 4, 4096, 2, h200)
    t2 = predict_step_time(c, 8, 4096, 2, h200)
    assert t2["seconds"] > t1["seconds"] > 0
    for part in t2["parts"]:
        want = max(part["flops"] / h200.matmul_flops, part["bytes"] / h200.bandwidth)
        assert part["seconds"] == pytest.approx(want)
    # a device twice as fast everywhere halves the prediction
    fast = DeviceRates("x", 2 * h200.matmul_flops, 2 * h200.bandwidth, "bf16", "test")
    assert predict_step_time(c, 8, 4096, 2, fast)["seconds"] == pytest.approx(t2["seconds"] / 2)


def test_rates():
    assert KNOWN["H200"].matmul_flops == 788e12 and KNOWN["H200"].bandwidth == 4.3e12
    r = rates_for("cpu")
    assert r.matmul_flops > 1e8 and r.bandwidth > 1e8 and "measured" in r.source


def test_tensor_bytes_counts_each_tensor_once():
    t = torch.zeros(10)
    assert tensor_bytes([t, t, {"a": t[:5]}, torch.zeros(3, dtype=torch.int8)]) == 40 + 20 + 3


def test_frontier_points_and_optimum(tmp_path):
    r = load_recipe(os.path.join(ROOT, "recipes", "carve-3to1.yaml"))
    fr = frontier.parse_fractions("0,1/8,1/4,1/2,1")
    assert fr == [Fraction(0), Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1)]
    assert frontier.parse_fractions("3:1, 1:0") == [Fraction(0), Fraction(1, 4)]
    with pytest.raises(ValueError):
        frontier.parse_fractions("2")
    res = frontier.frontier(r, fr, 8192, facts=600)
    pts = res["points"]
    assert [p["n_attention"] for p in pts] == [0, 2, 4, 8, 16]
    costs_ = [p["cost"] for p in pts]
    assert costs_ == sorted(costs_)  # more attention costs more training FLOPs at 8K
    assert res["optimum"] == "7:1"  # 600 facts exceed one CARVE layer's 4 x 128 = 512
    assert [p["pareto"] for p in pts] == [True, True, False, False, False]
    assert frontier.frontier(r, fr, 8192, facts=100)["optimum"] == "1:0"
    assert frontier.frontier(r, fr, 8192, facts=10**6)["optimum"] is None
    png = frontier.plot(res, str(tmp_path / "f.png"))
    assert os.path.getsize(png) > 1000


def test_frontier_on_pure_recipe_adds_default_attention():
    r = load_recipe(os.path.join(ROOT, "recipes", "tiny-cpu.yaml"), ["layout.pattern=C"])
    res = frontier.frontier(r, [Fraction(0), Fraction(1, 2)], 1024)
    assert [p["n_attention"] for p in res["points"]] == [0, 2]


def test_build_command_json_no_measure(capsys):
    from hybrid.cli import main

    assert main(["build", os.path.join(ROOT, "recipes", "carve-3to1.yaml"), "--no-measure", "--json",
                 "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out)
    keys = {r["key"] for r in rep["rows"]}
    assert {"params", "train_flops", "act_mem", "decode_flops", "cache", "step_time", "peak_mem"} <= keys
    assert all(r["measured"] is None for r in rep["rows"])
    assert [c["length"] for c in rep["cache_by_length"]] == [1024, 4096, 16384, 65536, 131072]
    assert rep["not_measured"]


def test_build_command_measures_tiny(capsys, tmp_path):
    from hybrid.cli import main

    rc = main(["build", os.path.join(ROOT, "recipes", "tiny-cpu.yaml"), "--device", "cpu", "--batch", "1",
               "--length", "32", "--json", "--out", str(tmp_path)])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in rep["rows"]}
    assert rows["params"]["rel_error"] == 0 and rows["cache"]["rel_error"] == 0
    assert rows["step_time"]["measured"] > 0 and math.isfinite(rows["step_time"]["rel_error"])
    assert rows["peak_mem"]["measured"] is None and any("peak memory" in s for s in rep["not_measured"])
    assert os.path.exists(tmp_path / "report.json")


def test_print_layout(capsys):
    from hybrid.cli import main

    assert main(["build", os.path.join(ROOT, "recipes", "carve-7to1.yaml"), "--print-layout"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "C C C C C C C A C C C C C C C A"
    assert "attention" in out and "carve" in out


def test_frontier_command(tmp_path, capsys):
    from hybrid.cli import main

    assert main(["frontier", os.path.join(ROOT, "recipes", "carve-3to1.yaml"), "--ratios", "0,1/8,1/4",
                 "--length", "8192", "--facts", "600", "--out", str(tmp_path)]) == 0
    assert os.path.getsize(tmp_path / "frontier.png") > 1000
    res = json.loads((tmp_path / "frontier.json").read_text())
    assert res["optimum"] == "7:1"
