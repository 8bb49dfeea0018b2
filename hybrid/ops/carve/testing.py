"""Random operator inputs and error measures shared by the tests, the GPU checks and the demo."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .inputs import CarveState


@dataclass
class CarveInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor
    a: torch.Tensor
    w: torch.Tensor
    u_down: torch.Tensor | None
    u_up: torch.Tensor | None

    def args(self):
        return (self.q, self.k, self.v, self.g, self.a, self.w, self.u_down, self.u_up)

    def tensors(self) -> dict[str, torch.Tensor]:
        d = {"q": self.q, "k": self.k, "v": self.v, "g": self.g, "a": self.a, "w": self.w}
        if self.u_down is not None:
            d["u_down"], d["u_up"] = self.u_down, self.u_up
        return d

    def requires_grad_(self) -> CarveInputs:
        for t in self.tensors().values():
            t.requires_grad_(True)
        return self

    def to(self, **kw) -> CarveInputs:
        conv = lambda t: None if t is None else t.detach().clone().to(**kw)
        return CarveInputs(*(conv(t) for t in self.args()))


def random_inputs(
    B: int = 2,
    T: int = 37,
    H: int = 2,
    K: int = 8,
    V: int = 6,
    r: int = 4,
    *,
    decay: float = 1.0,
    vector_w: bool = False,
    content: bool = True,
    dtype: torch.dtype = torch.float64,
    device="cpu",
    seed: int = 0,
    content_scale: float = 0.5,
) -> CarveInputs:
    """Random, never-zero inputs. ``decay`` bounds the per-step log-decay: g ~ -decay * U(0, 1).

    q and k are L2-normalised as the block does; ``u_up`` is random (not the zero init) so that
    the content path is exercised."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    uni = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
    q = F.normalize(rnd(B, T, H, K), dim=-1)
    k = F.normalize(rnd(B, T, H, K), dim=-1)
    v = rnd(B, T, H, V)
    g = -decay * uni(B, T, H, K)
    a = rnd(B, T, H, K)
    w = uni(B, T, H, V) if vector_w else uni(B, T, H)
    u_down = rnd(H, r, V) * content_scale if content else None
    u_up = rnd(H, K, r) * content_scale if content else None
    conv = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return CarveInputs(*(conv(t) for t in (q, k, v, g, a, w, u_down, u_up)))


def random_state(n: int, H: int, K: int, V: int, chunk_size: int, *, dtype=torch.float64, device="cpu",
                 seed: int = 1) -> CarveState:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    pos = torch.randint(0, chunk_size, (n,), generator=gen).to(device)
    return CarveState(rnd(n, H, K, V) * 0.3, rnd(n, H, V) * 0.3, rnd(n, H, V) * 0.3, pos)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error ||x - ref|| / ||ref|| in float64 (NaN anywhere gives inf)."""
    x64, r64 = x.detach().double(), ref.detach().double()
    if not torch.isfinite(x64).all():
        return float("inf")
    den = r64.norm().item()
    num = (x64 - r64).norm().item()
    return num / den if den > 0 else num
