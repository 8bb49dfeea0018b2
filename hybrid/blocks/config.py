"""``HybridConfig``: the transformers config of a hybrid model (model_type ``"hybrid"``).

It stores the expanded per-layer list of block dicts (``layers``, each normalised by
``spec.normalize_block``); ``layer_types`` is derived from it (the kinds, e.g. ``["carve", "attention"]``).
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .spec import SpecError, normalize_block, normalize_mlp

_HF_KIND_ALIASES = {"full_attention": "attention", "sliding_attention": "attention", "linear_attention": None}


def _positive_int(value, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(path, f"expected a positive integer, got {value!r}")
    return value


def _positive_float(value, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(path, f"expected a positive number, got {value!r}")
    return float(value)


def _token_id(value, vocab: int, path: str):
    if value is None:
        return None
    if isinstance(value, list):
        return [_token_id(v, vocab, path) for v in value]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        raise SpecError(path, f"expected null or an integer in [0, vocab_size={vocab}), got {value!r}")
    return value


class HybridConfig(PretrainedConfig):
    """Configuration of a ``HybridForCausalLM``.

    Args:
        vocab_size: number of tokens.
        d_model: residual stream width.
        layers: list of block dicts, one per layer (``{"kind": "carve", "heads": 4, ...}``); each is
            validated and completed with defaults by ``hybrid.blocks.spec.normalize_block``.
        mlp: ``{"kind": "swiglu" | "none", "hidden": int}`` (one MLP after every mixer).
        norm_eps: RMSNorm epsilon.
        tie_embeddings: share the input embedding with the output head.
        max_position_embeddings: longest context the model is meant for (informational; RoPE has no limit).
        initializer_range: std of the embedding / attention / MLP init.
    Bad settings raise ``SpecError`` naming the key path (e.g. ``model.layers[2].heads``).
    ``HybridConfig()`` with no layers is allowed only as an empty placeholder; a model cannot be built from it.
    """

    model_type = "hybrid"
    attribute_map = {"hidden_size": "d_model", "tie_word_embeddings": "tie_embeddings", "rms_norm_eps": "norm_eps"}

    def __init__(self, vocab_size: int = 32000, d_model: int = 512, layers: list | None = None,
                 mlp: dict | None = None, norm_eps: float = 1e-6, tie_embeddings: bool = True,
                 max_position_embeddings: int = 8192, initializer_range: float = 0.02, use_cache: bool = True,
                 pad_token_id: int | None = None, bos_token_id: int | None = None,
                 eos_token_id: int | list | None = None, **kwargs):
        kwargs.pop("layer_types", None)  # derived from `layers`
        kwargs.pop("num_hidden_layers", None)
        kwargs.pop("n_layers", None)
        self.vocab_size = _positive_int(vocab_size, "model.vocab_size")
        self.d_model = _positive_int(d_model, "model.d_model")
        if layers is None:
            layers = []
        if not isinstance(layers, (list, tuple)):
            raise SpecError("model.layers", f"expected a list of block dicts, got {type(layers).__name__}")
        self.layers = [normalize_block(dict(b) if isinstance(b, dict) else b, f"model.layers[{i}]")
                       for i, b in enumerate(layers)]
        self.mlp = normalize_mlp(mlp, self.d_model)
        self.norm_eps = _positive_float(norm_eps, "model.norm_eps")
        if not isinstance(tie_embeddings, bool):
            raise SpecError("model.tie_embeddings", f"expected true or false, got {tie_embeddings!r}")
        self.tie_embeddings = tie_embeddings
        self.max_position_embeddings = _positive_int(max_position_embeddings, "model.max_position_embeddings")
        self.initializer_range = _positive_float(initializer_range, "model.initializer_range")
        self.use_cache = bool(use_cache)
        self.pad_token_id = _token_id(pad_token_id, self.vocab_size, "model.pad_token_id")
        self.bos_token_id = _token_id(bos_token_id, self.vocab_size, "model.bos_token_id")
        self.eos_token_id = _token_id(eos_token_id, self.vocab_size, "model.eos_token_id")
        super().__init__(**kwargs)

    # derived, read-only views (not serialised)
    @property
    def layer_types(self) -> list[str]:
        return [b["kind"] for b in self.layers]

    @layer_types.setter
    def layer_types(self, value):
        # transformers may write back a renamed copy (e.g. "attention" -> "full_attention"); accept only
        # a list that names the same kinds as `layers`.
        mapped = [_HF_KIND_ALIASES.get(v, v) for v in value]
        kinds = self.layer_types
        if len(mapped) != len(kinds) or any(m is not None and m != k for m, k in zip(mapped, kinds)):
            raise SpecError("model.layer_types", f"is derived from model.layers ({kinds}); cannot set it to {value}")

    # Note: no `num_hidden_layers` attribute on purpose. transformers' config validator checks
    # `layer_types` against its own attention-type names whenever a config has `num_hidden_layers`,
    # and our layer kinds ("carve", "gdn2", "attention") are not among them.
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def check_buildable(self) -> None:
        """Raise ``SpecError`` unless a model can be built from this config."""
        if not self.layers:
            raise SpecError("model.layers", "no layers: give a non-empty list of block dicts")
        for i, b in enumerate(self.layers):
            normalize_block(b, f"model.layers[{i}]")
