"""Seed ranges: every RULER sample is a pure function of one integer seed.

Evaluation and training draw from disjoint seed ranges, so a model is never trained on a sample it is
evaluated on:

* evaluation seeds lie in ``[EVAL_SEED_BASE, EVAL_SEED_BASE + SEED_SPAN)`` = ``[2**48, 2**49)``;
  ``eval_seed(task, length, index, seed)`` maps (user seed, task name, target length, sample index)
  into that range through SHA-256, so sample ``i`` of ``niah_single_1`` at 4096 tokens with
  ``--seed 0`` is the same prompt on every machine, whatever other tasks or lengths are run;
* training seeds lie in ``[0, SEED_SPAN)`` = ``[0, 2**48)``; ``train_seed(seed, step, index)`` maps a
  run seed, an optimizer step and a position in the batch into it. ``check_train_seed`` raises if a
  training seed strays into the evaluation range.

A seed becomes a sample through ``random.Random(seed)`` (Python's Mersenne Twister, stable across
platforms and Python versions for ``getrandbits``/``randrange``/``sample``/``shuffle`` with ints).
"""

from __future__ import annotations

import hashlib
import random

SEED_SPAN = 1 << 48
EVAL_SEED_BASE = 1 << 48
TRAIN_SEED_BASE = 0


def _hash(*parts) -> int:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") % SEED_SPAN


def eval_seed(task: str, length: int, index: int, seed: int = 0) -> int:
    """The seed of evaluation sample ``index`` of ``task`` at ``length`` tokens under user seed ``seed``."""
    return EVAL_SEED_BASE + _hash("ruler-eval", seed, task, length, index)


def train_seed(seed: int, step: int, index: int = 0) -> int:
    """A training-sample seed, disjoint from every evaluation seed."""
    return TRAIN_SEED_BASE + _hash("ruler-train", seed, step, index)


def is_eval_seed(s: int) -> bool:
    return EVAL_SEED_BASE <= int(s) < EVAL_SEED_BASE + SEED_SPAN


def check_train_seed(s: int) -> int:
    if is_eval_seed(s):
        raise ValueError(f"seed {s} lies in the RULER evaluation range [2**48, 2**49); training must use "
                         "hybrid.tasks.seeds.train_seed(...)")
    return s


def eval_rng(task: str, length: int, index: int, seed: int = 0) -> random.Random:
    return random.Random(eval_seed(task, length, index, seed))


def train_rng(seed: int, step: int, index: int = 0) -> random.Random:
    return random.Random(train_seed(seed, step, index))
