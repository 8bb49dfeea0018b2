"""The batch every data source produces, and the seed scheme shared by all of them.

Label convention (Hugging Face causal LM): ``labels`` has the shape of ``input_ids``; the model
predicts ``labels[t]`` from positions ``< t`` (it shifts internally); ``-100`` is ignored. Sources
set ``-100`` on the first token of every packed segment, so no token is ever predicted across a
document (or row) boundary.

Packed batches are ``(1, N)`` with ``cu_seqlens`` (int32, ``[0, ..., N]``) marking segment starts,
which the model uses to reset recurrent state, short conv, attention and RoPE at each boundary.

Seed scheme: every micro-batch is drawn from its own generator,
``numpy.random.Generator(PCG64(SeedSequence([TAG, stream, seed, rank, step, micro])))`` where
``TAG = 0x48594252`` ("HYBR"), ``stream`` is 1 for training and 2 for held-out evaluation draws, and
``seed`` is ``train.seed``. The data position of a run is therefore just the step number (exact
resume for free), ranks draw disjoint streams, and training draws can never coincide with
evaluation draws (different ``stream``), nor with RULER evaluation samples, which
``hybrid.tasks`` derives from plain integer seeds without this tag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100
SEED_TAG = 0x48594252
TRAIN_STREAM = 1
EVAL_STREAM = 2


def rng_for(seed: int, stream: int, rank: int, step: int, micro: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([SEED_TAG, stream, seed, rank, step, micro])))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) or (1, N) int64
    labels: torch.Tensor  # same shape, IGNORE where no loss
    cu_seqlens: torch.Tensor | None = None  # int32 (S+1,) for packed (1, N) batches
    # labels of the answer tokens only (IGNORE elsewhere), for sources that know which tokens answer a
    # question (ruler_mix); held-out evaluation reports next-token accuracy on them
    answer_labels: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device) -> Batch:
        cu = None if self.cu_seqlens is None else self.cu_seqlens.to(device, non_blocking=True)
        ans = None if self.answer_labels is None else self.answer_labels.to(device, non_blocking=True)
        return Batch(self.input_ids.to(device, non_blocking=True), self.labels.to(device, non_blocking=True), cu,
                     ans)


def _one_segment(row: tuple) -> bool:
    """True when a row is one segment, or one segment followed by a tail without any target (padding):
    in a causal model the tail cannot change what comes before it, so no boundary is needed there."""
    starts = list(row[2])
    if starts in ([], [0]):
        return True
    if len(starts) != 2 or starts[0] != 0:
        return False
    tails = [row[1]] + ([row[3]] if len(row) > 3 and row[3] is not None else [])
    return all(bool(np.all(np.asarray(col)[starts[1]:] == IGNORE)) for col in tails)


def pack_rows(rows: list[tuple], allow_plain: bool = True) -> Batch:
    """Flatten rows of (ids, labels, segment_starts[, answer_labels]) into one (1, N) batch with
    cu_seqlens (``answer_labels``, when every row has them, become ``Batch.answer_labels``).

    ``segment_starts`` are offsets inside the row (0 first); each row start is also a boundary.
    When no row holds a boundary inside it (a tail of padding without targets does not count) and
    ``allow_plain``, the rows are returned as a plain ``(B, T)`` batch without ``cu_seqlens``: the same computation, and faster for recurrent layers on
    CPU (B sequences in parallel instead of one B*T-long sequence)."""
    with_answers = bool(rows) and all(len(r) > 3 and r[3] is not None for r in rows)
    if allow_plain and len({len(r[0]) for r in rows}) == 1 and all(_one_segment(r) for r in rows):
        def stacked(col: int) -> torch.Tensor:  # a label column; the first token of a row has no target
            lab = np.stack([r[col] for r in rows]).astype(np.int64)
            lab[:, 0] = IGNORE
            return torch.from_numpy(lab)

        return Batch(torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.int64)), stacked(1), None,
                     stacked(3) if with_answers else None)

    def flat(col: int) -> torch.Tensor:  # a label column; no target at a segment start
        out = []
        for r in rows:
            lab = r[col].copy()
            lab[np.asarray(r[2], dtype=np.int64)] = IGNORE
            out.append(lab)
        return torch.from_numpy(np.concatenate(out).astype(np.int64))[None]

    cu, offset = [], 0
    for r in rows:
        cu += [offset + s for s in r[2]]
        offset += len(r[0])
    cu.append(offset)
    cu_arr = np.unique(np.asarray(cu, dtype=np.int64))
    return Batch(torch.from_numpy(np.concatenate([r[0] for r in rows]).astype(np.int64))[None], flat(1),
                 torch.from_numpy(cu_arr.astype(np.int32)), flat(3) if with_answers else None)
