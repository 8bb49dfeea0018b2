"""The one schema style: ``Field`` checks, the train/eval sections parsed by it, the block-kind registry."""

from __future__ import annotations

import dataclasses

import pytest

from hybrid.blocks.spec import BLOCK_KINDS, block_kind, normalize_block
from hybrid.eval.config import EvalConfig
from hybrid.recipes.eval_section import EVAL_FIELDS
from hybrid.recipes.train_section import TRAIN_FIELDS, parse_train
from hybrid.schema import Field, SpecError, check_fields
from hybrid.train.config import DataConfig, TrainConfig

FIELDS = (
    Field("n", int, 3, minimum=1, doc="a count"),
    Field("rate", float, 0.5, above=0.0, maximum=1.0),
    Field("mode", str, "fast", choices=("fast", "exact")),
    Field("name", str, required=True, doc="what to call it"),
    Field("flag", bool, False),
)


def test_defaults_are_filled_and_numbers_converted():
    out = check_fields(FIELDS, {"name": "x", "rate": "1e-1"}, "s")
    assert out == {"n": 3, "rate": 0.1, "mode": "fast", "name": "x", "flag": False}
    assert check_fields(FIELDS, {"name": "x", "rate": 1}, "s")["rate"] == 1.0


@pytest.mark.parametrize("d,message", [
    ({"name": "x", "nn": 1}, "s.nn: unknown key for the probe; allowed: n, rate, mode, name, flag (did you mean 'n'?)"),
    ({}, "s.name: required for the probe (what to call it)"),
    ({"name": "x", "n": 0}, "s.n: must be >= 1, got 0"),
    ({"name": "x", "n": True}, "s.n: expected an integer (a count), got bool True"),
    ({"name": "x", "rate": 0.0}, "s.rate: must be > 0.0, got 0.0"),
    ({"name": "x", "rate": 2}, "s.rate: must be <= 1.0, got 2.0"),
    ({"name": "x", "rate": "fast"}, "s.rate: expected a number, got 'fast'"),
    ({"name": "x", "mode": "exakt"}, "s.mode: must be one of fast, exact; got 'exakt' (did you mean 'exact'?)"),
    ({"name": "x", "flag": 1}, "s.flag: expected true or false, got int 1"),
    ({"name": None}, "s.name: must not be null; expected a string"),
])
def test_messages(d, message):
    with pytest.raises(SpecError) as info:
        check_fields(FIELDS, d, "s", "the probe")
    assert str(info.value) == message


def test_train_config_is_the_train_schema():
    assert [f.name for f in dataclasses.fields(TrainConfig)] == [f.name for f in TRAIN_FIELDS]
    cfg = TrainConfig.from_dict({})
    assert cfg.to_dict() == {**parse_train({}), "betas": [0.9, 0.95]}
    assert cfg.data == DataConfig.from_dict(None)


def test_eval_config_is_the_eval_schema():
    assert [f.name for f in dataclasses.fields(EvalConfig)] == [f.name for f in EVAL_FIELDS]
    ev = EvalConfig.from_dict({"tasks": "niah", "lengths": ["2x", 1024]})
    assert ev.tasks[0] == "niah_single_1" and ev.lengths == ("2x", 1024)
    assert ev.resolved_lengths(512) == [1024, 1024]


def test_every_block_kind_is_registered_with_its_module_formula_and_costs():
    for name, kind in BLOCK_KINDS.items():
        assert kind.name == name and kind.mixer and kind.params is not None and kind.costs is not None
        block = normalize_block({"kind": name, "heads": 2, "head_dim": 32})
        parts = kind.params(block, 64)
        assert all(isinstance(v, int) and v >= 0 for v in parts.values()) and sum(parts.values()) > 0
        assert kind.costs.core_fwd_flops(block, 256) > 0 and kind.costs.core_decode_flops(block, 256) > 0
    with pytest.raises(SpecError, match="unknown block kind 'atention'.*did you mean 'attention'"):
        block_kind("atention")


def test_the_registry_builds_each_kinds_mixer():
    torch = pytest.importorskip("torch")
    for name, kind in BLOCK_KINDS.items():
        block = normalize_block({"kind": name, "heads": 2, "head_dim": 16, "gate_rank": 8}
                                if kind.recurrent else {"kind": name, "heads": 2, "head_dim": 16})
        mixer = kind.build_mixer(block, 32, norm_eps=1e-6)
        assert type(mixer) is kind.mixer_class()
        n = sum(p.numel() for p in mixer.parameters())
        assert n == sum(kind.params(block, 32).values()), name
        assert isinstance(mixer, torch.nn.Module)
