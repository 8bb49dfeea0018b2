"""A trained model from any folder ``hybrid train`` leaves: the finished run (``from_pretrained``-ready),
one checkpoint (``OUT/checkpoints/step_N``), or a run stopped before its end (its newest checkpoint).

``find_trained(path)`` says which it is without importing torch; ``load_trained(found, device)``
builds the model; ``export_trained(found, out)`` writes a ``from_pretrained``-ready folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from hybrid.errors import HybridError

RUN_FILES = ("recipe.json", "train_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class TrainedModelError(HybridError):
    """A folder that holds no usable trained model."""


@dataclass
class Trained:
    path: Path                 # what the user gave
    weights: Path              # the folder holding the weights
    run: Path | None           # the training output folder (recipe.json, train_config.json, tokenizer)
    checkpoint: bool           # True: weights are a training checkpoint (model.safetensors + meta.json)

    def describe(self) -> str:
        return f"{self.weights} (checkpoint)" if self.checkpoint else str(self.weights)


def _is_checkpoint(p: Path) -> bool:
    return (p / "meta.json").is_file() and (p / "model.safetensors").is_file()


def find_trained(path: str | Path, log=print) -> Trained:
    p = Path(path).expanduser()
    if not p.exists():
        raise TrainedModelError(f"{p}: no such folder; give a folder written by `hybrid train`")
    if not p.is_dir():
        raise TrainedModelError(f"{p}: a file, not a model folder; give the folder written by `hybrid train` "
                                "(or one of its checkpoints/step_N)")
    if _is_checkpoint(p):
        run = p.parent.parent if p.parent.name == "checkpoints" else None
        return Trained(p, p, run, True)
    if (p / "config.json").is_file():
        return Trained(p, p, p, False)
    from hybrid.train.checkpoint import list_checkpoints, verify_files

    cands = list_checkpoints(p / "checkpoints")
    for c in cands:
        try:
            verify_files(c)
        except HybridError as e:
            log(f"warning: skipping {c.name}: {e}")
            continue
        if (c / "model.safetensors").is_file():
            log(f"note: {p} has no final model (the run stopped early); using its newest checkpoint {c.name}")
            return Trained(p, c, p, True)
    sub = sorted(q.parent.name for q in p.glob("*/config.json"))
    hint = f"; model folders inside it: {', '.join(sub)}" if sub else ""
    raise TrainedModelError(f"{p}: not a model folder (no config.json and no usable checkpoint){hint}")


def run_file(found: Trained, name: str) -> Path | None:
    """``recipe.json`` / ``train_config.json`` of the run the model came from, if present."""
    for d in (found.weights, found.run):
        if d is not None and (d / name).is_file():
            return d / name
    return None


def _model_config(found: Trained):
    from hybrid.blocks import HybridConfig

    if (found.weights / "config.json").is_file():
        try:
            return HybridConfig.from_pretrained(str(found.weights))
        except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken config
            raise TrainedModelError(f"{found.weights / 'config.json'}: unreadable ({type(e).__name__}: {e})") \
                from None
    import torch

    state = torch.load(found.weights / "trainer.pt", map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model_config" not in state:
        raise TrainedModelError(f"{found.weights}: the checkpoint records no model configuration")
    return HybridConfig(**state["model_config"])


def load_tokenizer_for(found: Trained):
    """The run's saved tokenizer, else the one its train config names, else the shipped default."""
    from hybrid.train.tokenizer import load_tokenizer

    for d in (found.weights, found.run):
        if d is not None and any((d / f).is_file() for f in TOKENIZER_FILES[:2]):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(d))
    spec = None
    tc = run_file(found, "train_config.json")
    if tc is not None:
        try:
            spec = (json.loads(tc.read_text()).get("data") or {}).get("tokenizer")
        except (ValueError, AttributeError):
            spec = None
    return load_tokenizer(spec)


def load_trained(found: Trained):
    """The ``HybridForCausalLM`` of ``found`` on the CPU in fp32 (eval mode)."""
    from hybrid.blocks import HybridForCausalLM

    if not found.checkpoint:
        try:
            return HybridForCausalLM.from_pretrained(str(found.weights)).eval()
        except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
            raise TrainedModelError(f"{found.weights}: cannot be loaded as a hybrid model "
                                    f"({type(e).__name__}: {e})") from None
    from hybrid.train.checkpoint import load_model_weights, verify_files

    verify_files(found.weights)
    model = HybridForCausalLM(_model_config(found))
    load_model_weights(found.weights, model)
    return model.eval()


def export_trained(found: Trained, out: Path) -> Path:
    """Write ``out`` as a ``from_pretrained``-ready folder: config, weights, tokenizer, and the run's
    recipe.json / train_config.json."""
    out = Path(out)
    if out.resolve() == found.weights.resolve():
        raise TrainedModelError(f"{out}: the export folder must differ from the source")
    model = load_trained(found)
    tok = load_tokenizer_for(found)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    for name in RUN_FILES:
        src = run_file(found, name)
        if src is not None:
            shutil.copyfile(src, out / name)
    return out
