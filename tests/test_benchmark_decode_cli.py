"""The pieces of benchmarks/decode.py that run without a GPU, and one tiny run on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hybrid.blocks import HybridConfig
from hybrid.blocks.static_cache import StaticHybridCache

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
