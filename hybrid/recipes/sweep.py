"""Sweeps: one file that varies keys of a base recipe; the cartesian product of the values.

```yaml
name: sweep-ratios
sweep:
  base: carve-3to1.yaml            # relative to this file
  set: {train.steps: 300}          # optional: applied to every variant
  vary:
    layout.ratio: ["1:0", "7:1", "3:1", "1:1", "0:1"]
    train.lr: [1.0e-3, 3.0e-3]     # 5 x 2 = 10 variants
  name: "{name}-r{layout.ratio}-lr{train.lr}"   # optional; default joins every varied key
  seeds: [0, 1, 2]                 # optional: train every variant once per seed (train.seed + s)
```
"""

from __future__ import annotations

import copy
import itertools
import os
import re

from hybrid.recipes.errors import Where, parse_key
from hybrid.recipes.layout import near
from hybrid.recipes.load import Recipe, read_tree, validate
from hybrid.recipes.merge import apply_overrides_with_locs
from hybrid.recipes.yamlio import display_path, read_yaml

SWEEP_TOP = ("name", "description", "sweep")
SWEEP_KEYS = ("base", "set", "vary", "name", "seeds")


def slug(value) -> str:
    """A file-name-safe rendering of a value: '3:1' -> '3to1', 0.001 -> '0.001', None -> 'null'."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = text.replace(":", "to").replace("/", "over")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _variant_name(template: str | None, sweep_name: str, combo: dict) -> str:
    if template is None:
        parts = [f"{k.split('.')[-1]}{slug(v)}" for k, v in combo.items()]
        return "-".join([sweep_name] + parts)
    out = template.replace("{name}", sweep_name)
    for k, v in combo.items():
        out = out.replace("{" + k + "}", slug(v))
    return out


def parse_seeds(value, what: str = "seeds") -> list[int]:
    """Training seeds: a list of distinct integers >= 0 (``[0, 1, 2]``), or a count ``N`` meaning
    ``0..N-1``. Raises ``ValueError`` with a message naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ValueError(f"{what}: expected a list of seeds like [0, 1, 2] or a count, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{what}: a count of seeds must be >= 1, got {value}")
        return list(range(value))
    seeds = list(value)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"{what}: expected a non-empty list of integers >= 0, got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{what}: seeds repeat in {value!r}")
    return seeds


def sweep_seeds(path: str) -> list[int] | None:
    """The ``sweep.seeds`` of a sweep file (a list of training seeds), or None when it has none."""
    data, locs = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("sweep"), dict) or "seeds" not in data["sweep"]:
        return None
    try:
        return parse_seeds(data["sweep"]["seeds"], "sweep.seeds")
    except ValueError as e:
        raise Where(display_path(path), locs).error(("sweep", "seeds"), str(e)) from None


def is_sweep_file(path: str) -> bool:
    data, _ = read_yaml(path)
    return isinstance(data, dict) and "sweep" in data


def load_sweep(path: str, overrides=None) -> list[Recipe]:
    """Every variant of a sweep file as a validated :class:`Recipe` (named, with ``.variant`` set).

    A plain recipe file gives a one-element list. ``overrides`` apply to every variant, last.
    """
    data, locs = read_yaml(path)
    shown = display_path(path)
    where = Where(shown, locs)
    if not isinstance(data, dict) or "sweep" not in data:
        from hybrid.recipes.load import load_recipe

        return [load_recipe(path, overrides)]
    for k in data:
        if k not in SWEEP_TOP:
            raise where.error((k,), f"unknown key in a sweep file; allowed: {', '.join(SWEEP_TOP)}"
                                    f"{near(k, SWEEP_TOP)} (put recipe settings in the base recipe or sweep.set)")
    sweep = data["sweep"]
    if not isinstance(sweep, dict):
        raise where.error(("sweep",), "expected a mapping with base and vary")
    for k in sweep:
        if k not in SWEEP_KEYS:
            raise where.error(("sweep", k), f"unknown key; allowed: {', '.join(SWEEP_KEYS)}{near(k, SWEEP_KEYS)}")
    base = sweep.get("base")
    if not isinstance(base, str):
        raise where.error(("sweep", "base"), "required: the path of the base recipe, relative to this file")
    base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    if not os.path.isfile(base_path):
        raise where.error(("sweep", "base"), f"base recipe {base!r} not found (looked for {display_path(base_path)})")
    vary = sweep.get("vary")
    if not isinstance(vary, dict) or not vary:
        raise where.error(("sweep", "vary"), "required: a mapping of dotted key -> list of values, "
                                             "e.g. layout.ratio: ['7:1', '3:1']")
    for k, values in vary.items():
        try:
            parse_key(k)
        except ValueError as e:
            raise where.error(("sweep", "vary", k), str(e)) from None
        if not isinstance(values, list) or not values:
            raise where.error(("sweep", "vary", k), f"expected a non-empty list of values, got {values!r}")
    fixed = sweep.get("set") or {}
    if not isinstance(fixed, dict):
        raise where.error(("sweep", "set"), "expected a mapping of dotted key -> value")
    template = sweep.get("name")
    if template is not None and not isinstance(template, str):
        raise where.error(("sweep", "name"), "expected a name template string like '{name}-{layout.ratio}'")
    sweep_name = data.get("name") or os.path.splitext(os.path.basename(path))[0]

    base_data, base_locs = read_tree(base_path)
    keys = list(vary)
    out: list[Recipe] = []
    seen: dict[str, dict] = {}
    for idx in itertools.product(*(range(len(vary[k])) for k in keys)):
        combo = {k: vary[k][i] for k, i in zip(keys, idx)}
        d = copy.deepcopy(base_data)
        dl = dict(base_locs)
        for k, v in fixed.items():
            apply_overrides_with_locs(d, dl, {k: v}, source=where.loc(("sweep", "set", k)))
        for k, i in zip(keys, idx):
            apply_overrides_with_locs(d, dl, {k: vary[k][i]}, source=where.loc(("sweep", "vary", k, i)))
        apply_overrides_with_locs(d, dl, overrides)
        name = _variant_name(template, sweep_name, combo)
        if name in seen:
            raise where.error(("sweep", "name"), f"two variants get the name {name!r} ({seen[name]} and {combo}); "
                                                 "use a name template that includes every varied key")
        seen[name] = combo
        d["name"] = name
        r = validate(d, dl, base_path)
        r.variant = combo
        out.append(r)
    return out
