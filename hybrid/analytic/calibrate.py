"""Measure the parts of a training step on the current device: the cells of a calibration table.

Each part (hybrid.analytic.parts) is run alone on random inputs at every grid cell (T, N = B * T), with
the real modules of a one-layer model: forward under the model's autocast, backward outside it, as in
a training step. Recorded per cell: the median forward and backward seconds (on CUDA per call of
``STREAMED`` calls run back to back, so that the host's launches overlap the device's work as they do
in a step; on the CPU of one call), and the memory:

- CUDA: ``saved_bytes`` = allocated after the forward minus before (what the part keeps for its
  backward, its output included), ``fwd_extra_bytes`` = the forward's peak above the inputs,
  ``bwd_extra_bytes`` = the backward's peak above the allocation after the forward, plus the incoming
  gradient. The bf16 copies that autocast makes of the weights are counted apart (``fixed_bytes``).
- CPU: ``saved_bytes`` = the distinct tensors autograd saves (saved-tensor hooks, parameters
  excluded); the transients are not measured there (0).

The optimizer step (gradient clipping + AdamW, as ``hybrid train`` runs it) is timed at two parameter
counts and stored as a fixed cost plus a cost per parameter.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch

from hybrid.analytic.calibration import Table
from hybrid.analytic.parts import describe, signature_key

DEFAULT_GRID = {
    "cuda": {"lengths": (512, 2048, 8192, 32768), "tokens": (2048, 8192, 32768)},
    "cpu": {"lengths": (64, 256, 1024), "tokens": (1024, 4096)},
}
STREAMED = 4  # calls per timing on CUDA, back to back (PartRunner._streamed)
_PLACEHOLDER = {"kind": "attention", "heads": 1, "head_dim": 2}  # the layer a head/embed-only model needs


def default_grid(device: str) -> dict:
    return DEFAULT_GRID["cuda" if torch.device(device).type == "cuda" else "cpu"]


def grid_cells(lengths, tokens) -> list[tuple[int, int]]:
    """(batch, length) pairs: every length with every token count it divides into at least one row."""
    out = []
    for t in sorted(set(lengths)):
        for n in sorted(set(tokens)):
            if n >= t:
                out.append((max(1, n // t), t))
    return out


def _sync(dev: torch.device):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _autocast(dev: torch.device):
    from hybrid.blocks.model import bf16_autocast

    return bf16_autocast(dev)


class PartRunner:
    """The modules of one part, built once, and a function running its forward on given inputs."""

    def __init__(self, sig: dict, device: str):
        from hybrid.blocks.config import HybridConfig
        from hybrid.blocks.model import HybridForCausalLM

        self.sig = sig
        self.dev = torch.device(device)
        part, d = sig["part"], sig["d_model"]
        layer = sig["block"] if part == "mixer" else _PLACEHOLDER
        mlp = {"kind": "swiglu", "hidden": sig["hidden"]} if part == "mlp" else {"kind": "none"}
        cfg = HybridConfig(vocab_size=sig.get("vocab", 8), d_model=d, layers=[layer], mlp=mlp)
        with torch.device(self.dev):
            model = HybridForCausalLM(cfg)
        model.train()
        self.model = model
        blk = model.model.layers[0]
        if part == "mixer":
            self.modules = [blk.mixer_norm, blk.mixer]
            self.run = lambda x, pos, ids: x + blk.mixer(blk.mixer_norm(x), positions=pos)
        elif part == "mlp":
            self.modules = [blk.mlp_norm, blk.mlp]
            self.run = lambda x, pos, ids: x + blk.mlp(blk.mlp_norm(x))
        elif part == "head":
            self.modules = [model.model.norm, model.lm_head]
            self.run = lambda x, pos, ids: model.loss(model.lm_head(model.model.norm(x)), ids)
        elif part == "embed":
            self.modules = [model.model.embed_tokens]
            self.run = lambda x, pos, ids: model.model.embed_tokens(ids)
        else:
            raise ValueError(f"unknown part {part!r}")
        self.params = list({id(p): p for m in self.modules for p in m.parameters()}.values())

    def fixed_bytes(self) -> int:
        """Bytes of the bf16 weight copies autocast keeps for the backward (CUDA only)."""
        if self.dev.type != "cuda":
            return 0
        ws = {id(m.weight): m.weight for mod in self.modules for m in mod.modules() if isinstance(m, torch.nn.Linear)}
        return 2 * sum(w.numel() for w in ws.values())

    def inputs(self, batch: int, length: int):
        g = torch.Generator(device="cpu").manual_seed(0)
        d, vocab = self.sig["d_model"], self.sig.get("vocab", 8)
        x = torch.randn(batch, length, d, generator=g).to(self.dev).requires_grad_(self.sig["part"] != "embed")
        ids = torch.randint(0, vocab, (batch, length), generator=g).to(self.dev)
        pos = torch.arange(length, device=self.dev).expand(batch, length)
        return x, pos, ids

    def measure(self, batch: int, length: int, warmup: int, repeats: int) -> dict:
        dev = self.dev
        x, pos, ids = self.inputs(batch, length)
        for p in self.params:  # gradients exist, as in a step after the first: the backward accumulates
            p.grad = torch.zeros_like(p)
        with _autocast(dev):
            out = self.run(x, pos, ids)
        gout = None
        if out.dim():
            gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dev, out.dtype)
        del out
        timer = self._streamed if dev.type == "cuda" else self._alone
        fwd, bwd = [], []
        for i in range(warmup + repeats):
            f, b = timer(x, pos, ids, gout)
            if i >= warmup:
                fwd.append(f)
                bwd.append(b)
        cell = {"batch": batch, "length": length, "tokens": batch * length,
                "forward_s": statistics.median(fwd), "backward_s": statistics.median(bwd)}
        x.grad = None
        cell.update(self._memory(x, pos, ids, gout))
        for p in self.params:
            p.grad = None
        return cell

    def _alone(self, x, pos, ids, gout) -> tuple[float, float]:
        """(forward, backward) seconds of one call, each timed on its own (the CPU: nothing overlaps)."""
        x.grad = None
        t0 = time.perf_counter()
        with _autocast(self.dev):
            out = self.run(x, pos, ids)
        t1 = time.perf_counter()
        out.backward(gout)
        return t1 - t0, time.perf_counter() - t1

    def _streamed(self, x, pos, ids, gout) -> tuple[float, float]:
        """(forward, backward) seconds per call on CUDA when STREAMED calls run back to back: the host
        queues the next call's kernels while the device runs this one's, as it does from part to part in
        a step. A part timed alone between two synchronisations would instead pay the host's launch time
        and the device's time one after the other (a width-512 CARVE layer's forward: 2.4-3.3 ms alone at
        any token count). The backward is the forward + backward calls' time less the forward's."""
        dev = self.dev

        def per_call(with_backward: bool) -> float:
            x.grad = None
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(STREAMED):
                with _autocast(dev):
                    out = self.run(x, pos, ids)
                if with_backward:
                    out.backward(gout)
                del out
            _sync(dev)
            return (time.perf_counter() - t0) / STREAMED

        fwd = per_call(False)
        return fwd, max(per_call(True) - fwd, 0.0)

    def _memory(self, x, pos, ids, gout) -> dict:
        fixed = self.fixed_bytes()
        gout_bytes = 0 if gout is None else gout.numel() * gout.element_size()
        if self.dev.type == "cuda":
            dev = self.dev
            gc.collect()
            _sync(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            with _autocast(dev):
                out = self.run(x, pos, ids)
            _sync(dev)
            after = torch.cuda.memory_allocated(dev)
            fpeak = torch.cuda.max_memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            out.backward(gout)
            _sync(dev)
            bpeak = torch.cuda.max_memory_allocated(dev)
            del out
            return {"saved_bytes": after - base - fixed, "fwd_extra_bytes": fpeak - base - fixed,
                    "bwd_extra_bytes": bpeak - after + gout_bytes}
        own = {p.untyped_storage().data_ptr() for p in self.params}
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in own:
                seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with _autocast(self.dev):
                out = self.run(x, pos, ids)
        out.backward(gout)
        return {"saved_bytes": sum(seen.values()) - fixed, "fwd_extra_bytes": 0, "bwd_extra_bytes": 0}


def calibrate_part(sig: dict, device: str, cells, *, warmup: int, repeats: int, log=None) -> dict:
    runner = PartRunner(sig, device)
    entry = {"signature": sig, "label": describe(sig), "fixed_bytes": runner.fixed_bytes(), "cells": [],
             "skipped": []}
    for batch, length in cells:
        try:
            c = runner.measure(batch, length, warmup, repeats)
        except torch.OutOfMemoryError:
            entry["skipped"].append({"batch": batch, "length": length, "why": "out of memory"})
            for p in runner.params:
                p.grad = None
            gc.collect()
            torch.cuda.empty_cache()
            continue
        entry["cells"].append(c)
        if log:
            log(f"  {entry['label']}: {batch} x {length}: fwd {c['forward_s'] * 1e3:.3g} ms, "
                f"bwd {c['backward_s'] * 1e3:.3g} ms, saved {c['saved_bytes'] / c['tokens']:.0f} B/token")
    del runner
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return entry


def _optimizer_seconds(n_params: int, device: str, warmup: int, repeats: int) -> float:
    dev = torch.device(device)
    size = 1 << 22 if dev.type == "cuda" else 1 << 16
    params = [torch.nn.Parameter(torch.randn(min(size, n_params - i), device=dev))
              for i in range(0, n_params, size)]
    for p in params:
        p.grad = torch.randn_like(p)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW([{"params": params, "weight_decay": 0.1}], lr=1e-4, betas=(0.9, 0.95), **fused)
    times = []
    for i in range(warmup + repeats):
        _sync(dev)
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate_optimizer(device: str, *, warmup: int, repeats: int) -> dict:
    """Fixed seconds + seconds per parameter of gradient clipping and one AdamW step."""
    small, large = ((1 << 24), (1 << 26)) if torch.device(device).type == "cuda" else ((1 << 19), (1 << 21))
    t_small = _optimizer_seconds(small, device, warmup, repeats)
    t_large = _optimizer_seconds(large, device, warmup, repeats)
    per = max((t_large - t_small) / (large - small), 0.0)
    return {"fixed_s": max(t_small - per * small, 0.0), "seconds_per_param": per,
            "measured": [{"params": small, "seconds": t_small}, {"params": large, "seconds": t_large}]}


def calibrate(table: Table, sigs, device: str, *, lengths=None, tokens=None, warmup: int | None = None,
              repeats: int = 3, force: bool = False, log=None, on_part=None) -> dict:
    """Measure every signature of ``sigs`` that the table lacks at this grid (all with ``force``);
    also the optimizer when the table has none. ``on_part(table)`` runs after each measured part (to
    save progress). Returns {"measured": [...], "kept": [...]} labels."""
    grid = default_grid(device)
    lengths = tuple(lengths or grid["lengths"])
    tokens = tuple(tokens or grid["tokens"])
    cuda = torch.device(device).type == "cuda"
    warmup = (2 if cuda else 1) if warmup is None else warmup
    cells = grid_cells(lengths, tokens)
    if not cells:
        raise ValueError("empty grid: every length is above every token count")
    done = {"measured": [], "kept": []}
    if force or not table.data.get("optimizer"):
        if log:
            log("calibrating the optimizer step (gradient clipping + AdamW)")
        table.data["optimizer"] = calibrate_optimizer(device, warmup=warmup, repeats=repeats)
    for sig in sigs:
        key = signature_key(sig)
        old = table.parts.get(key)
        if old and not force and old.get("grid") == {"lengths": list(lengths), "tokens": list(tokens)}:
            done["kept"].append(describe(sig))
            continue
        if log:
            log(f"calibrating {describe(sig)} at {len(cells)} shapes")
        entry = calibrate_part(sig, device, cells, warmup=warmup, repeats=repeats, log=log)
        entry["grid"] = {"lengths": list(lengths), "tokens": list(tokens)}
        table.parts[key] = entry
        done["measured"].append(describe(sig))
        if on_part:
            on_part(table)
    return done
