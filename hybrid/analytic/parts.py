"""The parts a training step is made of, in execution order, each named by a signature.

A model step runs: the embedding lookup; per layer its mixer (pre-norm + mixer + residual add) and its
MLP (pre-norm + SwiGLU + residual add); then the head (final norm + output projection + loss). Two
parts with equal signatures cost the same, so a calibration table (hybrid.analytic.calibration) is
keyed by signature and one measurement serves every layer, recipe and layout that uses that part.
Pure functions of the model config: nothing is built here.
"""

from __future__ import annotations

import json

from hybrid.blocks.spec import is_recurrent, normalize_block, normalize_mlp


def signature_key(sig: dict) -> str:
    return json.dumps(sig, sort_keys=True, separators=(",", ":"))


def mixer_signature(block: dict, d_model: int) -> dict:
    return {"part": "mixer", "d_model": d_model, "block": normalize_block(block)}


def mlp_signature(mlp: dict, d_model: int) -> dict | None:
    m = normalize_mlp(mlp, d_model)
    return None if m["kind"] == "none" else {"part": "mlp", "d_model": d_model, "hidden": m["hidden"]}


def head_signature(d_model: int, vocab: int) -> dict:
    return {"part": "head", "d_model": d_model, "vocab": vocab}


def embed_signature(d_model: int, vocab: int) -> dict:
    return {"part": "embed", "d_model": d_model, "vocab": vocab}


def model_parts(cfg: dict) -> list[dict]:
    """Signatures of every part of one step of the model ``cfg`` (HybridConfig kwargs), in order."""
    d, vocab = cfg["d_model"], cfg["vocab_size"]
    mlp = mlp_signature(cfg.get("mlp"), d)
    out = [embed_signature(d, vocab)]
    for blk in cfg["layers"]:
        out.append(mixer_signature(blk, d))
        if mlp is not None:
            out.append(mlp)
    out.append(head_signature(d, vocab))
    return out


def distinct(signatures) -> list[dict]:
    seen, out = set(), []
    for s in signatures:
        k = signature_key(s)
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


def describe(sig: dict) -> str:
    """A short human label, e.g. 'carve H8 K128 V128 C64 (d 1024)' or 'mlp 3072 (d 1024)'."""
    d = sig["d_model"]
    if sig["part"] == "mixer":
        b = sig["block"]
        if not is_recurrent(b):
            win = f" W{b['window']}" if b["window"] else ""
            return f"attention {b['heads']}/{b['kv_heads']}x{b['head_dim']}{win} (d {d})"
        return f"{b['kind']} H{b['heads']} K{b['head_dim']} V{b['value_dim']} C{b['chunk_size']} (d {d})"
    if sig["part"] == "mlp":
        return f"mlp {sig['hidden']} (d {d})"
    return f"{sig['part']} vocab {sig['vocab']} (d {d})"
