"""``--device`` values turned into a ``torch.device``, with a one-line error when the device is absent."""

from __future__ import annotations

import re

from hybrid.errors import DeviceError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str | None) -> None:
    """Reject a device string that is not auto, cpu, cuda or cuda:N (without importing torch)."""
    if name is not None and not _DEVICE.match(str(name)):
        raise DeviceError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str | None, local_rank: int = 0):
    """``auto``/None: cuda:LOCAL_RANK when CUDA is usable, else cpu. ``cuda`` without a GPU, or a GPU
    index that is not there, is a :class:`DeviceError`."""
    import torch

    check_device_name(name)
    if name in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    d = torch.device(name)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"--device {name}: {why}; use --device cpu (or auto)")
        if d.index is None:
            d = torch.device(f"cuda:{local_rank}")
        if d.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return d
