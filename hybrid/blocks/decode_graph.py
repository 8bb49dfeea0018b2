"""Decoding at the speed of memory on CUDA: the one-token step over a ``StaticHybridCache`` captured
once as a CUDA graph and replayed for every token.

Shapes are bucketed so that a batch that shrinks or grows, or a prompt a little longer than the last,
reuses a capture: ``capacity`` = the next power of two >= the batch; ``max_len`` = prompt + new tokens
rounded up to an eighth of the next power of two (at least ``MIN_LEN``; eight buckets per doubling, so at
most 1/8 of the attention buffer is slack). Rows past the real batch are padding. A model keeps its
last ``KEEP`` captured caches; a key also holds the parameters' addresses and version counters, so a
model whose weights were moved, recast or updated in place never replays a graph over old weights (the
graph of a recurrent layer reads a stacked copy of its input projections).

``greedy_decode`` is greedy decoding over such a cache in a loop of its own, for callers that want only
the new tokens (``hybrid ruler``, the sweep's evaluation): unlike ``generate``, whose stopping check reads
a device value back every token, it reads back only every ``CHECK_EVERY`` tokens, so the host queues
replays ahead of the GPU instead of waiting on each. Given reference continuations it also
teacher-forces them from the prefill's state (RULER's answer-token accuracy), so an evaluation reads each
prompt once: they are stepped through the same cache (replays of its captured step) between a snapshot
of what steps change and its restore, before the greedy steps.

``generate_cache`` is what ``HybridForCausalLM.generate`` asks on CUDA: a reset, captured cache for a
greedy or sampled generation (one beam), or None (the dynamic ``HybridCache`` path: CPU, beam search,
a cache given by the caller, hidden states asked for, an unknown number of new tokens). Should the
static cache or its capture fail (no memory for it, a kernel that does not build), ``fast_cache`` warns
and answers None, and decoding takes the dynamic path.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch.profiler import record_function

from .recurrent_step import weights_key
from .static_cache import StaticHybridCache
from .static_decode import static_prefill, static_step

MIN_LEN = 256
KEEP = 2
WARMUP_STEPS = 2
CHECK_EVERY = 16


def bucket(n: int, floor: int = 1) -> int:
    """The next power of two >= max(n, floor)."""
    n = max(int(n), floor, 1)
    return 1 << (n - 1).bit_length()


def length_bucket(n: int) -> int:
    """``n`` rounded up to a multiple of max(MIN_LEN, next power of two / 8)."""
    step = max(MIN_LEN, bucket(n) // 8)
    return max(1, -(-int(n) // step)) * step


def compute_dtype(model) -> torch.dtype:
    """The dtype of the attention keys/values: the autocast dtype under autocast, else the parameters'."""
    dev = model.device.type
    if dev == "cuda" and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return next(model.parameters()).dtype


class CapturedStep:
    """``static_step(model, ids, cache)`` captured as a CUDA graph; call it with ``ids [B <= capacity, 1]``."""

    def __init__(self, model, cache: StaticHybridCache):
        dev = cache.lengths.device
        self.ids = torch.zeros(cache.capacity, 1, dtype=torch.long, device=dev)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm up (Triton compiles, cuBLAS picks kernels) outside the capture
            for _ in range(WARMUP_STEPS):
                static_step(model, self.ids, cache)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = static_step(model, self.ids, cache)
        cache.reset()  # the warm-up steps wrote into the buffers

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[0]
        self.ids[:n].copy_(ids)
        self.graph.replay()
        return self.logits[:n].clone()


def decode_cache(model, batch: int, length: int) -> StaticHybridCache:
    """A reset static cache for ``batch`` rows and ``length`` tokens (prompt + new), from the model's pool;
    on CUDA its step is captured (once per bucket)."""
    dev = model.device
    dtype = compute_dtype(model)
    autocast = dev.type == "cuda" and torch.is_autocast_enabled("cuda")
    key = (bucket(batch), length_bucket(length), dtype, autocast, str(dev), weights_key(model.parameters()))
    pool = model.__dict__.setdefault("_decode_caches", OrderedDict())
    cache = pool.pop(key, None)
    if cache is None:
        while len(pool) >= KEEP:
            pool.popitem(last=False)
        # normal tensors (not inference tensors), so that the buffers can be updated in and out of
        # inference mode; no autograd graph
        with torch.inference_mode(False), torch.no_grad():
            cache = StaticHybridCache(model.config, key[0], key[1], device=dev, dtype=dtype)
            if dev.type == "cuda":
                cache.step_fn = CapturedStep(model, cache)
    pool[key] = cache
    cache.reset()
    return cache


def release_decode_caches(model) -> None:
    """Drop the model's captured caches (their buffers and graphs)."""
    model.__dict__.pop("_decode_caches", None)


def fast_cache(model, batch: int, length: int) -> StaticHybridCache | None:
    """``decode_cache`` on CUDA, or None (with a warning) when it cannot be built here."""
    if model.device.type != "cuda":
        return None
    try:
        return decode_cache(model, batch, length)
    except Exception as e:  # noqa: BLE001 - any failure leaves the dynamic path, which still decodes
        release_decode_caches(model)
        warnings.warn(f"the captured static decode cache could not be built ({type(e).__name__}: {e}); "
                      "decoding through the dynamic cache", stacklevel=2)
        return None


def generate_cache(model, input_ids, kwargs: dict, generation_config=None) -> StaticHybridCache | None:
    """The static cache ``generate`` should decode through, or None for the dynamic path."""
    if model.device.type != "cuda" or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        return None
    if any(kwargs.get(k) is not None for k in ("cache", "past_key_values", "inputs_embeds", "assistant_model",
                                               "prompt_lookup_num_tokens")):
        return None
    cfg = generation_config if generation_config is not None else model.generation_config

    def get(name):
        return kwargs[name] if kwargs.get(name) is not None else getattr(cfg, name, None)

    if (get("num_beams") or 1) != 1 or get("use_cache") is False:
        return None
    if get("output_hidden_states") or get("output_attentions"):
        return None
    T = input_ids.shape[1]
    new = get("max_new_tokens")
    if new is None:
        if get("max_length") is None:
            return None
        new = get("max_length") - T
    if new < 1:
        return None
    return fast_cache(model, input_ids.shape[0] * (get("num_return_sequences") or 1), T + new)


def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int, *,
                  eos_token_id=None, pad_token_id: int = 0, cache: StaticHybridCache | None = None,
                  forced: torch.Tensor | None = None):
    """The ``max_new_tokens`` greedy tokens after each (left-padded) prompt row, ``[B, max_new_tokens]``:
    a row's end-of-text token is kept and every token after it is ``pad_token_id``, as ``generate`` pads
    finished rows. Decodes through ``cache`` (default: ``fast_cache``, so on CUDA the captured step);
    None where there is none (CPU), for the caller to use ``generate``. Call it under no_grad or
    inference mode.

    ``forced [B, L]`` (reference continuations, right-padded): also teacher-force them after the prompt,
    from the prefill's own state, so the prompt is read once for both. Returns then the pair (new tokens,
    the greedy prediction of every forced token ``[B, L]``, column j made from the prompt and
    ``forced[:, :j]``)."""
    B, T = input_ids.shape
    # the forced tokens are stepped through the same cache: it must hold them as well as the new tokens
    room = max(max_new_tokens, 0 if forced is None else forced.shape[1] - 1)
    if cache is None:
        cache = fast_cache(model, B, T + room)
        if cache is None:
            return None
    elif T + room > cache.max_len:
        raise ValueError(f"greedy_decode: {T} prompt tokens and {room} more do not fit a StaticHybridCache of "
                         f"{cache.max_len}")
    eos = None
    if eos_token_id is not None:
        eos = torch.as_tensor(eos_token_id, device=input_ids.device).reshape(-1)
    # the phases are named for the torch profiler (benchmarks/ruler_eval.py --profile)
    with record_function("greedy_decode.prefill"):
        logits = static_prefill(model, input_ids, attention_mask, cache, logits_to_keep=1)[0]
        tok = logits[:, -1].argmax(-1)
    predicted = None
    if forced is not None:
        with record_function("greedy_decode.answer_check"):
            predicted = _teacher_forced(model, cache, tok, forced)
    with record_function("greedy_decode.steps"):
        out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for i in range(max_new_tokens):
            tok = tok.masked_fill(done, pad_token_id)
            out[:, i] = tok
            if eos is not None:
                done |= torch.isin(tok, eos)
                if (i + 1) % CHECK_EVERY == 0 and bool(done.all()):
                    break
            if i + 1 < max_new_tokens:
                tok = model(input_ids=tok[:, None], cache=cache).logits[:, -1].argmax(-1)
    return out if forced is None else (out, predicted)


def _teacher_forced(model, cache: StaticHybridCache, first: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
    """Greedy predictions ``[B, L]`` of the forced tokens: the first from the prompt's last logits
    (``first``), the others from steps of ``forced[:, :-1]`` through ``cache`` (on CUDA replays of its
    captured step), which is then restored to the prefill's state."""
    L = forced.shape[1]
    cols = [first[:, None]]
    if L > 1:
        snap = cache.snapshot()
        for j in range(L - 1):
            cols.append(model(input_ids=forced[:, j:j + 1], cache=cache).logits[:, -1].argmax(-1)[:, None])
        cache.restore(snap)
    return torch.cat(cols, dim=1)
