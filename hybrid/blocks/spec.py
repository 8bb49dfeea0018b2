"""Block kinds and their settings: the one place where a layer kind is registered.

A layer is described by a plain dict, e.g. ``{"kind": "carve", "heads": 6, "head_dim": 128}``.
``normalize_block(d)`` fills defaults and checks every key and value, raising ``SpecError`` with
the key path and a near-miss suggestion. The recipe language, the model config and the analytic
model all read block settings through this module.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A bad block/model setting. ``path`` is the dotted key path (e.g. ``blocks.C.heads``)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Field:
    name: str
    type: type | tuple
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    minimum: int | None = None
    nullable: bool = False
    doc: str = ""


@dataclass(frozen=True)
class BlockKind:
    name: str
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)
    recurrent: bool = True

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


_COMMON_RECURRENT = (
    Field("heads", int, required=True, minimum=1, doc="number of heads H"),
    Field("head_dim", int, 128, minimum=1, doc="key dim K (and value dim unless value_dim is set)"),
    Field("value_dim", int, None, minimum=1, nullable=True, doc="value dim V (default: head_dim)"),
    Field("chunk_size", int, 64, minimum=1, doc="chunk length C of the chunked operator"),
    Field("conv_size", int, 4, minimum=1, doc="causal short-convolution width"),
    Field("gate_rank", int, 128, minimum=1, doc="rank of the low-rank decay and output-gate projections"),
)

BLOCK_KINDS: dict[str, BlockKind] = {
    "carve": BlockKind(
        "carve",
        "CARVE: key-axis erase with a content-aware gate, one write scalar per head",
        _COMMON_RECURRENT
        + (
            Field("content", str, "self", choices=("self", "off"), doc="content signal: own output or off"),
            Field("content_rank", int, 16, minimum=1, doc="rank r of the content projection"),
            Field("content_grad", str, "full", choices=("full", "detach"), doc="gradient through m"),
        ),
    ),
    "gdn2": BlockKind(
        "gdn2",
        "Gated DeltaNet-2 baseline: key-axis erase, vector write gate, no content",
        _COMMON_RECURRENT,
    ),
    "attention": BlockKind(
        "attention",
        "softmax attention with GQA and RoPE; full causal or sliding window",
        (
            Field("heads", int, required=True, minimum=1, doc="query heads"),
            Field("kv_heads", int, None, minimum=1, nullable=True, doc="key/value heads (default: heads)"),
            Field("head_dim", int, 64, minimum=1, doc="head dim"),
            Field("window", int, None, minimum=1, nullable=True, doc="sliding window in tokens; null = full"),
            Field("rope_theta", float, 10000.0, doc="RoPE base"),
            Field("backend", str, "auto", choices=("auto", "flash_attn", "sdpa", "flex", "varlen", "math"),
                  doc="attention backend; auto picks the fastest exact one available"),
        ),
        recurrent=False,
    ),
}

MLP_KINDS = ("swiglu", "none")


def _check_value(f: Field, value: Any, path: str) -> Any:
    if value is None:
        if f.nullable or (not f.required and f.default is None):
            return None
        raise SpecError(path, f"must not be null; expected {_type_name(f.type)}")
    if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, f.type):
        raise SpecError(path, f"expected {_type_name(f.type)}, got {type(value).__name__} {value!r}")
    if f.choices is not None and value not in f.choices:
        raise SpecError(path, f"must be one of {', '.join(map(str, f.choices))}; got {value!r}{suggest(value, f.choices)}")
    if f.minimum is not None and value < f.minimum:
        raise SpecError(path, f"must be >= {f.minimum}, got {value}")
    return value


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(t, getattr(t, "__name__", str(t)))


def normalize_block(d: dict, path: str = "") -> dict:
    """Validate a block dict and return it with every default filled in (a new dict)."""
    if not isinstance(d, dict):
        raise SpecError(path, f"a block must be a mapping with a 'kind', got {type(d).__name__}")
    kind = d.get("kind")
    p = (path + ".") if path else ""
    if kind is None:
        raise SpecError(p + "kind", f"missing; expected one of {', '.join(BLOCK_KINDS)}")
    if kind not in BLOCK_KINDS:
        raise SpecError(p + "kind", f"unknown block kind {kind!r}; known: {', '.join(BLOCK_KINDS)}{suggest(kind, BLOCK_KINDS)}")
    spec = BLOCK_KINDS[kind]
    names = spec.field_names()
    for key in d:
        if key != "kind" and key not in names:
            raise SpecError(p + str(key), f"unknown key for a '{kind}' block; allowed: {', '.join(names)}{suggest(key, names)}")
    out = {"kind": kind}
    for f in spec.fields:
        if f.name in d:
            out[f.name] = _check_value(f, d[f.name], p + f.name)
        elif f.required:
            raise SpecError(p + f.name, f"required for a '{kind}' block ({f.doc})")
        else:
            out[f.name] = f.default
    if kind in ("carve", "gdn2") and out["value_dim"] is None:
        out["value_dim"] = out["head_dim"]
    if kind == "attention":
        if out["kv_heads"] is None:
            out["kv_heads"] = out["heads"]
        if out["heads"] % out["kv_heads"] != 0:
            raise SpecError(p + "kv_heads", f"heads ({out['heads']}) must be a multiple of kv_heads ({out['kv_heads']})")
        if out["head_dim"] % 2:
            raise SpecError(p + "head_dim", f"must be even for RoPE, got {out['head_dim']}")
        if not out["rope_theta"] > 0:
            raise SpecError(p + "rope_theta", f"must be > 0, got {out['rope_theta']}")
    if kind in ("carve", "gdn2") and (out["head_dim"] > 256 or out["value_dim"] > 256):
        raise SpecError(p + "head_dim", "CARVE/GDN-2 head dims must be <= 256 (kernel limit)")
    return out


def is_recurrent(block: dict) -> bool:
    return BLOCK_KINDS[block["kind"]].recurrent


def default_mlp_hidden(d_model: int) -> int:
    """SwiGLU hidden width ~ 8/3 d, rounded up to a multiple of 64."""
    return ((8 * d_model // 3) + 63) // 64 * 64


def normalize_mlp(d: dict | None, d_model: int, path: str = "model.mlp") -> dict:
    d = {} if d is None else dict(d)
    kind = d.pop("kind", "swiglu")
    if kind not in MLP_KINDS:
        raise SpecError(path + ".kind", f"unknown mlp kind {kind!r}; known: {', '.join(MLP_KINDS)}{suggest(kind, MLP_KINDS)}")
    hidden = d.pop("hidden", None)
    for key in d:
        raise SpecError(f"{path}.{key}", f"unknown key for the mlp; allowed: kind, hidden{suggest(key, ['kind', 'hidden'])}")
    if kind == "none":
        return {"kind": "none", "hidden": 0}
    if hidden is None:
        hidden = default_mlp_hidden(d_model)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise SpecError(path + ".hidden", f"expected a positive integer, got {hidden!r}")
    return {"kind": kind, "hidden": hidden}
