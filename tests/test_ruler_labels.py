"""The RULER run report names its mean for the task count and carries a Wilson interval on every score."""

import re

import pytest

from hybrid.eval.ruler.report import plain_table
from hybrid.eval.ruler.runner import RulerRun


def run_of(samples):
    run = RulerRun(tasks=["niah_single_1", "vt"], lengths=[512, 1024], samples=samples, seed=0, haystack=None)
    run.scores = {"niah_single_1": {512: 50.0, 1024: 0.0}, "vt": {512: 100.0, 1024: 20.0}}
    return run


def test_table_labels_the_mean_and_shows_intervals():
    text = plain_table(run_of(100))
    assert "mean of 2 tasks" in text and not re.search(r"\nmean +\d", text)
    assert "50.0 [40, 60]" in text  # 50 of 100 samples: Wilson 40.4 .. 59.6
    assert "75.0 [69, 80]" in text  # the mean at 512 over 2 tasks x 100 samples
    assert "95% Wilson interval" in text


def test_json_has_intervals_and_the_task_count():
    d = run_of(40).to_dict()
    assert d["mean_of_tasks"] == 2 and d["mean"]["512"] == 75.0
    lo, hi = d["intervals95"]["scores"]["niah_single_1"]["1024"]
    assert lo == 0.0 and hi == pytest.approx(8.76, abs=0.01)  # 0 of 40: z^2 / (n + z^2)
    lo, hi = d["intervals95"]["mean"]["1024"]
    assert lo < 10.0 < hi and hi - lo < 15  # 80 samples behind the mean


def test_eval_samples_default_and_500():
    from hybrid.eval.config import EvalConfig

    assert EvalConfig.from_dict({}).samples == 50
    assert EvalConfig.from_dict({"samples": 500}).samples == 500
