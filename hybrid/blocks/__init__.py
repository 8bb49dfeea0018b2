"""Model building blocks and the transformers model class of hybrid CARVE / attention models.

Names are imported on first use, so that ``hybrid.blocks.spec`` (recipe validation) does not pull in
torch and transformers. Importing ``hybrid.blocks.model`` (or using any model name from this package)
registers ``HybridConfig`` (model_type ``"hybrid"``) and ``HybridForCausalLM`` with ``AutoConfig`` /
``AutoModel`` / ``AutoModelForCausalLM``; ``register()`` does it explicitly and is idempotent.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "AttentionMixer": "attention",
    "AttentionBackendError": "attention_backends", "available_backends": "attention_backends",
    "causal_attention": "attention_backends", "masked_attention": "attention_backends",
    "HybridCache": "cache",
    "HybridConfig": "config",
    "SwiGLU": "mlp",
    "HybridBlock": "model", "HybridForCausalLM": "model", "HybridModel": "model",
    "HybridPreTrainedModel": "model", "bf16_autocast": "model",
    "RMSNorm": "norms",
    "block_params": "params", "count_params": "params", "mlp_params": "params",
    "RecurrentMixer": "recurrent",
    "SpecError": "spec", "normalize_block": "spec", "normalize_mlp": "spec",
    "StaticHybridCache": "static_cache",
}

_registered = False


def register() -> None:
    """Register the hybrid classes with transformers' Auto classes (safe to call repeatedly)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .config import HybridConfig
    from .model import HybridForCausalLM, HybridModel

    for fn in (lambda: AutoConfig.register("hybrid", HybridConfig),
               lambda: AutoModel.register(HybridConfig, HybridModel),
               lambda: AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM)):
        try:
            fn()
        except ValueError:  # already registered (e.g. module reloaded)
            pass
    _registered = True


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hybrid.blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hybrid.blocks.{_WHERE[name]}"), name)
    if _WHERE[name] != "spec":
        register()
    globals()[name] = value
    return value


__all__ = sorted([*_WHERE, "register"])
