"""The pieces of benchmarks/decode.py that run without a GPU, and one tiny run on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hybrid.blocks import HybridConfig
from hybrid.blocks.static_cache import StaticHybridCache
from hybrid.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_decode", ROOT / "benchmarks" / "decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cache_size_estimate_is_the_allocated_size():
    bench = _bench()
    layers = [{"kind": "carve", "heads": 2, "head_dim": 16, "chunk_size": 8, "content_rank": 4},
              {"kind": "attention", "heads": 4, "kv_heads": 2, "head_dim": 8, "window": 5},
              {"kind": "gdn2", "heads": 2, "head_dim": 16, "chunk_size": 8},
              {"kind": "attention", "heads": 4, "kv_heads": 2, "head_dim": 8}]
    cfg = HybridConfig(vocab_size=64, d_model=32, layers=layers)
    cache = StaticHybridCache(cfg, 3, 40, dtype=torch.bfloat16)
    allocated = cache.lengths.nbytes + sum(t.nbytes for layer in cache.layers for t in layer.buffers())
    assert 3 * bench.cache_bytes_per_row(cfg, 40, 2) == allocated


def test_markdown_table_ratios_and_skips():
    bench = _bench()
    rows = [dict(layout="A", name="transformer", context=8192, batch=1, prefill_ms=10.0, ms_per_token=4.0,
                 tokens_per_s=250.0),
            dict(layout="C", name="all CARVE", context=8192, batch=1, prefill_ms=5.0, ms_per_token=1.0,
                 tokens_per_s=1000.0),
            dict(layout="A", name="transformer", context=131072, batch=64, prefill_ms=99.0,
                 skipped="the cache needs about 206 GiB, 130 GiB free")]
    table = bench.markdown(rows).splitlines()
    assert table[2].startswith("| transformer (A) | 8192 | 1 | 10.0 | 4.000 | 250.0 | 1.0x |")
    assert table[3].endswith("| 1.000 | 1000.0 | 4.0x |")
    assert "skipped: the cache needs about 206 GiB" in table[4]


@pytest.mark.parametrize("flag", ["--contexts=8k", "--batches=0", "--steps=0"])
def test_bad_arguments_are_refused(flag):
    with pytest.raises(SystemExit):
        _bench().main([flag])


def test_tiny_run_on_cpu(tmp_path):
    out = tmp_path / "decode.json"
    _bench().main(["--recipe", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--layouts", "CCCA", "--contexts", "40",
                   "--batches", "2", "--steps", "2", "--repeats", "1", "--device", "cpu", "--dynamic",
                   "--json", str(out)])
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["letters"] == "CCCA" and row["batch"] == 2 and row["ms_per_token"] > 0 and not row["graph"]
    assert row["max_len"] == 40 + 3 + 2 + 1 and row["dynamic_ms_per_token"] > 0
    assert "speed-up" in res["markdown"]


@pytest.mark.gpu
def test_tiny_run_on_cuda(tmp_path):
    out = tmp_path / "decode.json"
    _bench().main(["--recipe", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--layouts", "A,CCCA", "--contexts", "300",
                   "--batches", "1,3", "--steps", "4", "--repeats", "2", "--dynamic", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["graph"] and r["ms_per_token"] > 0 and r["dynamic_ms_per_token"] > 0
                                  for r in rows)


def test_ratio_takes_the_transformer_at_the_largest_batch_it_fits():
    bench = _bench()
    rows = [dict(layout="C", name="all CARVE", context=131072, batch=32, prefill_ms=5.0, ms_per_token=2.0,
                 tokens_per_s=16000.0),
            dict(layout="A", name="transformer", context=131072, batch=32, prefill_ms=9.0,
                 skipped="the cache needs about 160.0 GiB, 130.0 GiB free"),
            dict(layout="A", name="transformer", context=131072, batch=24, stands_in_for=32, prefill_ms=9.0,
                 ms_per_token=20.0, tokens_per_s=1200.0)]
    assert bench.ratios(rows) == [dict(layout="C", name="all CARVE", context=131072, batch=32,
                                       transformer_batch=24, ratio=round(16000 / 1200, 2))]
    table = bench.markdown(rows).splitlines()
    assert "| 13.3x (transformer at batch 24) |" in table[2]
    assert "| 24 (the most that fits; 32 asked) |" in table[4] and table[4].endswith("| 1200.0 | - |")
    # a transformer row at the batch itself is preferred to a stand-in
    rows.append(dict(layout="A", name="transformer", context=131072, batch=32, prefill_ms=9.0, ms_per_token=30.0,
                     tokens_per_s=1066.7))
    assert bench.ratios(rows)[0]["transformer_batch"] == 32


def test_transformer_that_does_not_fit_is_timed_at_the_largest_batch_it_fits(tmp_path, capsys):
    """With a memory budget that holds 8 rows of the all-CARVE cache but fewer of the transformer's."""
    bench = _bench()
    recipe = str(ROOT / "recipes" / "tiny-cpu.yaml")
    ctx, batch, max_len = 200, 8, 200 + bench.WARMUP_STEPS + 2 + 1
    cfg = {p: HybridConfig(**load_recipe(recipe, [f"layout.pattern={p}"]).model_config_kwargs()) for p in "AC"}
    plan = max(bench.prefill_bytes(cfg["A"], ctx), bench.prefill_bytes(cfg["C"], ctx),
               bench.decode_bytes(cfg["C"], batch, max_len, 4), 0.6 * bench.decode_bytes(cfg["A"], batch, max_len, 4))
    fit = int(plan // bench.decode_bytes(cfg["A"], 1, max_len, 4))
    assert plan < bench.decode_bytes(cfg["A"], batch, max_len, 4) and 1 <= fit < batch
    out = tmp_path / "decode.json"
    bench.main(["--recipe", recipe, "--layouts", "C,A", "--contexts", str(ctx), "--batches", str(batch), "--steps", "2",
                "--repeats", "1", "--device", "cpu", "--memory-budget", str(plan / bench.FREE_SHARE / 2**30 * 1.0001),
                "--json", str(out)])
    res = json.loads(out.read_text())
    c, a_skipped, a_fit = res["rows"]
    assert c["layout"] == "C" and c["batch"] == batch and c["tokens_per_s"] > 0
    assert a_skipped["layout"] == "A" and a_skipped["skipped"].startswith("the cache needs about")
    assert a_fit["batch"] == fit and a_fit["stands_in_for"] == batch and a_fit["tokens_per_s"] > 0
    (ratio,) = res["ratios"]
    assert ratio["transformer_batch"] == fit and ratio["ratio"] == round(c["tokens_per_s"] / a_fit["tokens_per_s"], 2)
    assert f"against the transformer at batch {fit}, the most it fits" in capsys.readouterr().out


def test_memory_budget_must_be_positive():
    with pytest.raises(SystemExit):
        _bench().main(["--memory-budget", "0"])
