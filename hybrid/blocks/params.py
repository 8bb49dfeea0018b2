"""Exact parameter counts from the block settings (no module is built).

The formulas mirror the modules in ``hybrid.blocks`` one tensor at a time; a test checks that they
equal ``sum(p.numel())`` of the built model for every block kind. The analytic cost model imports
these functions, so their signatures are stable:

- ``block_params(block, d_model)``: the mixer of one layer *plus its pre-norm* (d weights).
- ``mlp_params(mlp, d_model)``: the MLP of one layer *plus its pre-norm* (0 when the kind is none).
- ``count_params(config)``: the whole model, see its docstring.

The per-kind mixer formulas (and the tensor shapes they count) are in ``hybrid.blocks.mixer_params``;
each kind's formula is registered with the kind in ``hybrid.blocks.spec``. SwiGLU MLP with hidden
``F``: ``3 d F``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .spec import SpecError, block_kind, normalize_block, normalize_mlp


def mixer_params(block: dict, d_model: int) -> dict[str, int]:
    """Per-tensor-group counts of one layer's mixer (without its pre-norm), by its kind's formula."""
    b = normalize_block(block)
    _check_d(d_model)
    return block_kind(b).params(b, d_model)


def block_params(block: dict, d_model: int) -> int:
    """Parameters of one layer's mixer and its pre-norm RMSNorm (``d_model`` weights)."""
    return sum(mixer_params(block, d_model).values()) + d_model


def mlp_params(mlp: dict, d_model: int) -> int:
    """Parameters of one layer's MLP and its pre-norm (0 for ``kind: none``)."""
    _check_d(d_model)
    m = normalize_mlp(mlp, d_model)
    if m["kind"] == "none":
        return 0
    return 3 * d_model * m["hidden"] + d_model


def count_params(config) -> dict:
    """Exact parameter counts of a model, from its settings.

    ``config`` is a ``HybridConfig`` or a mapping with ``vocab_size``, ``d_model``, ``layers`` (block
    dicts), optional ``mlp`` and ``tie_embeddings`` (default True). Returns a dict:

    - ``embedding``: the input token table, ``vocab_size * d_model``;
    - ``lm_head``: the output projection, 0 when tied to the embedding;
    - ``final_norm``: ``d_model``;
    - ``per_layer``: list of ints, ``block_params + mlp_params`` of each layer;
    - ``non_embedding``: ``sum(per_layer) + final_norm`` (excludes the embedding and an untied head);
    - ``total``: every parameter, counted once (``embedding + lm_head + non_embedding``).
    """
    get = (lambda k, dflt=None: config.get(k, dflt)) if isinstance(config, Mapping) else \
        (lambda k, dflt=None: getattr(config, k, dflt))
    d, vocab, layers = get("d_model"), get("vocab_size"), get("layers")
    _check_d(d)
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise SpecError("model.vocab_size", f"expected a positive integer, got {vocab!r}")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise SpecError("model.layers", f"expected a non-empty list of block dicts, got {layers!r}")
    mlp = get("mlp")
    tie = get("tie_embeddings", True)
    per_mlp = mlp_params(mlp, d)
    per_layer = [block_params(b, d) + per_mlp for b in layers]
    embedding = vocab * d
    lm_head = 0 if tie else vocab * d
    non_embedding = sum(per_layer) + d
    return {
        "total": embedding + lm_head + non_embedding,
        "embedding": embedding,
        "lm_head": lm_head,
        "final_norm": d,
        "non_embedding": non_embedding,
        "per_layer": per_layer,
    }


def _check_d(d_model) -> None:
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise SpecError("model.d_model", f"expected a positive integer, got {d_model!r}")
