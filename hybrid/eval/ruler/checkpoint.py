"""Load a model folder for evaluation, with clear errors.

Accepted: the folder a finished ``hybrid train`` writes, one of its ``checkpoints/step_N``, a run
folder that stopped before its end (its newest checkpoint is used), or any Hugging Face causal LM
folder (a ``transformers`` ``AutoModelForCausalLM`` checkpoint saved with its tokenizer), so that a
baseline model can sit in the same table as ours."""

from __future__ import annotations

import json
from pathlib import Path

from hybrid.tasks.errors import RulerError


def _is_training_checkpoint(p: Path) -> bool:
    return (p / "meta.json").is_file() and (p / "model.safetensors").is_file()


def run_dir(p: Path) -> Path:
    """The training output folder of ``p``: itself, or OUT for ``OUT/checkpoints/step_N``."""
    p = Path(p)
    return p.parent.parent if _is_training_checkpoint(p) and p.parent.name == "checkpoints" else p


def check_model_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise RulerError(f"checkpoint folder not found: {p}")
    if not p.is_dir():
        raise RulerError(f"{p} is a file, not a model folder; give the folder written by `hybrid train` "
                         "(it holds config.json, the weights and the tokenizer)")
    if _is_training_checkpoint(p):
        return p
    cfg = p / "config.json"
    if not cfg.is_file() and (p / "checkpoints").is_dir():
        from hybrid.train.trained import find_trained

        return find_trained(p).weights
    if not cfg.is_file():
        sub = sorted(q.parent.name for q in p.glob("*/config.json"))
        hint = f"; model folders inside it: {', '.join(sub)}" if sub else ""
        raise RulerError(f"{p} is not a model folder: it has no config.json{hint}")
    try:
        json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RulerError(f"{cfg} is not valid JSON: {e}") from None
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise RulerError(f"{p} has a config.json but no weights (*.safetensors); was training interrupted "
                         "before the first save?")
    return p


def model_type(path: str | Path) -> str | None:
    """``model_type`` of a model folder's config.json (``"hybrid"`` for ours), None for a training
    checkpoint (always ours) or an unreadable config."""
    p = Path(path)
    if _is_training_checkpoint(p):
        return "hybrid"
    try:
        return json.loads((p / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None


def is_ours(path: str | Path) -> bool:
    return model_type(path) in ("hybrid", None)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(path))
    else:
        from hybrid.train.tokenizer import load_tokenizer as default

        tok = default(None)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_checkpoint(path: str | Path, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer, config dict) of a model folder, model in eval mode on ``device``."""
    import torch

    from hybrid.device import resolve_device

    dev = resolve_device(device)
    p = check_model_dir(path)
    if _is_training_checkpoint(p):
        from hybrid.train.trained import find_trained, load_tokenizer_for, load_trained

        found = find_trained(p)
        model = load_trained(found)
        tok = load_tokenizer_for(found)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    elif is_ours(p):
        from hybrid.blocks import HybridForCausalLM

        try:
            model = HybridForCausalLM.from_pretrained(str(p))
        except Exception as e:
            raise RulerError(f"{p} could not be loaded as a hybrid model: {type(e).__name__}: {e}") from None
        tok = load_tokenizer(p)
    else:
        model, tok = _load_hf(p)
    if dtype == "auto":
        dtype = "bf16" if dev.type == "cuda" else "fp32"
    model = model.to(device=dev, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
    return model, tok, model.config.to_dict()


def _load_hf(p: Path):
    """Another project's causal LM: ``AutoModelForCausalLM`` + ``AutoTokenizer`` from the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(p))
    except Exception as e:
        raise RulerError(f"{p} could not be loaded as a causal LM (model_type {model_type(p)!r}): "
                         f"{type(e).__name__}: {e}") from None
    if not ((p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()):
        raise RulerError(f"{p} holds no tokenizer (tokenizer.json or tokenizer_config.json); save the model's "
                         "tokenizer into the folder with tokenizer.save_pretrained")
    tok = AutoTokenizer.from_pretrained(str(p))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def training_length(path: str | Path) -> int | None:
    """The training sequence length recorded next to a model (recipe or train config), if any."""
    p = Path(path)
    for f in (d / n for d in dict.fromkeys((p, run_dir(p))) for n in ("train_config.json", "recipe.json",
                                                                       "train.json")):
        if f.is_file():
            try:
                d = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
            for keys in (("seq_len",), ("train", "seq_len")):
                v = d
                for k in keys:
                    v = v.get(k) if isinstance(v, dict) else None
                if isinstance(v, int):
                    return v
    return None


def recipe_eval(path: str | Path):
    """The ``eval:`` section of the recipe saved next to a model (``recipe.json``), or None."""
    f = Path(path) / "recipe.json"
    if not f.is_file():
        f = run_dir(Path(path)) / "recipe.json"
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    ev = d.get("eval") if isinstance(d, dict) else None
    if not ev:
        return None
    from hybrid.eval.config import EvalConfig

    return EvalConfig.from_dict(ev, path=f"{f}: eval")
