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
    assert d["mean_of_tasks"] == {"512": 2, "1024": 2} and d["mean"]["512"] == 75.0
    lo, hi = d["intervals95"]["scores"]["niah_single_1"]["1024"]
    assert lo == 0.0 and hi == pytest.approx(8.76, abs=0.01)  # 0 of 40: z^2 / (n + z^2)
    lo, hi = d["intervals95"]["mean"]["1024"]
    assert lo < 10.0 < hi and hi - lo < 15  # 80 samples behind the mean


def test_eval_samples_default_and_500():
    from hybrid.eval.config import EvalConfig

    assert EvalConfig.from_dict({}).samples == 100
    assert EvalConfig.from_dict({"samples": 500}).samples == 500


def test_held_out_tasks_are_marked_and_averaged_apart():
    run = run_of(100)
    run.held_out = ["vt"]
    text = plain_table(run)
    assert "vt \u2020" in text and "held out: evaluated but never trained on" in text
    assert "mean of 1 tasks" in text and "held-out \u2020 mean of 1 tasks" in text
    d = run.to_dict()
    assert d["mean"]["512"] == 50.0 and d["held_out_mean"]["512"] == 100.0 and d["held_out"] == ["vt"]


def test_skipped_and_thin_cells_are_named():
    run = run_of(100)
    run.scores["vt"].pop(512)
    run.skipped = {"vt": {512: "vt at 512 tokens: length too short"}}
    run.shape = {"niah_single_1": {512: {"unit": "noise lines", "median": 3, "min": 2, "thin": True},
                                   1024: {"unit": "noise lines", "median": 30, "min": 29, "thin": False}}}
    text = plain_table(run)
    assert "task shape: niah_single_1 holds only 3 noise lines at 512" in text and "at 1024" not in text
    assert "task shape: vt does not fit 512 tokens" in text
    assert "mean of the tasks that fit (1/2)" in text  # one task at 512, two at 1024


def test_held_out_recipe_checks():
    from hybrid.recipes.eval_section import check_held_out, parse_eval
    from hybrid.schema import SpecError

    ev = parse_eval({"tasks": ["niah_single_1", "vt"], "held_out": ["vt"]})
    assert ev["tasks"] == ("niah_single_1",) and ev["held_out"] == ("vt",)
    check_held_out(("vt",), {"kind": "ruler_mix", "tasks": ["niah_single_1"]})
    with pytest.raises(SpecError, match="never be trained on"):
        check_held_out(("vt",), {"kind": "ruler_mix", "tasks": ["niah_single_1", "vt"]})
    with pytest.raises(SpecError, match="never be trained on"):  # no tasks given: ruler_mix trains on all
        check_held_out(("vt",), {"kind": "ruler_mix"})


@pytest.mark.parametrize("written, expected", [("off", "off"), ("'off'", "off"), ("self", "self")])
def test_content_off_unquoted_is_read_as_off(written, expected):
    """YAML 1.1 reads an unquoted `off` as False; a CARVE block accepts it as content off."""
    import yaml

    from hybrid.blocks.spec import normalize_block

    block = yaml.safe_load(f"{{kind: carve, heads: 2, content: {written}}}")
    assert normalize_block(block)["content"] == expected


def test_content_on_is_a_clear_error():
    import yaml

    from hybrid.blocks.spec import normalize_block
    from hybrid.schema import SpecError

    with pytest.raises(SpecError, match="content: self"):
        normalize_block(yaml.safe_load("{kind: carve, heads: 2, content: on}"))


def test_recipe_refuses_a_held_out_task_it_trains_on():
    from hybrid.recipes import RecipeError, load_recipe

    ok = load_recipe("recipes/tiny-cpu.yaml", ["train.data={kind: ruler_mix, tasks: [niah_single_1]}",
                                               "eval.held_out=[vt]"])
    assert ok.eval["held_out"] == ["vt"]
    with pytest.raises(RecipeError, match="eval.held_out.*never be trained on"):
        load_recipe("recipes/tiny-cpu.yaml", ["train.data={kind: ruler_mix, tasks: [niah_single_1, vt]}",
                                              "eval.held_out=[vt]"])
