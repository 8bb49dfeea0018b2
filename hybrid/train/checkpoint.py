"""Resumable checkpoints, written atomically.

Layout of ``OUT/checkpoints/``::

    step_000300/            one complete checkpoint
        model.safetensors   weights (shared/tied tensors handled by safetensors.torch.save_model)
        optimizer.pt        AdamW state
        trainer.pt          scheduler state, step, tokens seen, data position, train config
        rng_rank0.pt ...    python / numpy / torch / cuda RNG states, one file per rank
        meta.json           written last: {"step", "complete": true, ...}
    latest                  the name of the newest complete checkpoint (replaced atomically)

A save writes everything into ``.tmp-step_N`` (each file fsynced), renames the folder into place,
fsyncs the parent, then swaps ``latest`` with ``os.replace``; only after that are older checkpoints
removed. A crash at any point leaves the previous checkpoint and ``latest`` intact; leftover ``.tmp-*``
folders are ignored and cleaned on the next save.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    pass


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # fewer GPUs than when saved: keep the fresh state
            pass


def tmp_dir_for(root: Path, step: int) -> Path:
    return root / f".tmp-step_{step:06d}"


def write_rng(tmp: Path, rank: int) -> None:
    path = tmp / f"rng_rank{rank}.pt"
    torch.save(rng_state(), path)
    _fsync_file(path)


def save_checkpoint(root: Path, step: int, *, model: torch.nn.Module, optimizer, trainer_state: dict,
                    rank: int = 0, keep: int = 1, barrier=None, _write_hook=None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically. Call on every rank (each writes its RNG
    file); rank 0 writes the rest. ``barrier`` synchronises ranks in distributed runs. Returns the
    final folder."""
    from safetensors.torch import save_model

    root = Path(root)
    tmp = tmp_dir_for(root, step)
    final = root / f"step_{step:06d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if barrier:
        barrier()
    write_rng(tmp, rank)
    if barrier:
        barrier()
    if rank == 0:
        save_model(model, str(tmp / "model.safetensors"))
        _fsync_file(tmp / "model.safetensors")
        if _write_hook is not None:  # tests: simulate a crash in the middle of a save
            _write_hook(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        _fsync_file(tmp / "optimizer.pt")
        torch.save(trainer_state, tmp / "trainer.pt")
        _fsync_file(tmp / "trainer.pt")
        meta = {"step": step, "complete": True, "world_size": trainer_state.get("world_size", 1)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        _fsync_file(tmp / "meta.json")
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
            old = root / f".old-step_{step:06d}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
        latest_tmp = root / ".latest.tmp"
        latest_tmp.write_text(final.name + "\n")
        _fsync_file(latest_tmp)
        os.replace(latest_tmp, root / "latest")
        _fsync_dir(root)
        _prune(root, keep, final.name)
    if barrier:
        barrier()
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").exists())
    for p in done[:-keep] if keep > 0 else []:
        if p.name != newest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` if valid, else the highest complete
    ``step_*``), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    latest = root / "latest"
    if latest.exists():
        cand = root / latest.read_text().strip()
        if (cand / "meta.json").exists():
            return cand
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer=None, rank: int = 0) -> dict:
    """Load weights (and optimizer, RNG of this rank) from a checkpoint folder; return trainer state."""
    from safetensors.torch import load_model

    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no meta.json)")
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot load weights from {path}: {e}") from e
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]} (was it made from another recipe?)")
    state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    rng_path = path / f"rng_rank{rank}.pt"
    if rng_path.exists():
        set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
    return state
