"""Calibration tables: measuring parts on tiny shapes, the interpolation, the cache and its key,
predictions against a measured step, and the commands that use them (CPU; one GPU check)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hybrid.analytic.calibrate import PartRunner, calibrate, grid_cells
from hybrid.analytic.calibration import (
    cache_dir,
    empty_table,
    interpolate,
    load_table,
    save_table,
    software_key,
    table_path,
)
from hybrid.analytic.parts import distinct, model_parts, signature_key
from hybrid.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny-cpu.yaml")

SMALL_CFG = {
    "vocab_size": 64, "d_model": 32, "mlp": {"kind": "swiglu", "hidden": 64},
    "layers": [{"kind": "carve", "heads": 1, "head_dim": 16, "chunk_size": 16, "gate_rank": 8, "content_rank": 4},
               {"kind": "attention", "heads": 2, "head_dim": 16}],
}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # fewer threads than cores: timings depend less on other processes
    yield
    torch.set_num_threads(n)


def test_grid_cells_keep_lengths_that_fit():
    assert grid_cells((64, 256, 1024), (512,)) == [(8, 64), (2, 256)]
    assert grid_cells((16,), (32, 64)) == [(2, 16), (4, 16)]


def _cells(fn, lengths, tokens):
    return [{"length": t, "tokens": n, "v": fn(n, t)} for t, n in ((t, n) for t in lengths for n in tokens if n >= t)]


def test_interpolation_is_exact_for_fixed_plus_linear_costs():
    # seconds = fixed + N * (per-token + per-token-per-key * T): what attention and recurrent layers follow
    f = lambda n, t: 2e-3 + n * (1e-6 + 3e-9 * t)  # noqa: E731
    cells = _cells(f, (128, 512, 2048), (4096, 16384))
    for n, t in ((8192, 256), (4096, 1000), (16384, 2048), (10000, 700)):
        assert interpolate(cells, t, n, "v") == pytest.approx(f(n, t), rel=1e-9)


def test_interpolation_outside_the_grid_is_bounded():
    f = lambda n, t: n * (1e-6 + 3e-9 * t)  # noqa: E731  (no fixed cost: per token constant in N)
    cells = _cells(f, (128, 512), (4096, 16384))
    # more tokens than measured: the per-token cost of the largest cell carries on
    assert interpolate(cells, 512, 65536, "v") == pytest.approx(f(65536, 512), rel=1e-9)
    # longer sequences: per-token cost keeps growing linearly in T (full attention)
    assert interpolate(cells, 2048, 16384, "v") == pytest.approx(f(16384, 2048), rel=1e-9)
    # shorter sequences than measured: held at the shortest measured length
    assert interpolate(cells, 32, 4096, "v") == pytest.approx(f(4096, 128), rel=1e-9)
    # a cost that would fall with more tokens is never extrapolated below zero slope
    g = lambda n, t: 1.0 - n * 1e-6  # noqa: E731
    assert interpolate(_cells(g, (128,), (4096, 16384)), 128, 65536, "v") == pytest.approx(g(16384, 128))


def test_model_parts_follow_the_layers():
    sigs = model_parts(SMALL_CFG)
    assert [s["part"] for s in sigs] == ["embed", "mixer", "mlp", "mixer", "mlp", "head"]
    assert len(distinct(sigs)) == 5
    assert signature_key(sigs[2]) == signature_key(sigs[4])


def test_cache_round_trip_and_a_changed_version_invalidates(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hybrid"
    assert cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"
    key = software_key("cpu")
    assert {"device", "precision", "torch", "triton", "hybrid"} <= set(key)
    t = empty_table(key)
    t.parts["x"] = {"cells": [{"length": 1, "tokens": 1}]}
    path = save_table(t, cache_dir())
    assert path.parent == cache_dir() and load_table(key, cache_dir()).parts == t.parts
    for field, value in (("torch", "0.0"), ("triton", "0.0"), ("hybrid", "0.0+0"), ("device", "another")):
        assert load_table({**key, field: value}, cache_dir()) is None
    # a file at the right place written for another key is not taken either
    other = {**key, "torch": "0.0"}
    table_path(key, cache_dir()).write_text(json.dumps({"key": other, "parts": {}}))
    assert load_table(key, cache_dir()) is None


def test_calibrate_tiny_shapes_then_keeps_them(tmp_path):
    sigs = distinct(model_parts(SMALL_CFG))
    t = empty_table(software_key("cpu"))
    logs = []
    done = calibrate(t, sigs, "cpu", lengths=(16, 32), tokens=(32, 64), repeats=1, log=logs.append)
    assert len(done["measured"]) == 5 and not done["kept"]
    for s in sigs:
        e = t.parts[signature_key(s)]
        assert [(c["batch"], c["length"]) for c in e["cells"]] == [(2, 16), (4, 16), (1, 32), (2, 32)]
        assert all(c["forward_s"] > 0 and c["backward_s"] > 0 and c["saved_bytes"] > 0 for c in e["cells"])
    assert t.data["optimizer"]["seconds_per_param"] >= 0
    again = calibrate(t, sigs, "cpu", lengths=(16, 32), tokens=(32, 64), repeats=1)
    assert again["kept"] and not again["measured"]
    other_grid = calibrate(t, sigs[:1], "cpu", lengths=(16,), tokens=(32,), repeats=1)
    assert other_grid["measured"]
    p = t.predict_step(SMALL_CFG, 2, 24)
    assert p["seconds"] == pytest.approx(p["forward_s"] + p["backward_s"])
    assert p["peak_bytes"] > p["static_bytes"] > 0
    with pytest.raises(KeyError, match="not calibrated"):
        t.predict_step({**SMALL_CFG, "d_model": 48}, 2, 24)


def _model_saved_bytes(model, batch, length):
    """Distinct tensors autograd keeps for the backward of a whole model step (parameters excluded)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(seen.values())


def test_saved_memory_of_the_parts_adds_up_to_the_model():
    from hybrid.analytic.measure import build_model

    r = load_recipe(TINY)
    cfg = r.model_config_kwargs()
    t = empty_table(software_key("cpu"))
    calibrate(t, distinct(model_parts(cfg)), "cpu", lengths=(32, 128), tokens=(128, 256), repeats=1)
    batch, length = 3, 64  # between the grid points
    predicted = t.predict_step(cfg, batch, length)["saved_bytes"]
    measured = _model_saved_bytes(build_model(r, "cpu"), batch, length)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_part_runner_counts_autocast_copies_only_on_cuda():
    sig = model_parts(SMALL_CFG)[2]
    assert PartRunner(sig, "cpu").fixed_bytes() == 0


@pytest.mark.parametrize("which", range(len(model_parts(SMALL_CFG))))
def test_streamed_timing_runs_every_part(which):
    """The CUDA form of a part's timing (calls back to back, backward = pairs less forwards) runs every
    kind of part here too (the synchronisations are no-ops on the CPU); the parameters' gradients grow
    with the backward calls."""
    runner = PartRunner(model_parts(SMALL_CFG)[which], "cpu")
    x, pos, ids = runner.inputs(2, 16)
    with torch.no_grad():
        out = runner.run(x, pos, ids)
    gout = torch.randn(out.shape) if out.dim() else None
    for p in runner.params:
        p.grad = torch.zeros_like(p)
    fwd, bwd = runner._streamed(x, pos, ids, gout)
    assert fwd > 0 and bwd >= 0
    assert any(p.grad.abs().sum() > 0 for p in runner.params)


def test_prediction_is_within_25_percent_of_a_measured_cpu_step(one_thread):
    from hybrid.analytic.measure import build_model, time_train_step

    r = load_recipe(TINY)
    cfg = r.model_config_kwargs()
    model = build_model(r, "cpu")
    batch, length = 4, 128  # 512 tokens: between the grid's token counts and its lengths
    errors = []
    for _ in range(3):  # a loaded shared CPU can slow one measurement down; each attempt redoes both
        t = empty_table(software_key("cpu"))
        calibrate(t, distinct(model_parts(cfg)), "cpu", lengths=(64, 256), tokens=(256, 1024), repeats=5)
        predicted = t.predict_step(cfg, batch, length, param_count=sum(p.numel() for p in model.parameters()))
        measured = time_train_step(model, batch, length, warmup=2, repeats=7)["seconds"]
        errors.append((predicted["seconds"] - measured) / measured)
        if abs(errors[-1]) <= 0.25:
            break
    assert abs(errors[-1]) <= 0.25, f"relative errors of the calibrated step time: {errors}"


# ---------------------------------------------------------------------------------------------- commands


def _calibrate_tiny(folder):
    from hybrid.cli import main

    assert main(["calibrate", TINY, "--device", "cpu", "--lengths", "32,64", "--tokens", "128", "--repeats", "1",
                 "--cache-dir", str(folder)]) == 0


def test_build_and_frontier_use_the_calibration_or_say_how(tmp_path, capsys):
    from hybrid.cli import main

    build = ["build", TINY, "--device", "cpu", "--batch", "2", "--length", "48", "--no-measure", "--json"]
    assert main(build + ["--cache-dir", str(tmp_path / "none")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "hybrid calibrate" in rep["calibration"]["hint"] and "\n" not in rep["calibration"]["hint"]
    assert "step_time_calibrated" not in {row["key"] for row in rep["rows"]}

    _calibrate_tiny(tmp_path / "cal")
    assert list((tmp_path / "cal").glob("calibration-*.json"))
    capsys.readouterr()
    assert main(build + ["--cache-dir", str(tmp_path / "cal")]) == 0
    rep = json.loads(capsys.readouterr().out)
    rows = {row["key"]: row for row in rep["rows"]}
    assert rows["step_time_calibrated"]["predicted"] > 0 and rows["step_time"]["predicted"] > 0
    assert rows["peak_mem_calibrated"]["predicted"] > 0
    assert rep["calibration"]["prediction"]["seconds"] == rows["step_time_calibrated"]["predicted"]

    fr = ["frontier", TINY, "--cost", "step-time", "--ratios", "0,1", "--length", "64", "--batch", "2", "--json",
          "--out", str(tmp_path / "fr")]
    assert main(fr + ["--device", "cpu", "--cache-dir", str(tmp_path / "cal")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["calibrated_on"] and res["cost_label"] == "calibrated train-step time"
    assert all(p["costs"]["step-time-roofline"] > 0 and p["cost"] == p["costs"]["step-time"] for p in res["points"])
    assert main(fr + ["--device", "cpu", "--cache-dir", str(tmp_path / "none")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["calibrated_on"] is None and all(p["cost"] == p["costs"]["step-time-roofline"] for p in res["points"])


def test_calibrate_refuses_bad_input(tmp_path, capsys):
    from hybrid.cli import main

    assert main(["calibrate", str(tmp_path / "missing.yaml"), "--cache-dir", str(tmp_path)]) == 2
    assert main(["calibrate", TINY, "--device", "cpu", "--repeats", "0", "--cache-dir", str(tmp_path)]) == 2
    assert main(["calibrate", str(ROOT / "recipes" / "sweep-ratios.yaml"), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "sweep file" in err
    with pytest.raises(SystemExit):
        main(["calibrate", TINY, "--lengths", "0,64"])


def _models_bench():
    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_models_benchmark_on_a_tiny_recipe(tmp_path, capsys):
    bench = _models_bench()
    _calibrate_tiny(tmp_path / "cal")
    capsys.readouterr()
    assert bench.main([TINY, "--layouts", "transformer,3:1", "--shapes", "2x32,1x64", "--device", "cpu",
                       "--warmup", "1", "--steps", "1", "--json", "--cache-dir", str(tmp_path / "cal")]) == 0
    out = capsys.readouterr().out
    table, js = out.split("\n{", 1)
    res = json.loads("{" + js)
    assert [(q["layout"], q["batch"], q["length"]) for q in res["rows"]] == [
        ("transformer", 2, 32), ("transformer", 1, 64), ("3:1", 2, 32), ("3:1", 1, 64)]
    assert all(q["tokens_per_s"] > 0 and q["predicted_step_s"] > 0 for q in res["rows"])
    assert res["rows"][0]["vs_first"] == 1.0 and res["rows"][0]["mfu"] is None  # no CPU peak FLOP/s
    assert table.count("\n| ") == 1 + 1 + 4 and "calibrated step" in table
    assert bench.parse_layouts("carve,7:1")[0][1] == 0
    with pytest.raises(SystemExit):
        bench.parse_shapes("8by4096")


# --------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_calibrated_prediction_on_the_gpu(tmp_path):
    """carve-3to1 (16 layers, width 512) at 8 x 2048: step within 15%, peak within 10% of the measurement."""
    from hybrid.analytic.measure import build_model, time_train_step

    r = load_recipe(str(ROOT / "recipes" / "carve-3to1.yaml"))
    cfg = r.model_config_kwargs()
    t = empty_table(software_key("cuda"))
    calibrate(t, distinct(model_parts(cfg)), "cuda", lengths=(1024, 4096), tokens=(8192, 32768), repeats=3)
    model = build_model(r, "cuda")
    batch, length = 8, 2048
    m = time_train_step(model, batch, length, warmup=2, repeats=5)
    p = t.predict_step(cfg, batch, length, param_count=sum(q.numel() for q in model.parameters()))
    assert abs(p["seconds"] - m["seconds"]) / m["seconds"] <= 0.15, (p["seconds"], m["seconds"])
    assert abs(p["peak_bytes"] - m["peak_bytes"]) / m["peak_bytes"] <= 0.10, (p["peak_bytes"], m["peak_bytes"])


def test_shipped_recipes_are_the_top_level_recipe_files():
    from hybrid.commands.calibrate import shipped_recipes

    names = [Path(p).name for p in shipped_recipes()]
    assert "tiny-cpu.yaml" in names and "carve-350m-3to1.yaml" in names
    assert "small.yaml" not in names  # recipes/base/ holds bases, not recipes
