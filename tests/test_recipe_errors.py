"""Broken recipes: each file in tests/data/bad_recipes/ states the message it must produce.

Every ``# expect: TEXT`` line of a file is a substring that the RecipeError message must contain
(file:line, key path, what was expected, the near-miss suggestion).
"""

from __future__ import annotations

import glob
import os

import pytest

from hybrid.recipes import RecipeError, load_recipe, load_sweep
from hybrid.recipes.merge import apply_overrides

HERE = os.path.dirname(__file__)
BAD = os.path.join(HERE, "data", "bad_recipes")
FILES = sorted(glob.glob(os.path.join(BAD, "*.yaml")))


def _expectations(path: str) -> list[str]:
    with open(path) as fh:
        return [line.split("# expect:", 1)[1].strip() for line in fh if line.startswith("# expect:")]


def test_there_are_many_broken_recipes():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_bad_recipe_message(path):
    expected = _expectations(path)
    assert expected, f"{path} has no '# expect:' line"
    loader = load_sweep if os.path.basename(path).startswith("sweep_") else load_recipe
    with pytest.raises(RecipeError) as info:
        loader(path)
    msg = str(info.value)
    for text in expected:
        assert text in msg, f"\nexpected: {text}\ngot:      {msg}"


def test_error_attributes_name_file_line_and_key():
    with pytest.raises(RecipeError) as info:
        load_recipe(os.path.join(BAD, "unknown_block_letter.yaml"))
    e = info.value
    assert e.file.endswith("unknown_block_letter.yaml")
    assert e.line == 11
    assert e.key == "layout.pattern"


OK = os.path.join(BAD, "bases", "ok.yaml")


@pytest.mark.parametrize("override,expected", [
    ("layout.ratio=3:x", "override 'layout.ratio=3:x' layout.ratio: expected a ratio 'R:A'"),
    ("model.n_layer=4", "override 'model.n_layer=4' model.n_layer: unknown key; allowed: d_model, n_layers"),
    ("train.steps=ten", "override 'train.steps=ten' train.steps: expected an integer"),
    ("blocks.C.heads=0", "override 'blocks.C.heads=0' blocks.C.heads: must be >= 1"),
    ("layout.pattern.x=1", "cannot set a key inside layout.pattern, which is a str"),
    ("trainsteps", "an override must look like key.path=value"),
    ("layout..ratio=1:1", "not a key path"),
])
def test_bad_override_messages(override, expected):
    with pytest.raises(RecipeError) as info:
        load_recipe(OK, [override])
    assert expected in str(info.value)


def test_apply_overrides_on_plain_dict_reports_the_override():
    with pytest.raises(RecipeError) as info:
        apply_overrides({"layout": {"pattern": "C"}}, ["layout.pattern.x=1"])
    assert "layout.pattern.x=1" in str(info.value)
