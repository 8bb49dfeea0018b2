"""Learning-rate schedule (linear warmup, then cosine decay to ``min_lr_ratio * lr``) and the AdamW
parameter groups.

Weight decay is applied only to weight matrices of linear / convolution layers. It is never applied to
biases (gate biases included), norm weights, ``A_log``, ``dt_bias`` or any other 1-D parameter, and not
to token embeddings (nor the output head tied to them) unless ``train.decay_embeddings`` is true:
decaying embeddings pulls rare tokens' vectors to zero, which hurts small-vocabulary models trained for
few steps more than it regularises them.
"""

from __future__ import annotations

import math

import torch

NO_DECAY_NAME_PARTS = ("bias", "norm", "a_log", "dt_bias")
EMBEDDING_NAME_PARTS = ("embed", "wte", "lm_head", "tok_emb")


def lr_factor(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based)."""
    warmup = min(warmup_steps, max(steps - 1, 0))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(steps - warmup, 1)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer, *, steps: int, warmup_steps: int, min_lr_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps=steps, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio))


def param_groups(model: torch.nn.Module, weight_decay: float, decay_embeddings: bool = False):
    """Two AdamW groups: (decayed matrices, everything else). Returns (groups, names_by_group)."""
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for name, p in model.named_parameters():  # named_parameters lists a tied tensor once
        if not p.requires_grad:
            continue
        low = name.lower()
        is_embedding = id(p) in embedding_params or any(s in low for s in EMBEDDING_NAME_PARTS)
        if p.ndim < 2 or any(s in low for s in NO_DECAY_NAME_PARTS) or (is_embedding and not decay_embeddings):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return groups, (decay_names, no_decay_names)
