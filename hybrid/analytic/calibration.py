"""Calibration tables: measured time and memory of each step part on one device, cached per software.

A table holds, for every part signature (hybrid.analytic.parts), cells measured at a grid of
sequence lengths T and tokens per step N = B * T: forward and backward seconds, the bytes the part
keeps for its backward, and its transient peaks. It is stored as JSON in the user's cache directory
(``$XDG_CACHE_HOME/hybrid`` or ``~/.cache/hybrid``), one file per key: device name, precision, torch,
triton and hybrid versions (the hybrid version includes a hash of the model and kernel sources), so
any change of those makes a new table and leaves the old one unused.

Predictions (``predict_step``) interpolate each part's cells at the wanted (T, N) and sum over the
parts of the model: totals are linear in N between grid points (fixed cost + per-token cost), per-token
values are linear in T (attention's per-token cost grows linearly with T, a recurrent layer's is
flat). docs/analytic.md describes the method.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from hybrid.analytic.parts import describe, model_parts, signature_key

FORMAT = 1


# --------------------------------------------------------------------------------------------------
# key and cache location


def code_hash() -> str:
    """Hash of the sources that run in a training step (blocks and operator kernels) and of the
    measurement itself."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    files = [root / "analytic" / "calibrate.py", root / "analytic" / "parts.py"]  # how parts are measured
    for sub in ("blocks", "kernels", "ops"):
        if (root / sub).is_dir():
            files += sorted((root / sub).rglob("*.py"))
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def device_name(device: str) -> str:
    import platform

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine() or "cpu"
    return f"{dev.type.upper()} {cpu} ({torch.get_num_threads()} threads)"


def software_key(device: str) -> dict:
    """What a table is valid for: device, precision and software versions."""
    from importlib import metadata

    import torch

    from hybrid import __version__

    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = "none"
    cuda = torch.device(device).type == "cuda"
    return {"format": FORMAT, "device": device_name(device), "precision": "bf16 autocast" if cuda else "fp32",
            "torch": torch.__version__, "triton": triton, "hybrid": f"{__version__}+{code_hash()}"}


def cache_dir(override: str | None = None) -> Path:
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybrid"


def table_path(key: dict, folder: Path) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", key["device"].lower()).strip("-")[:40]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"calibration-{slug}-{digest}.json"


# --------------------------------------------------------------------------------------------------
# interpolation


def _along(points: list[tuple[float, float]], x: float, per_unit_floor: bool) -> float:
    """Piecewise-linear y(x) through sorted ``points``; outside, the end segment's slope, clamped.

    With ``per_unit_floor`` (totals over N tokens) the slope outside is kept between 0 and y/x of the
    end point, i.e. between a constant total and a constant per-token value; otherwise (per-token
    values over T) the slope beyond the last point is kept >= 0 and below the first point the value is
    held constant."""
    pts = sorted(points)
    if len(pts) == 1:
        x0, y0 = pts[0]
        return y0 * x / x0 if per_unit_floor else y0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if x < pts[0][0]:
        (x0, y0), (x1, y1) = pts[0], pts[1]
        if not per_unit_floor:
            return y0
        slope = min(max((y1 - y0) / (x1 - x0), 0.0), y0 / x0 if x0 else 0.0)
        return y0 - slope * (x0 - x)
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    slope = max((y1 - y0) / (x1 - x0), 0.0)
    if per_unit_floor:
        slope = min(slope, y1 / x1 if x1 else 0.0)
    return y1 + slope * (x - x1)


def interpolate(cells: list[dict], length: int, tokens: int, field: str) -> float:
    """``field`` (a total over the step's tokens) at T = length and N = tokens, from measured cells."""
    by_t: dict[int, list[tuple[float, float]]] = {}
    for c in cells:
        by_t.setdefault(c["length"], []).append((float(c["tokens"]), float(c[field])))
    if not by_t:
        raise ValueError("no measured cells to interpolate")
    # total at N for each measured T, as a per-token value, then linear in T
    per_token = [(float(t), _along(pts, tokens, True) / tokens) for t, pts in by_t.items()]
    return _along(per_token, length, False) * tokens


# --------------------------------------------------------------------------------------------------
# the table


class Table:
    """A calibration table (``data`` as stored) with the predictions made from it."""

    def __init__(self, data: dict):
        self.data = data

    @property
    def key(self) -> dict:
        return self.data["key"]

    @property
    def parts(self) -> dict:
        return self.data["parts"]

    def has(self, sig: dict) -> bool:
        e = self.parts.get(signature_key(sig))
        return bool(e and e["cells"])

    def missing(self, sigs) -> list[dict]:
        out, seen = [], set()
        for s in sigs:
            k = signature_key(s)
            if k not in seen and not self.has(s):
                seen.add(k)
                out.append(s)
        return out

    def part_cost(self, sig: dict, batch: int, length: int) -> dict:
        e = self.parts[signature_key(sig)]
        cells, n = e["cells"], batch * length
        out = {f: max(interpolate(cells, length, n, f), 0.0)
               for f in ("forward_s", "backward_s", "saved_bytes", "fwd_extra_bytes", "bwd_extra_bytes")}
        out["saved_bytes"] += e.get("fixed_bytes", 0)  # the autocast weight copies, whatever the shape
        out["fwd_extra_bytes"] += e.get("fixed_bytes", 0)
        return out

    def optimizer_seconds(self, n_params: int) -> float | None:
        o = self.data.get("optimizer")
        if not o:
            return None
        return o["fixed_s"] + o["seconds_per_param"] * n_params

    def predict_step(self, cfg: dict, batch: int, length: int, *, optimizer: bool = False,
                     param_count: int | None = None) -> dict:
        """Predicted time and peak memory of one training step of model ``cfg`` at ``batch x length``.

        Time: forward + backward of every part (+ the optimizer step when ``optimizer``). Peak: fp32
        weights and gradients (+ AdamW's two fp32 moments when ``optimizer``), then the largest of,
        along the step, the saved activations of the parts run so far plus the running part's
        transient (its forward, or its backward, which runs with everything up to it still saved)."""
        sigs = model_parts(cfg)
        miss = self.missing(sigs)
        if miss:
            raise KeyError("not calibrated: " + "; ".join(describe(s) for s in miss))
        if param_count is None:
            from hybrid.blocks.params import count_params

            param_count = count_params(cfg)["total"]
        fwd = bwd = 0.0
        saved = 0.0
        peak_act = 0.0
        by_label: dict[str, dict] = {}
        for s in sigs:
            c = self.part_cost(s, batch, length)
            fwd += c["forward_s"]
            bwd += c["backward_s"]
            peak_act = max(peak_act, saved + c["fwd_extra_bytes"], saved + c["saved_bytes"] + c["bwd_extra_bytes"])
            saved += c["saved_bytes"]
            row = by_label.setdefault(describe(s), {"part": describe(s), "count": 0, "seconds": 0.0,
                                                     "saved_bytes": 0.0})
            row["count"] += 1
            row["seconds"] += c["forward_s"] + c["backward_s"]
            row["saved_bytes"] += c["saved_bytes"]
        opt = self.optimizer_seconds(param_count) if optimizer else None
        static = 4 * param_count * (2 + (2 if optimizer else 0))
        return {"seconds": fwd + bwd + (opt or 0.0), "forward_s": fwd, "backward_s": bwd, "optimizer_s": opt,
                "peak_bytes": static + peak_act, "static_bytes": static, "saved_bytes": saved,
                "parts": list(by_label.values()), "device": self.key["device"]}


def load_table(key: dict, folder: Path) -> Table | None:
    """The cached table for ``key`` or None (missing, unreadable, or written for another key)."""
    path = table_path(key, folder)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    return Table(data)


def save_table(table: Table, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = table_path(table.key, folder)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.data, indent=1))
    os.replace(tmp, path)
    return path


def empty_table(key: dict) -> Table:
    return Table({"key": key, "parts": {}, "optimizer": None})


def hint(recipe_path: str | None, device: str, folder: Path) -> str:
    """The one line that says how to make a calibration for this device."""
    where = f" --cache-dir {folder}" if folder != cache_dir() else ""
    target = recipe_path or "RECIPE"
    return (f"no calibration for this recipe on this device and software: run `hybrid calibrate {target} "
            f"--device {device}{where}` once for a calibrated step time and peak")


def lookup(cfg: dict, device: str, folder: Path):
    """(table, None) when every part of ``cfg`` is calibrated for ``device``, else (None, reason)."""
    table = load_table(software_key(device), folder)
    if table is None:
        return None, "no table"
    miss = table.missing(model_parts(cfg))
    if miss:
        return None, "missing parts: " + "; ".join(describe(s) for s in miss)
    return table, None
