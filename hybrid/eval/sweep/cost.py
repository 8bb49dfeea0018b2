"""Measured decoding cost of a trained model: milliseconds per generated token at a given context."""

from __future__ import annotations

import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_ms_per_token(model, context: int, new_tokens: int = 32, batch: int = 1, repeats: int = 2,
                        vocab: int | None = None) -> dict:
    """Time ``generate`` on random prompts of ``context`` tokens: (full - prefill-only) / (new - 1),
    best of ``repeats``. Returns {"context", "batch", "ms_per_token", "prefill_ms"}."""
    import torch

    device = next(model.parameters()).device
    vocab = vocab or model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, context), generator=g).to(device)
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0, eos_token_id=None)
        _sync(device)
        return time.perf_counter() - t0

    run(2)  # warm-up (kernel compilation, allocator)
    prefill = min(run(1) for _ in range(repeats))
    full = min(run(new_tokens) for _ in range(repeats))
    return {"context": context, "batch": batch, "new_tokens": new_tokens,
            "ms_per_token": 1000 * max(full - prefill, 0.0) / (new_tokens - 1), "prefill_ms": 1000 * prefill}
