"""Measurements that the build report puts next to the analytic predictions.

Everything here runs the real model: parameter count, a timed forward+backward step, peak device
memory of that step (CUDA only), and the bytes held by the cache after a prefill.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch


def build_model(recipe, device: str = "cpu"):
    """Instantiate ``HybridForCausalLM`` for a validated recipe (``device='meta'`` allocates nothing)."""
    from hybrid.blocks.config import HybridConfig
    from hybrid.blocks.model import HybridForCausalLM

    config = HybridConfig(**recipe.model_config_kwargs())
    with torch.device(device):
        model = HybridForCausalLM(config)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    from hybrid.blocks.model import bf16_autocast

    return bf16_autocast(device)


def time_train_step(model, batch: int, length: int, *, warmup: int = 1, repeats: int = 3,
                    seed: int = 0) -> dict:
    """Median seconds of forward + loss + backward on random tokens, and the CUDA peak memory of a step."""
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g).to(device)
    model.train()

    def step():
        with _autocast(device):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    out = time_calls(step, device, warmup=warmup, repeats=repeats)
    model.zero_grad(set_to_none=True)
    return out


def time_calls(step, device: torch.device, *, warmup: int, repeats: int) -> dict:
    """Median wall seconds of ``step()`` over ``repeats`` calls after ``warmup`` untimed ones, each call
    synchronised, and the CUDA peak allocated bytes of the timed calls (None off CUDA)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_bytes": peak}


def tensor_bytes(obj, _seen=None) -> int:
    """Bytes of every distinct tensor reachable from ``obj`` (lists, dicts, dataclasses, plain objects)."""
    seen = set() if _seen is None else _seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.data_ptr(), obj.numel())
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(x, seen) for x in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(x, seen) for x in obj.values())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(tensor_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, type)):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


@torch.no_grad()
def prefill_cache_bytes(model, length: int, batch: int = 1, seed: int = 0) -> int:
    """Run a prefill of ``length`` tokens with ``use_cache=True`` and count the cache's tensor bytes."""
    from hybrid.blocks.cache import HybridCache

    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g).to(device)
    model.eval()
    cache = HybridCache(model.config)
    with _autocast(device):
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    # counted layer by layer: after a prefill the attention layers share one position tensor, which the
    # first decode step replaces by a copy per layer; the per-layer sum is the steady-state footprint
    return sum(tensor_bytes(layer) for layer in cache.layers)
