"""``hybrid build`` on a CPU: progress lines, and a 350M recipe whose timed step is over budget builds
on the meta device (exact parameter count, nothing allocated) instead of initialising 350M weights."""

from __future__ import annotations

import time
from pathlib import Path

from hybrid.analytic.report import build_report
from hybrid.recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_large_recipe_skips_what_it_cannot_measure_in_budget():
    recipe = load_recipe(str(ROOT / "recipes" / "carve-350m-3to1.yaml"))
    said = []
    t = time.perf_counter()
    report = build_report(recipe, device="cpu", max_seconds=120, log=said.append)
    seconds = time.perf_counter() - t
    assert said[0].startswith("building the model (351M parameters) on meta (shapes only")
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["params"]["measured"] == rows["params"]["predicted"] == 351253904
    assert rows["step_time"]["measured"] is None and rows["cache"]["measured"] is None
    notes = " ".join(report["not_measured"])
    assert "cache bytes: a prefill of 4096 tokens would take about" in notes
    assert "step time and FLOP count" in notes
    assert seconds < 60  # several minutes when the weights were initialised and the prefill run


def test_small_recipe_is_measured_with_progress():
    recipe = load_recipe(str(ROOT / "recipes" / "tiny-cpu.yaml"))
    said = []
    report = build_report(recipe, device="cpu", batch=1, length=64, log=said.append, count=False)
    assert said[0].startswith("building the model (") and said[0].endswith("on cpu")
    assert any(s.startswith("timing 2 training steps at batch 1 x 64 tokens") for s in said)
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["cache"]["measured"] > 0 and rows["step_time"]["measured"] > 0
