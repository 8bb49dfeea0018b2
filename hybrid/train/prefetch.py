"""Generate micro-batches ahead of the training step in worker processes.

Every batch is a pure function of (step, micro-batch), so workers can compute them in any order and
the stream is identical to computing them inline (resume stays exact). Used for the RULER mixture,
whose prompt generation and tokenization cost more CPU time than a small model's GPU step.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing as mp
import os
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor

_SOURCE = None
# the last pool, kept for the next Prefetcher of the same source and worker count (the variants of a
# sweep share their data): (key, pool, warm)
_KEPT: list = []


def _init(source_path: str):
    global _SOURCE
    with open(source_path, "rb") as f:
        _SOURCE = pickle.load(f)
    import torch

    torch.set_num_threads(1)  # workers share the cores; one thread each


def _make(step: int, micro: int):
    return _SOURCE.batch(step, micro)


def auto_workers(kind: str, device_type: str, world_size: int) -> int:
    """0 (inline) unless the data is the RULER mixture on GPUs with spare CPU cores."""
    if kind != "ruler_mix" or device_type != "cuda":
        return 0
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    return max(0, min(6, cores // max(world_size, 1) - 1))


class Prefetcher:
    """``get(step, micro)`` returns ``source.batch(step, micro)``; with workers > 0 the next
    ``2 * workers`` micro-batches are already being generated in a process pool.

    Spawned workers take seconds to start: each imports torch, this package and the main module.
    Until the first worker result arrives, a batch that is not ready is made here instead of waited
    for (a batch is a pure function of its key: the stream is the same); from then on the pool is
    trusted to keep up. ``close()`` keeps the started pool for the next Prefetcher of an identical
    source (the variants of a sweep share their data), which then starts warm. The source reaches
    the workers through a file (see ``__init__``). History and measurements: BENCHMARKS.md, "Inside
    the shipped sweep"."""

    def __init__(self, source, *, steps: int, accum: int, workers: int = 0):
        self.source, self.steps, self.accum, self.workers = source, steps, accum, workers
        self.pending: dict[tuple[int, int], object] = {}
        self.pool = None
        self.warm = False  # has any worker delivered a batch yet?
        self.made_inline = 0  # batches made in this process while the workers were starting
        if workers > 0:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            # spawn, not fork: in a sweep the second training starts in a process that has already used
            # OpenMP (torch CPU ops), CUDA and compiler thread pools; forked workers can then deadlock in
            # their first OpenMP region (observed on the H200: the second variant never finished step 1)
            blob = pickle.dumps(source)
            self.key = (hashlib.sha1(blob).hexdigest(), workers)
            if _KEPT and _KEPT[0] == self.key:
                _, self.pool, self.warm = _KEPT
                _KEPT.clear()
            else:
                _drop_kept()
                # the source goes to the workers through a file, not as an initializer argument: spawning
                # writes a worker's arguments into a pipe, and arguments above the pipe's 64 KB block that
                # write (the training loop) until the new process has imported the parent's main module,
                # once per worker (the RULER source pickles to ~100 KB: the first steps of an H200 sweep
                # waited 45-67 s)
                fd, path = tempfile.mkstemp(prefix="hybrid-data-source-", suffix=".pkl")
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                _FILES.append(path)
                ctx = mp.get_context("spawn")
                self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(path,))

    def _keys_after(self, step: int, micro: int, n: int):
        s, m = step, micro
        for _ in range(n):
            m += 1
            if m == self.accum:
                s, m = s + 1, 0
            if s >= self.steps:
                return
            yield s, m

    def get(self, step: int, micro: int):
        if self.pool is None:
            return self.source.batch(step, micro)
        want = [(step, micro), *self._keys_after(step, micro, 2 * self.workers)]
        for key in want:
            if key not in self.pending:
                self.pending[key] = self.pool.submit(_make, *key)
        for key in [k for k in self.pending if k not in want]:  # e.g. after a jump
            self.pending.pop(key).cancel()
        fut = self.pending.pop((step, micro))
        if not self.warm:
            self.warm = fut.done() or any(f.done() and not f.cancelled() for f in self.pending.values())
        if not self.warm:
            fut.cancel()  # may already be handed to a worker; its result is then dropped
            self.made_inline += 1
            return self.source.batch(step, micro)
        return fut.result()

    def close(self, keep: bool = True) -> None:
        """Stop prefetching; with ``keep`` the started workers stay for the next Prefetcher of the same
        source in this process (the next variant of a sweep), which then skips their start-up."""
        if self.pool is not None:
            for f in self.pending.values():
                f.cancel()
            self.pending.clear()
            if keep:
                _drop_kept()
                _KEPT.extend([self.key, self.pool, self.warm])
            else:
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _drop_kept() -> None:
    if _KEPT:
        _KEPT[1].shutdown(wait=False, cancel_futures=True)
        _KEPT.clear()


_FILES: list[str] = []  # pickled sources read by starting workers; removed when this process exits


def _at_exit() -> None:
    _drop_kept()
    for path in _FILES:
        try:
            os.remove(path)
        except OSError:
            pass


atexit.register(_at_exit)
