"""Measured decoding cost of a trained model: milliseconds per generated token at a given context."""

from __future__ import annotations

import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def decode_ms_per_token(model, context: int, new_tokens: int = 32, batch: int = 1, vocab: int | None = None) -> dict:
    """Prefill ``context`` random tokens once, then time ``new_tokens`` greedy single-token steps through
    the model's cache (the per-token cost of ``generate`` without its bookkeeping); the best of two
    timed windows after two warm-up steps. On CUDA the cache is the static one that ``generate`` uses
    there (one captured CUDA graph per step). Returns {"context", "batch", "ms_per_token", "prefill_ms", "via"}."""
    import torch

    from hybrid.blocks.decode_graph import fast_cache

    device = next(model.parameters()).device
    vocab = vocab or model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, context), generator=g).to(device)
    with torch.inference_mode():
        _sync(device)
        static = fast_cache(model, batch, context + new_tokens + 4)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, cache=static, logits_to_keep=1)
        _sync(device)
        prefill = time.perf_counter() - t0
        cache = _cache_of(out)
        if cache is None:
            raise RuntimeError("the model returned no cache with use_cache=True; cannot time decoding")
        tok = out.logits[:, -1:].argmax(-1)

        def steps(n: int) -> float:
            nonlocal out, cache, tok
            _sync(device)
            t = time.perf_counter()
            for _ in range(n):
                out = model(input_ids=tok, cache=cache, use_cache=True)
                cache = _cache_of(out)
                tok = out.logits[:, -1:].argmax(-1)
            _sync(device)
            return time.perf_counter() - t

        steps(2)
        half = max(new_tokens // 2, 1)
        best = min(steps(half), steps(half)) / half
    via = "model forward with the dynamic cache" if static is None else "CUDA graph over the static cache"
    return {"context": context, "batch": batch, "new_tokens": 2 * half, "ms_per_token": 1000 * best,
            "prefill_ms": 1000 * prefill, "via": f"{via}, batch {batch}"}
