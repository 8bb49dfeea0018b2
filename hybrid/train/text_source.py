"""Local text, tokenized and packed into fixed-length rows with document boundaries respected.

Each document becomes ``<bos> tokens <eos>`` and all documents are concatenated into one token
stream. Held-out text: with at least 50 documents, every ``round(1/val_fraction)``-th document is
held out whole; with fewer (e.g. 42 Shakespeare works), the last ``val_fraction`` of each document's
tokens is held out. The training stream is cut into rows of ``seq_len`` tokens; an epoch visits the
rows in a permutation seeded by ``(seed, epoch)``, and global row ``g`` of the run (over steps,
micro-batches, ranks and the batch) is a pure function of the step, so resuming needs only the step
number and ranks read disjoint rows (a distributed sampler without state).

A batch of B rows is flattened into one ``(1, B*seq_len)`` packed sequence; ``cu_seqlens`` marks every
document start and every row start, and the first token of each segment gets no loss.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from hybrid.train.batches import Batch, pack_rows
from hybrid.train.textfiles import DataFileError, expand_files, iter_documents

_CACHE: dict = {}


def _tokenize_files(files: list[str] | None, tok, val_fraction: float):
    paths = expand_files(files)
    key = (tuple(str(p.resolve()) for p in paths), tok.name_or_path, len(tok), val_fraction)
    if key in _CACHE:
        return _CACHE[key]
    docs = [d for p in paths for d in iter_documents(p)]
    enc = tok(docs, add_special_tokens=False)["input_ids"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    train_parts, val_parts = [], []
    every = max(1, round(1 / val_fraction)) if val_fraction > 0 else 0
    for i, ids in enumerate(enc):
        if not ids:
            continue
        doc = np.asarray([bos] + list(ids) + [eos], dtype=np.int32)
        if every and len(enc) >= 50:
            (val_parts if i % every == every - 1 else train_parts).append(doc)
        elif every:
            cut = len(doc) - max(1, int(math.ceil(len(doc) * val_fraction))) if len(doc) > 8 else len(doc)
            train_parts.append(doc[:cut])
            if cut < len(doc):
                # the held-out tail starts a new segment: give it a bos so it reads like a document
                val_parts.append(np.concatenate([[bos], doc[cut:]]).astype(np.int32))
        else:
            train_parts.append(doc)
    if not train_parts:
        raise DataFileError(f"no tokens in {', '.join(map(str, paths))}")
    out = (paths, np.concatenate(train_parts), np.concatenate(val_parts) if val_parts else None)
    _CACHE[key] = out
    return out


def _segment_starts(row: np.ndarray, bos: int) -> list[int]:
    starts = np.flatnonzero(row == bos).tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return starts


class TextSource:
    kind = "text"

    def __init__(self, *, tokenizer, files: list[str] | None, seq_len: int, batch_size: int,
                 grad_accum: int, val_fraction: float = 0.02, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.tok = tokenizer
        self.T, self.B, self.accum = seq_len, batch_size, grad_accum
        self.seed, self.rank, self.world = seed, rank, world_size
        self.paths, self.train, self.val = _tokenize_files(files, tokenizer, val_fraction)
        self.bos = tokenizer.bos_token_id
        self.n_rows = len(self.train) // seq_len
        if self.n_rows < 1:
            raise DataFileError(f"the training text has {len(self.train)} tokens, fewer than one row of "
                                f"seq_len={seq_len}; add text or lower train.seq_len")
        self.n_val_rows = 0 if self.val is None else len(self.val) // seq_len
        if val_fraction > 0 and self.n_val_rows == 0 and rank == 0:
            have = 0 if self.val is None else len(self.val)
            print(f"warning: no held-out rows: the held-out text has {have} tokens, fewer than one row of "
                  f"seq_len={seq_len}; every held-out loss will be null; add text files or raise "
                  "train.data.val_fraction", file=sys.stderr)
        self._perm_epoch, self._perm = -1, None

    def _row_index(self, g: int) -> int:
        epoch, i = divmod(g, self.n_rows)
        if epoch != self._perm_epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0x54455854, self.seed, epoch])))
            self._perm, self._perm_epoch = rng.permutation(self.n_rows), epoch
        return int(self._perm[i])

    def _rows(self, stream: np.ndarray, indices: list[int]) -> Batch:
        rows = []
        for r in indices:
            ids = stream[r * self.T:(r + 1) * self.T].astype(np.int64)
            rows.append((ids, ids.copy(), _segment_starts(ids, self.bos)))
        return pack_rows(rows)

    def batch(self, step: int, micro: int) -> Batch:
        base = ((step * self.accum + micro) * self.world + self.rank) * self.B
        return self._rows(self.train, [self._row_index(base + b) for b in range(self.B)])

    def epoch_of(self, step: int) -> float:
        return (step + 1) * self.accum * self.world * self.B / self.n_rows

    def eval_batch(self, i: int) -> Batch | None:
        if self.n_val_rows == 0:
            return None
        idx = [((i * self.world + self.rank) * self.B + b) % self.n_val_rows for b in range(self.B)]
        return self._rows(self.val, idx)

    def baselines(self) -> dict:
        """Unigram entropy (nats/token) of the training targets: the loss of the best model that ignores
        context. A model that learned anything from context must go below it."""
        counts = np.bincount(self.train.astype(np.int64), minlength=len(self.tok))
        counts[self.bos] = 0  # bos tokens are never targets
        p = counts[counts > 0] / counts.sum()
        return {"unigram_entropy_nats": float(-(p * np.log(p)).sum()), "train_tokens": int(len(self.train)),
                "val_tokens": 0 if self.val is None else int(len(self.val))}

    def describe(self) -> str:
        names = ", ".join(p.name for p in self.paths[:3]) + (" ..." if len(self.paths) > 3 else "")
        return (f"text: {names}; {len(self.train):,} train / {0 if self.val is None else len(self.val):,} "
                f"held-out tokens; {self.n_rows:,} rows of {self.T}")
