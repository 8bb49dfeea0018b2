"""Device rates for the roofline: a matmul rate (FLOP/s) and a memory copy rate (bytes/s).

Known devices hold rates *measured* by this project; anything else is measured on the fly (a few
large matmuls and copies, well under a second on a GPU, ~1 s on a small CPU).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class DeviceRates:
    name: str
    matmul_flops: float  # FLOP/s of a large dense matmul in the compute dtype
    bandwidth: float  # bytes/s of a large copy (read + write counted)
    dtype: str
    source: str  # where the numbers come from

    def to_dict(self) -> dict:
        return asdict(self)


# Measured on the project's device (shared/notes/platform.md): bf16 torch.matmul, and a large copy.
KNOWN = {
    "H200": DeviceRates("NVIDIA H200", 788e12, 4.3e12, "bf16", "table: measured on an H200 by this project"),
}

_CACHE: dict = {}


def _best_time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(device: str, dtype: torch.dtype) -> DeviceRates:
    """Time a square matmul and a copy on ``device`` in ``dtype``."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n = 8192 if cuda else 1024
    a = torch.randn(n, n, device=dev, dtype=dtype)
    bm = torch.randn(n, n, device=dev, dtype=dtype)
    t_mm = _best_time(lambda: torch.matmul(a, bm), 5 if cuda else 3, sync)
    numel = (1 << 28) if cuda else (1 << 24)
    x = torch.empty(numel, device=dev, dtype=torch.float32).fill_(1.0)
    y = torch.empty_like(x)
    t_cp = _best_time(lambda: y.copy_(x), 5 if cuda else 3, sync)
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    return DeviceRates(name, 2 * n**3 / t_mm, 2 * numel * 4 / t_cp, str(dtype).replace("torch.", ""),
                       f"measured now (matmul {n}x{n}, copy {numel * 4 >> 20} MiB)")


def rates_for(device: str, dtype: torch.dtype | None = None) -> DeviceRates:
    """Rates for ``device`` ('cpu', 'cuda', 'cuda:1'): the known-device table, else a measurement."""
    dev = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_name(dev)
        for key, r in KNOWN.items():
            if key in gpu and r.dtype == str(dtype).replace("torch.", ""):
                return r
    key = (str(dev), dtype, torch.get_num_threads())
    if key not in _CACHE:
        _CACHE[key] = measure(str(dev), dtype)
    return _CACHE[key]
