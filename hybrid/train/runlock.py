"""An exclusive lock on a training output folder.

``OUT/.lock`` is held with ``flock`` for the whole run and holds the owner's process id and host. A
second ``hybrid train`` on the same folder is refused while the owner runs. The kernel drops the lock
when its process dies, so a lock file left by a killed run is stale: the next run takes it over and
says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from hybrid.errors import HybridError

LOCK_NAME = ".lock"


class RunLockError(HybridError):
    """Another live process owns the output folder."""


def _owner(text: str) -> dict | None:
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return d if isinstance(d, dict) and isinstance(d.get("pid"), int) else None


class RunLock:
    """``with RunLock(out, log=print):`` takes the lock (or raises :class:`RunLockError`) and releases it
    at the end. The folder is created when missing."""

    def __init__(self, out: Path, log=print):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.log = log
        self._fd: int | None = None

    def acquire(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            who = f"process {owner['pid']} on {owner.get('host')}" if owner else "another process"
            raise RunLockError(f"{self.out}: another hybrid train ({who}) is writing this folder; wait for it "
                               "to finish or choose another --out") from None
        previous = _owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if previous is not None:
            self.log(f"note: {self.out} was locked by process {previous['pid']} on {previous.get('host')}, "
                     "which is gone; taking the lock over")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # empty: the next run sees a clean release, not a stale lock
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
