"""Model building blocks and the transformers model class of hybrid CARVE / attention models.

Importing this package registers ``HybridConfig`` (model_type ``"hybrid"``) and ``HybridForCausalLM``
with ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``; ``register()`` does it explicitly and is
idempotent.
"""

from .attention import AttentionMixer
from .attention_backends import AttentionBackendError, available_backends, causal_attention, masked_attention
from .cache import HybridCache
from .config import HybridConfig
from .mlp import SwiGLU
from .model import HybridBlock, HybridForCausalLM, HybridModel, HybridPreTrainedModel, bf16_autocast
from .norms import RMSNorm
from .params import block_params, count_params, mlp_params
from .recurrent import RecurrentMixer
from .spec import SpecError, normalize_block, normalize_mlp

_registered = False


def register() -> None:
    """Register the hybrid classes with transformers' Auto classes (safe to call repeatedly)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    for fn in (lambda: AutoConfig.register("hybrid", HybridConfig),
               lambda: AutoModel.register(HybridConfig, HybridModel),
               lambda: AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM)):
        try:
            fn()
        except ValueError:  # already registered (e.g. module reloaded)
            pass
    _registered = True


register()

__all__ = [
    "AttentionBackendError", "AttentionMixer", "HybridBlock", "HybridCache", "HybridConfig", "HybridForCausalLM",
    "HybridModel", "HybridPreTrainedModel", "RMSNorm", "RecurrentMixer", "SpecError", "SwiGLU",
    "available_backends", "bf16_autocast", "block_params", "causal_attention", "count_params", "masked_attention",
    "mlp_params", "normalize_block", "normalize_mlp", "register",
]
