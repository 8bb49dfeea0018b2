"""``HybridModel`` / ``HybridForCausalLM``: a stack of pre-norm residual blocks over CARVE, GDN-2 and
attention mixers, as a transformers ``PreTrainedModel`` with ``GenerationMixin``.

Block: ``h = h + mixer(RMSNorm(h)); h = h + MLP(RMSNorm(h))`` (no MLP when ``mlp.kind == "none"``).

Inputs the layers respect:
- ``attention_mask [B, past + T]`` (HF convention; its last T columns mark the real tokens of this call):
  padding never reaches the recurrent states, attention masks it, RoPE positions count real tokens only.
- ``cu_seqlens`` (B = 1, packed documents): every layer restarts at each document (recurrent state, short
  convolution, block-diagonal attention, RoPE positions), and the loss ignores targets across a boundary.
- ``cache`` / ``past_key_values``: a ``HybridCache`` (made automatically when ``use_cache``), or a
  preallocated ``StaticHybridCache`` (one prefill, then one token per row per call; see static_decode).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hybrid.ops.short_conv import doc_index

from . import init
from .attention import AttentionMixer
from .cache import HybridCache
from .config import HybridConfig
from .decode_graph import generate_cache, greedy_decode
from .mlp import SwiGLU
from .norms import RMSNorm
from .recurrent import RecurrentMixer
from .spec import SpecError, block_kind
from .static_cache import StaticHybridCache
from .static_decode import static_forward

try:
    from transformers.modeling_layers import GradientCheckpointingLayer as _LayerBase
except ImportError:  # pragma: no cover - older transformers
    _LayerBase = nn.Module

# transformers renamed `past_key_values` to `cache` in its outputs (5.2x); fill whichever this version has
def _cache_field(cls) -> str:
    return "cache" if "cache" in {f.name for f in dataclasses.fields(cls)} else "past_key_values"


_CACHE_FIELD = _cache_field(CausalLMOutputWithPast)
_BASE_CACHE_FIELD = _cache_field(BaseModelOutputWithPast)


def bf16_autocast(device: torch.device | str | nn.Module = "cuda", enabled: bool = True):
    """Context manager running the model's layers in bf16 autocast on CUDA (a no-op elsewhere).

    Linear layers then run in bf16; the decay ``g``, the norms, the softmax of the math path and the
    CARVE state stay in fp32 (the operator itself runs outside autocast on the bf16 projections)."""
    if isinstance(device, nn.Module):
        device = next(device.parameters()).device
    dev = torch.device(device)
    if dev.type != "cuda" or not enabled:
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def check_cu_seqlens(cu_seqlens: torch.Tensor, T: int) -> torch.Tensor:
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (
            torch.int32, torch.int64):
        raise ValueError("cu_seqlens must be a 1-D int32/int64 tensor of document offsets [0, ..., T]")
    cs = cu_seqlens.tolist()
    if len(cs) < 2 or cs[0] != 0 or cs[-1] != T or any(b < a for a, b in zip(cs[:-1], cs[1:])):
        raise ValueError(f"cu_seqlens must start at 0, end at T={T} and be non-decreasing, got {cs}")
    return cu_seqlens


class HybridBlock(_LayerBase):
    """Pre-norm residual block: norm -> mixer -> residual; norm -> MLP -> residual."""

    def __init__(self, block: dict, config: HybridConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.kind = block["kind"]
        d = config.d_model
        self.mixer_norm = RMSNorm(d, config.norm_eps)
        try:
            kind = block_kind(block)
        except SpecError as e:
            raise SpecError(f"model.layers[{layer_idx}].kind", e.message) from None
        self.mixer = kind.build_mixer(block, d, norm_eps=config.norm_eps)
        if config.mlp["kind"] == "none":
            self.mlp_norm = self.mlp = None
        else:
            self.mlp_norm = RMSNorm(d, config.norm_eps)
            self.mlp = SwiGLU(d, config.mlp["hidden"])

    def forward(self, h, positions=None, cu_seqlens=None, valid=None, cache_layer=None):
        h = h + self.mixer(self.mixer_norm(h), positions=positions, cu_seqlens=cu_seqlens, valid=valid,
                           cache_layer=cache_layer)
        if self.mlp is not None:
            h = h + self.mlp(self.mlp_norm(h))
        return h


class HybridPreTrainedModel(PreTrainedModel):
    config_class = HybridConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridBlock"]
    _is_stateful = True

    def _initialize_weights(self, module, *args, **kwargs):
        # Our `_init_weights` uses transformers.initialization, which skips tensors loaded from a checkpoint,
        # so the "custom code" shortcut of the base class (which skips modules without direct parameters,
        # e.g. the attention mixer) is not wanted here.
        if getattr(module, "_is_hf_initialized", False):
            return
        self._init_weights(module)
        module._is_hf_initialized = True

    @torch.no_grad()
    def _init_weights(self, module):
        cfg = self.config
        n, std = max(cfg.n_layers, 1), cfg.initializer_range
        if isinstance(module, RecurrentMixer):
            module.reset_parameters(n)
        elif isinstance(module, AttentionMixer):
            module.reset_parameters(n, std)
        elif isinstance(module, SwiGLU):
            init.normal_(module.gate_up_proj.weight, mean=0.0, std=std)
            init.normal_(module.down_proj.weight, mean=0.0, std=std / math.sqrt(2 * n))
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, HybridForCausalLM) and not cfg.tie_embeddings:
            init.normal_(module.lm_head.weight, mean=0.0, std=std)
        # plain nn.Linear children are initialised by the mixer that owns them

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own HybridCache


class HybridModel(HybridPreTrainedModel):
    """Embedding, blocks and final norm; returns hidden states (and the cache)."""

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        config.check_buildable()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(HybridBlock(b, config, i) for i, b in enumerate(config.layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                cu_seqlens=None, inputs_embeds=None, output_hidden_states=False, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = h.shape[:2]
        dev = h.device

        valid = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must be 2-D [batch, past + new tokens] = [{B}, >= {T}], "
                                 f"got {tuple(attention_mask.shape)}")
            m = attention_mask[:, attention_mask.shape[1] - T:].to(device=dev).bool()
            if not bool(m.all()):
                valid = m

        if isinstance(cache, StaticHybridCache):
            raise TypeError("a StaticHybridCache is read through HybridForCausalLM, not HybridModel")
        if cache is not None and not isinstance(cache, HybridCache):
            if cache.get_seq_length() > 0:
                raise TypeError(f"HybridForCausalLM needs a HybridCache, got a non-empty {type(cache).__name__}")
            cache = None
            use_cache = True
        if cu_seqlens is not None:
            if B != 1:
                raise ValueError(f"cu_seqlens packs documents into one row: batch size must be 1, got {B}")
            if valid is not None:
                raise ValueError("cu_seqlens cannot be combined with a padded attention_mask")
            if cache is not None:
                raise ValueError("cu_seqlens cannot be combined with a cache (decode documents one per row)")
            check_cu_seqlens(cu_seqlens, T)
            cu_seqlens = cu_seqlens.to(dev)
            use_cache = False
        if use_cache and cache is None:
            cache = HybridCache(self.config)
        if not use_cache:
            cache = None
        if cache is not None and cache.real_len is not None and cache.real_len.shape[0] != B:
            raise ValueError(f"the cache holds {cache.real_len.shape[0]} rows, the input has {B}")

        if position_ids is not None:
            positions = position_ids.to(dev).expand(B, T)
        elif cu_seqlens is not None:
            positions = doc_index(cu_seqlens, T)[1].unsqueeze(0)
        else:
            base = cache.real_len.to(dev) if cache is not None and cache.real_len is not None else \
                torch.zeros(B, dtype=torch.long, device=dev)
            if valid is None:
                positions = base[:, None] + torch.arange(T, device=dev)
            else:
                positions = base[:, None] + (torch.cumsum(valid.long(), 1) - 1).clamp(min=0)

        hidden_states = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(h)
            h = layer(h, positions=positions, cu_seqlens=cu_seqlens, valid=valid,
                      cache_layer=cache.layers[i] if cache is not None else None)
        h = self.norm(h)
        if hidden_states is not None:
            hidden_states.append(h)
        if cache is not None:
            cache.advance(valid if valid is not None else torch.ones(B, T, dtype=torch.bool, device=dev))
        return BaseModelOutputWithPast(last_hidden_state=h, hidden_states=tuple(hidden_states) if hidden_states
                                       else None, **{_BASE_CACHE_FIELD: cache})


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    """Causal language model over ``HybridModel``. ``labels`` are the inputs (shifted inside)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None, use_cache=None,
                cu_seqlens=None, position_ids=None, inputs_embeds=None, cache=None, logits_to_keep=0,
                output_hidden_states=None, return_dict=None, num_items_in_batch=None, logits_at_targets=False,
                **kwargs):
        """Returns ``CausalLMOutputWithPast`` (loss when ``labels`` is given: mean cross-entropy in fp32 over
        targets != -100; with ``cu_seqlens`` a target that starts a new document is ignored).

        ``logits_at_targets=True`` (with ``labels``) applies the output head only at the positions that
        predict a target: the same loss and gradients, no ``logits`` returned. Training on answers alone
        (a few targets per document) then skips most of the head, the largest cost of a small model."""
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, StaticHybridCache):
            if labels is not None or cu_seqlens is not None or inputs_embeds is not None:
                raise ValueError("a StaticHybridCache decodes token ids: labels, cu_seqlens and inputs_embeds "
                                 "are not taken with it")
            logits = static_forward(self, input_ids, attention_mask, cache, logits_to_keep=logits_to_keep)
            return CausalLMOutputWithPast(logits=logits, **{_CACHE_FIELD: cache})
        if use_cache is None:
            use_cache = cache is not None or (self.config.use_cache and not self.training and labels is None)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=use_cache and cu_seqlens is None, cu_seqlens=cu_seqlens,
                         inputs_embeds=inputs_embeds, output_hidden_states=bool(output_hidden_states))
        h = out.last_hidden_state
        if logits_at_targets and labels is not None:
            target = self.targets(labels, cu_seqlens)
            where = target != -100
            lg = self.lm_head(h[:, :-1][where]).float()
            count = where.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            loss = F.cross_entropy(lg, target[where], reduction="sum") / count
            if not where.any():  # keep the graph connected (0 * a head output) when a batch has no target
                loss = loss + 0.0 * self.lm_head(h[:, :1]).sum()
            return CausalLMOutputWithPast(loss=loss, logits=None, hidden_states=out.hidden_states,
                                          **{_CACHE_FIELD: getattr(out, _BASE_CACHE_FIELD)})
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = self.loss(logits, labels, cu_seqlens=cu_seqlens, num_items_in_batch=num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      **{_CACHE_FIELD: getattr(out, _BASE_CACHE_FIELD)})

    @staticmethod
    def targets(labels, cu_seqlens=None):
        """The target of every position but the last (``labels`` shifted by one), with -100 where a
        position would predict the first token of the next packed document."""
        target = labels[:, 1:].clone()
        if cu_seqlens is not None:
            starts = cu_seqlens[1:-1].to(device=target.device, dtype=torch.long)
            starts = starts[(starts > 0) & (starts < labels.shape[1])]
            target[0, starts - 1] = -100  # position s-1 would predict the first token of the next document
        return target

    @staticmethod
    def loss(logits, labels, *, cu_seqlens=None, num_items_in_batch=None):
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must be [batch, seq] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
        target = HybridForCausalLM.targets(labels, cu_seqlens)
        lg = logits[:, :-1].float().reshape(-1, logits.shape[-1])
        if num_items_in_batch is None:
            return F.cross_entropy(lg, target.reshape(-1), ignore_index=-100)
        s = F.cross_entropy(lg, target.reshape(-1), ignore_index=-100, reduction="sum")
        return s / num_items_in_batch

    # -------------------------------------------------------------------------------------- generation
    def generate(self, inputs=None, generation_config=None, *args, **kwargs):
        """transformers' ``generate``; on CUDA (one beam, no cache given) through a preallocated
        ``StaticHybridCache`` whose one-token step is a captured CUDA graph (``decode_graph``)."""
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        cache = generate_cache(self, ids, kwargs, generation_config)
        if cache is not None:
            kwargs[_CACHE_FIELD] = cache
        return super().generate(inputs, generation_config, *args, **kwargs)

    def greedy_new_tokens(self, input_ids, attention_mask=None, *, max_new_tokens: int, eos_token_id=None,
                          pad_token_id: int = 0, forced=None):
        """Greedy new tokens ``[B, max_new_tokens]`` (pad after each row's end-of-text) through the captured
        static cache on CUDA (``decode_graph.greedy_decode``); None on a CPU, where ``generate`` serves.
        With ``forced [B, L]`` (reference continuations) the pair (new tokens, greedy predictions of the
        forced tokens under teacher forcing), from one read of the prompt."""
        return greedy_decode(self, input_ids, attention_mask, max_new_tokens, eos_token_id=eos_token_id,
                             pad_token_id=pad_token_id, forced=forced)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, next_sequence_length=None, cache=None, use_cache=True,
                                      is_first_iteration=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        seen = cache.get_seq_length() if isinstance(cache, (HybridCache, StaticHybridCache)) else 0
        if next_sequence_length is not None:
            input_ids = input_ids[:, input_ids.shape[1] - next_sequence_length:]
        elif seen and input_ids.shape[1] > seen:
            input_ids = input_ids[:, seen:]
        inputs = {"attention_mask": attention_mask, "use_cache": use_cache}
        if inputs_embeds is not None and seen == 0:
            inputs["inputs_embeds"], inputs["input_ids"] = inputs_embeds, None
        else:
            inputs["input_ids"] = input_ids.contiguous()
        if cache is not None:
            inputs["cache"] = cache
        for key in ("logits_to_keep", "output_hidden_states"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs


def _register_auto_classes() -> None:
    from hybrid.blocks import register

    register()


_register_auto_classes()
