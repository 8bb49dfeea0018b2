"""Block kinds: the one place where a layer kind is registered.

A layer is described by a plain dict, e.g. ``{"kind": "carve", "heads": 6, "head_dim": 128}``.
Each kind is registered once in ``BLOCK_KINDS`` with its settings (``Field``s), its token-mixer class,
its parameter-count formula and its analytic cost functions; the model, the parameter counts, the
analytic model, the recipe layout and the cache ask ``block_kind(...)`` instead of branching on kind
names. ``normalize_block(d)`` fills defaults and checks every key and value, raising ``SpecError``
with the key path and a near-miss suggestion. The model-wide settings (the recipe's ``model:``
section, ``MODEL_FIELDS`` and ``MLP_FIELDS``) are checked here too, by ``normalize_model``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from hybrid.schema import Field, SpecError, check_fields, suggest

from .mixer_costs import ATTENTION, RECURRENT, MixerCosts
from .mixer_params import attention_mixer_params, carve_mixer_params, gdn2_mixer_params


def _no_finish(out: dict, path: str) -> None:
    return None


@dataclass(frozen=True)
class BlockKind:
    """A registered block kind.

    ``mixer`` is the token-mixer class as ``module.Class`` under ``hybrid.blocks`` (imported on first
    use, so that validating a recipe needs no torch); it is built as ``Class(block, d_model, **opts)``
    where ``opts`` are the model settings named in ``mixer_options``. ``params(block, d)`` counts the
    mixer's parameters per tensor group; ``costs`` holds its analytic cost functions; ``finish(block,
    path)`` fills derived defaults and checks settings against each other."""

    name: str
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)
    recurrent: bool = True
    mixer: str = ""
    mixer_options: tuple[str, ...] = ()
    params: Callable[[dict, int], dict] | None = None
    costs: MixerCosts | None = None
    finish: Callable[[dict, str], None] = _no_finish

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def mixer_class(self):
        module, cls = self.mixer.rsplit(".", 1)
        return getattr(importlib.import_module(f"hybrid.blocks.{module}"), cls)

    def build_mixer(self, block: dict, d_model: int, **settings):
        """The token mixer of one layer; ``settings`` are model settings (those in ``mixer_options`` are passed)."""
        return self.mixer_class()(block, d_model, **{k: settings[k] for k in self.mixer_options})


def _finish_recurrent(out: dict, p: str) -> None:
    if out["value_dim"] is None:
        out["value_dim"] = out["head_dim"]
    if out["head_dim"] > 256 or out["value_dim"] > 256:
        raise SpecError(p + "head_dim", "CARVE/GDN-2 head dims must be <= 256 (kernel limit)")


def _finish_attention(out: dict, p: str) -> None:
    if out["kv_heads"] is None:
        out["kv_heads"] = out["heads"]
    if out["heads"] % out["kv_heads"] != 0:
        raise SpecError(p + "kv_heads", f"heads ({out['heads']}) must be a multiple of kv_heads ({out['kv_heads']})")
    if out["head_dim"] % 2:
        raise SpecError(p + "head_dim", f"must be even for RoPE, got {out['head_dim']}")


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
        mixer="recurrent.RecurrentMixer", mixer_options=("norm_eps",), params=carve_mixer_params,
        costs=RECURRENT, finish=_finish_recurrent,
    ),
    "gdn2": BlockKind(
        "gdn2",
        "Gated DeltaNet-2 baseline: key-axis erase, vector write gate, no content",
        _COMMON_RECURRENT,
        mixer="recurrent.RecurrentMixer", mixer_options=("norm_eps",), params=gdn2_mixer_params,
        costs=RECURRENT, finish=_finish_recurrent,
    ),
    "attention": BlockKind(
        "attention",
        "softmax attention with GQA and RoPE; full causal or sliding window",
        (
            Field("heads", int, required=True, minimum=1, doc="query heads"),
            Field("kv_heads", int, None, minimum=1, nullable=True, doc="key/value heads (default: heads)"),
            Field("head_dim", int, 64, minimum=1, doc="head dim"),
            Field("window", int, None, minimum=1, nullable=True, doc="sliding window in tokens; null = full"),
            Field("rope_theta", float, 10000.0, above=0, doc="RoPE base"),
            Field("backend", str, "auto", choices=("auto", "flash_attn", "sdpa", "flex", "varlen", "math"),
                  doc="attention backend; auto picks the fastest exact one available"),
        ),
        recurrent=False, mixer="attention.AttentionMixer", params=attention_mixer_params, costs=ATTENTION,
        finish=_finish_attention,
    ),
}

MODEL_FIELDS = (
    Field("d_model", int, required=True, minimum=1, doc="model width d"),
    Field("n_layers", int, required=True, minimum=1, doc="number of layers L"),
    Field("vocab_size", int, required=True, minimum=2, doc="vocabulary size (the default tokenizer has 4096)"),
    Field("mlp", dict, None, nullable=True, doc="the MLP of every layer: kind (swiglu | none), hidden"),
    Field("norm_eps", float, 1e-6, above=0, doc="RMSNorm epsilon"),
    Field("tie_embeddings", bool, True, doc="share the input embedding and the output head"),
    Field("max_position_embeddings", int, 8192, minimum=1, doc="longest sequence the model is meant for"),
)

MLP_KINDS = ("swiglu", "none")
MLP_FIELDS = (
    Field("kind", str, "swiglu", choices=MLP_KINDS, doc="swiglu, or none for a model without MLPs"),
    Field("hidden", int, None, minimum=1, nullable=True, doc="hidden width (default ~8/3 d_model)"),
)


def block_kind(block: dict | str) -> BlockKind:
    """The registered kind of a block dict (or of a kind name)."""
    name = block if isinstance(block, str) else block.get("kind")
    if name not in BLOCK_KINDS:
        raise SpecError("kind", f"unknown block kind {name!r}; known: {', '.join(BLOCK_KINDS)}{suggest(name, BLOCK_KINDS)}")
    return BLOCK_KINDS[name]


def normalize_block(d: dict, path: str = "") -> dict:
    """Validate a block dict and return it with every default filled in (a new dict)."""
    if not isinstance(d, dict):
        raise SpecError(path, f"a block must be a mapping with a 'kind', got {type(d).__name__}")
    kind = d.get("kind")
    p = (path + ".") if path else ""
    if kind is None:
        raise SpecError(p + "kind", f"missing; expected one of {', '.join(BLOCK_KINDS)}")
    try:
        spec = block_kind(kind)
    except SpecError as e:
        raise SpecError(p + "kind", e.message) from None
    if "content" in d and isinstance(d["content"], bool) and "content" in spec.field_names():
        # YAML 1.1 reads an unquoted `content: off` as False (and `on` as True)
        if d["content"] is True:
            raise SpecError(p + "content", "got boolean true (YAML reads an unquoted on/yes/true as a boolean); "
                                           "write content: self for the content signal, or content: 'off'")
        d = {**d, "content": "off"}
    out = {"kind": kind, **check_fields(spec.fields, d, path, f"a '{kind}' block", extra=("kind",))}
    spec.finish(out, p)
    return out


def is_recurrent(block: dict) -> bool:
    return block_kind(block).recurrent


def default_mlp_hidden(d_model: int) -> int:
    """SwiGLU hidden width ~ 8/3 d, rounded up to a multiple of 64."""
    return ((8 * d_model // 3) + 63) // 64 * 64


def normalize_mlp(d: dict | None, d_model: int, path: str = "model.mlp") -> dict:
    if isinstance(d, dict) and d.get("kind") == "none":
        d = {k: v for k, v in d.items() if k != "hidden"}  # no MLP: hidden is 0 whatever is written
    out = check_fields(MLP_FIELDS, d, path, "the mlp")
    if out["kind"] == "none":
        return {"kind": "none", "hidden": 0}
    if out["hidden"] is None:
        out["hidden"] = default_mlp_hidden(d_model)
    return out


def normalize_model(d: dict, path: str = "model") -> dict:
    """The model settings (``MODEL_FIELDS``) with defaults filled in and the mlp normalised."""
    out = check_fields(MODEL_FIELDS, d, path)
    out["mlp"] = normalize_mlp(out["mlp"], out["d_model"], f"{path}.mlp")
    return out
