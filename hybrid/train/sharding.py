"""FSDP2 sharding and per-block activation checkpointing for the training loop.

``shard_blocks`` wraps every block of a ``HybridForCausalLM`` (then the whole model, which holds the
embeddings and the final norm) with ``torch.distributed.fsdp.fully_shard`` over all processes: each
rank keeps 1/world of every parameter, gradient and AdamW moment; a block's full weights exist only
while it runs. With ``bf16`` the blocks compute in bf16 and gradients are reduced in fp32.

``checkpoint_blocks`` recomputes the activations of the blocks of the given kinds in the backward
pass instead of keeping them (less memory, one more forward per block).
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint


def _layers(model: torch.nn.Module):
    return model.model.layers


def checkpoint_blocks(model: torch.nn.Module, kinds: list[str]) -> int:
    """Recompute the activations of every block whose kind is in ``kinds``; returns how many blocks.
    Raises ValueError naming a kind the model does not have."""
    present = sorted({layer.kind for layer in _layers(model)})
    for kind in kinds:
        if kind not in present:
            raise ValueError(f"train.checkpoint_blocks: the model has no '{kind}' block; its kinds: "
                             f"{', '.join(present)}")
    n = 0
    for layer in _layers(model):
        if layer.kind in kinds:
            inner = layer.forward
            layer.forward = functools.partial(_recomputed, inner)
            n += 1
    return n


def _recomputed(forward, h, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(h, *args, **kwargs)
    return checkpoint(forward, h, *args, use_reentrant=False, **kwargs)


def shard_blocks(model: torch.nn.Module, device: torch.device, world_size: int, *, bf16: bool) -> None:
    """``fully_shard`` each block, then the model, over ``world_size`` processes (an initialized
    process group); in place: the parameters become DTensors, so build the optimizer afterwards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for layer in _layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def grad_norm(model: torch.nn.Module, clip: float) -> float:
    """The global gradient norm (over every shard), after clipping to ``clip`` when it is > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def full_state_dict(model: torch.nn.Module) -> dict:
    """Every weight gathered whole on CPU (a collective: call on every rank); rank 0 gets the tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
