"""Progress for logs: one line every N steps (step, loss, tokens/s, ETA) instead of a redrawn bar.

Used when stderr is not a terminal (a log file, a job scheduler) and with ``--no-progress``.
"""

from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Heartbeat:
    """``beat(step, loss, tok_per_s)`` after every step prints on the first step, every ``every``
    steps and on the last one."""

    def __init__(self, total: int, start: int, every: int, stream=None, clock=time.perf_counter):
        self.total, self.start, self.every = total, start, every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = clock()

    def due(self, step: int) -> bool:
        return step == self.start + 1 or step == self.total or (self.every > 0 and step % self.every == 0)

    def line(self, step: int, loss: float | None, tok_per_s: float, extra: str = "") -> str:
        done = step - self.start
        elapsed = self.clock() - self.t0
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        loss_s = f"loss {loss:.4f}" if loss is not None else "loss -"
        return (f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%)  {loss_s}  "
                f"{tok_per_s:,.0f} tok/s  ETA {fmt_duration(eta)}{extra}")

    def beat(self, step: int, loss: float | None, tok_per_s: float, extra: str = "") -> None:
        if self.due(step):
            print(self.line(step, loss, tok_per_s, extra), file=self.stream, flush=True)
