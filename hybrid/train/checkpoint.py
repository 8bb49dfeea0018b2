"""Resumable checkpoints, written atomically.

Layout of ``OUT/checkpoints/``::

    step_000300/            one complete checkpoint
        model.safetensors   weights (shared/tied tensors handled by safetensors.torch.save_model)
        optimizer.pt        AdamW state
        trainer.pt          scheduler state, step, tokens seen, data position, train config
        rng_rank0.pt ...    python / numpy / torch / cuda RNG states, one file per rank
        config.json         the model's HybridConfig (the folder can be evaluated or exported alone)
        meta.json           written last: {"step", "complete": true, "sha256": {file: digest}, ...}
    latest                  the name of the newest complete checkpoint (replaced atomically)

A sharded checkpoint (``train.parallel: fsdp``) holds ``sharded/`` (torch.distributed.checkpoint
files: weights and AdamW state, written by every rank, readable by any number of processes) instead
of ``model.safetensors`` and ``optimizer.pt``; ``meta.json`` says ``"format": "sharded"`` and lists
the sha256 of every file, those under ``sharded/`` included.

A save writes everything into ``.tmp-step_N`` (each file fsynced), renames the folder into place,
fsyncs the parent, then swaps ``latest`` with ``os.replace``; only after that are older checkpoints
removed (the newest ``keep`` are kept). A crash at any point leaves the previous checkpoint and
``latest`` intact; leftover ``.tmp-*`` folders are ignored and cleaned on the next save.

Before a resume, :func:`load_verified` checks every file against its sha256 in ``meta.json`` and the
weights for NaN/Inf; a damaged checkpoint is skipped (and named) in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from hybrid.errors import HybridError


class CheckpointError(HybridError, RuntimeError):
    """A checkpoint that is missing, damaged or made for another model."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
                    rank: int = 0, keep: int = 2, barrier=None, sharded: bool = False,
                    _write_hook=None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically. Call on every rank (each writes its RNG
    file); rank 0 writes the rest. ``barrier`` synchronises ranks in distributed runs. ``sharded``:
    weights and optimizer go through torch.distributed.checkpoint (every rank writes its shards).
    Returns the final folder."""
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
    if sharded:
        _save_sharded(tmp / "sharded", model, optimizer)
        if barrier:
            barrier()
    if rank == 0:
        if not sharded:
            save_model(model, str(tmp / "model.safetensors"))
            _fsync_file(tmp / "model.safetensors")
        if _write_hook is not None:  # tests: simulate a crash in the middle of a save
            _write_hook(tmp)
        if not sharded:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            _fsync_file(tmp / "optimizer.pt")
        torch.save(trainer_state, tmp / "trainer.pt")
        _fsync_file(tmp / "trainer.pt")
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            (tmp / "config.json").write_text(config.to_json_string())
            _fsync_file(tmp / "config.json")
        digests = {p.relative_to(tmp).as_posix(): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        meta = {"step": step, "complete": True, "world_size": trainer_state.get("world_size", 1),
                "format": "sharded" if sharded else "full", "sha256": digests}
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


def _one_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def _save_sharded(folder: Path, model: torch.nn.Module, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, moments = get_state_dict(model, optimizer)
    with warnings.catch_warnings():  # one process is intended here, not a missing process group
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": weights, "optimizer": moments}, checkpoint_id=str(folder), no_dist=_one_process())


def _load_sharded(path: Path, model: torch.nn.Module, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, moments = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": moments} if optimizer is not None else {"model": weights}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path / "sharded"), no_dist=_one_process())
    except Exception as e:  # noqa: BLE001 - a damaged or foreign folder raises several types
        raise CheckpointError(f"{path}: cannot load the sharded state ({type(e).__name__}: {e})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state.get("optimizer", {}))


def checkpoint_format(path: Path) -> str:
    """``full`` (model.safetensors + optimizer.pt) or ``sharded`` (torch.distributed.checkpoint)."""
    try:
        return json.loads((Path(path) / "meta.json").read_text()).get("format", "full")
    except (OSError, ValueError):
        return "full"


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").exists())
    for p in done[:-keep] if keep > 0 else []:
        if p.name != newest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (those with a ``meta.json``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if (p / "meta.json").exists()), reverse=True)


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` if valid, else the highest complete
    ``step_*``), or None. Nothing is verified here: see :func:`load_verified`."""
    root = Path(root)
    if not root.is_dir():
        return None
    latest = root / "latest"
    if latest.exists():
        cand = root / latest.read_text().strip()
        if (cand / "meta.json").exists():
            return cand
    done = list_checkpoints(root)
    return done[0] if done else None


def verify_files(path: Path) -> None:
    """Check every file of a checkpoint against the sha256 recorded in its ``meta.json``; raise
    :class:`CheckpointError` naming the first file that is missing or differs."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: meta.json is unreadable ({e})") from None
    digests = meta.get("sha256")
    if not isinstance(digests, dict):  # written before checksums existed: nothing to compare
        return
    for name, want in digests.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_of(f) != want:
            raise CheckpointError(f"{path}: {name} does not match its sha256 (truncated or overwritten)")


def check_finite(model: torch.nn.Module, path: Path) -> None:
    """Raise when a weight holds NaN or Inf; for sharded weights every rank checks its shards and the
    verdict is shared, so all ranks raise together."""
    import torch.distributed as dist

    bad = None
    sharded = False
    for name, t in model.state_dict().items():
        if hasattr(t, "to_local"):
            sharded, t = True, t.to_local()
        if bad is None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = name
    if sharded and dist.is_initialized():
        flag = torch.tensor([0.0 if bad is None else 1.0], device=next(model.parameters()).device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and bad is None:
            bad = "(on another rank)"
    if bad is not None:
        raise CheckpointError(f"{path}: weight {bad} holds NaN or Inf")


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's ``model.safetensors`` into ``model`` (strict) and check that it is finite."""
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(Path(path) / "model.safetensors"), strict=False)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise CheckpointError(f"{path}: cannot load model.safetensors ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}; was it made from another recipe?")
    check_finite(model, path)


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a truncated file raises RuntimeError / EOFError / pickle errors
        raise CheckpointError(f"{path.parent}: cannot read {path.name} ({type(e).__name__}: {e})") from None


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer=None, rank: int = 0) -> dict:
    """Verify a checkpoint folder, load weights (and optimizer, RNG of this rank); return trainer state.
    Raises :class:`CheckpointError` when any part is missing, damaged or not finite."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no meta.json)")
    verify_files(path)
    sharded_model = any(hasattr(p, "to_local") for p in model.parameters())
    if checkpoint_format(path) == "sharded":
        _load_sharded(path, model, optimizer)
        check_finite(model, path)
    elif sharded_model:
        raise CheckpointError(f"{path}: saved with train.parallel: ddp; resume it with parallel: ddp")
    else:
        load_model_weights(path, model)
    state = _torch_load(path / "trainer.pt")
    if optimizer is not None and checkpoint_format(path) != "sharded":
        optimizer.load_state_dict(_torch_load(path / "optimizer.pt"))
    rng_path = path / f"rng_rank{rank}.pt"
    if rng_path.exists():
        set_rng_state(_torch_load(rng_path))
    return state


def load_verified(root: Path, *, model: torch.nn.Module, optimizer=None, rank: int = 0,
                  log=print) -> tuple[Path, dict]:
    """Load the newest checkpoint under ``root`` that passes :func:`load_checkpoint`'s checks, falling
    back to older ones (each skipped one is reported through ``log``). Returns (folder, trainer state)."""
    cands = list_checkpoints(root)
    latest = find_latest(root)
    if latest is not None and latest in cands:  # ``latest`` first, then the others newest first
        cands.remove(latest)
        cands.insert(0, latest)
    problems = []
    for cand in cands:
        try:
            return cand, load_checkpoint(cand, model=model, optimizer=optimizer, rank=rank)
        except CheckpointError as e:
            problems.append(str(e))
            log(f"warning: {e}; trying the previous checkpoint")
    if not problems:
        raise CheckpointError(f"{root}: no checkpoint to resume from; run without --resume to start over")
    raise CheckpointError(f"{root}: every checkpoint is damaged (newest: {problems[0]}); start a new run "
                          "without --resume in another --out")
