"""Reading a recipe file: ``extends:`` resolution, overrides, strict validation, one canonical Recipe.

Nothing here builds a model: a recipe is validated completely (every key, every block template,
the layout, the train/eval sections) before anyone allocates a tensor.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from hybrid.blocks.spec import MODEL_FIELDS, normalize_block, normalize_model
from hybrid.recipes.errors import Loc, RecipeError, Where, key_str, parse_key
from hybrid.recipes.eval_section import check_held_out, parse_eval
from hybrid.recipes.layout import expand_layout, near
from hybrid.recipes.merge import apply_overrides_with_locs, merge_into
from hybrid.recipes.train_section import parse_train
from hybrid.recipes.yamlio import Locs, display_path, read_yaml
from hybrid.schema import SpecError

TOP_KEYS = ("name", "description", "extends", "model", "blocks", "layout", "train", "eval")

BLOCK_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass
class Recipe:
    """A validated recipe in canonical form. ``layers`` holds one normalised block dict per layer."""

    name: str
    path: str
    model: dict
    blocks: dict
    layer_names: list[str]
    layers: list[dict]
    train: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    description: str = ""
    source: dict = field(default_factory=dict)  # the merged mapping (extends resolved, overrides applied)
    variant: dict = field(default_factory=dict)  # for sweep members: {dotted key: value} of this variant

    @property
    def letters(self) -> str:
        """The layout as one string: ``CCCACCCA`` for one-letter names, else space-separated names."""
        if all(len(n) == 1 for n in self.layer_names):
            return "".join(self.layer_names)
        return " ".join(self.layer_names)

    @property
    def layer_types(self) -> list[str]:
        """One block kind per layer (like Hugging Face's ``layer_types``)."""
        return [b["kind"] for b in self.layers]

    def model_config_kwargs(self) -> dict:
        """Keyword arguments for ``hybrid.blocks.HybridConfig``."""
        m = self.model
        return {
            "vocab_size": m["vocab_size"],
            "d_model": m["d_model"],
            "layers": copy.deepcopy(self.layers),
            "mlp": dict(m["mlp"]),
            "norm_eps": m["norm_eps"],
            "tie_embeddings": m["tie_embeddings"],
            "max_position_embeddings": m["max_position_embeddings"],
        }

    def layout_text(self) -> str:
        """``C C C A ...`` plus a legend of the templates in use."""
        used = [n for n in self.blocks if n in self.layer_names]
        lines = [" ".join(self.layer_names), ""]
        width = max(len(n) for n in used)
        for n in used:
            b = self.blocks[n]
            count = self.layer_names.count(n)
            settings = ", ".join(f"{k}={v}" for k, v in b.items() if k != "kind")
            lines.append(f"  {n:<{width}}  x{count:<3} {b['kind']}: {settings}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The canonical expanded form (what a run directory should store)."""
        return {
            "name": self.name,
            "description": self.description,
            "model": copy.deepcopy(self.model),
            "blocks": copy.deepcopy(self.blocks),
            "layout": self.layer_names[:],
            "layers": copy.deepcopy(self.layers),
            "train": copy.deepcopy(self.train),
            "eval": copy.deepcopy(self.eval),
            "variant": copy.deepcopy(self.variant),
        }


# ----------------------------------------------------------------------------------------------------
# reading and inheritance


def read_tree(path: str, _stack: tuple = ()) -> tuple[dict, Locs]:
    """Read ``path`` and everything it ``extends`` into one mapping plus per-key locations."""
    real = os.path.realpath(path)
    if real in _stack:
        chain = " -> ".join(display_path(p) for p in _stack + (real,))
        raise RecipeError(Loc(display_path(path)), "extends", f"inheritance cycle: {chain}")
    data, locs = read_yaml(path)
    shown = display_path(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(Loc(shown, 1), "", f"a recipe must be a mapping of sections "
                                             f"({', '.join(TOP_KEYS)}), got {type(data).__name__}")
    if "sweep" in data and _stack:
        raise RecipeError(locs[("sweep",)], "sweep", "a recipe cannot extend a sweep file")
    bases = data.pop("extends", None)
    ext_loc = locs.pop(("extends",), None)
    if bases is None:
        return data, locs
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise RecipeError(ext_loc, "extends", f"expected a path (or a list of paths) to base recipes, got {bases!r}")
    merged: dict = {}
    mlocs: Locs = {}
    here = os.path.dirname(os.path.abspath(path))
    for i, base in enumerate(bases):
        bloc = locs.get(("extends", i), ext_loc)
        target = os.path.normpath(os.path.join(here, base))
        if not os.path.isfile(target):
            raise RecipeError(bloc, "extends", f"base recipe {base!r} not found (looked for {display_path(target)})"
                                               f"{_file_hint(target)}")
        bdata, blocs = read_tree(target, _stack + (real,))
        bdata.pop("name", None)  # a name is never inherited
        bdata.pop("description", None)
        for k in [k for k in blocs if k and k[0] in ("name", "description")]:
            del blocs[k]
        merge_into(merged, mlocs, bdata, blocs)
    for k in [k for k in locs if k and k[0] == "extends"]:
        del locs[k]
    merge_into(merged, mlocs, data, locs)
    return merged, mlocs


def _file_hint(target: str) -> str:
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        return ""
    names = [n for n in os.listdir(folder) if n.endswith((".yaml", ".yml"))]
    return near(os.path.basename(target), names)


# ----------------------------------------------------------------------------------------------------
# validation


def _spec_error(where: Where, e: SpecError) -> RecipeError:
    try:
        path = parse_key(e.path) if e.path else ()
    except ValueError:
        path = ()
    return where.error(path, e.message)


def _check_model(model, where: Where) -> dict:
    if model is None:
        required = [f.name for f in MODEL_FIELDS if f.required]
        raise where.error(("model",), f"missing; expected {', '.join(required)} (and optionally "
                                      + ", ".join(f.name for f in MODEL_FIELDS if not f.required) + ")")
    try:
        return normalize_model(model, "model")
    except SpecError as e:
        raise _spec_error(where, e) from None


KERNEL_CHUNK_SIZES = (16, 32, 64)


def _check_blocks(blocks, where: Where) -> dict:
    if blocks is None or blocks == {}:
        raise where.error(("blocks",), "missing; define block templates, e.g. C: {kind: carve, heads: 4}")
    if not isinstance(blocks, dict):
        raise where.error(("blocks",), f"expected a mapping of template name -> block settings, got "
                                       f"{type(blocks).__name__}")
    out = {}
    for name, b in blocks.items():
        if not name or not set(name) <= BLOCK_NAME_OK or not name[0].isalpha():
            raise where.error(("blocks", name), "a block template name must start with a letter and use only "
                                                "letters, digits, '_' or '-'")
        try:
            out[name] = normalize_block(b, f"blocks.{name}")
        except SpecError as e:
            raise _spec_error(where, e) from None
        chunk = out[name].get("chunk_size")
        if chunk is not None and chunk not in KERNEL_CHUNK_SIZES:
            raise where.error(("blocks", name, "chunk_size"), f"must be one of {', '.join(map(str, KERNEL_CHUNK_SIZES))} "
                              f"(the chunk sizes the GPU kernels run), got {chunk}")
    return out


SECTION_PARSERS = {"train": parse_train, "eval": parse_eval}


def _check_section(section: str, value, where: Where) -> dict:
    """train/eval: checked against their schemas; the recipe keeps the section as written."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error((section,), f"expected a mapping, got {type(value).__name__}")
    try:
        SECTION_PARSERS[section](value, section)
    except SpecError as e:
        raise _spec_error(where, e) from None
    return copy.deepcopy(value)


def validate(data: dict, locs: Locs, path: str) -> Recipe:
    shown = display_path(path)
    where = Where(shown, locs)
    if "sweep" in data:
        raise where.error(("sweep",), "this file is a sweep; load it with load_sweep (or 'hybrid sweep')")
    for k in data:
        if k not in TOP_KEYS:
            raise where.error((k,), f"unknown section; allowed: {', '.join(TOP_KEYS)}{near(k, TOP_KEYS)}")
    name = data.get("name")
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    if not isinstance(name, str) or not name.strip():
        raise where.error(("name",), f"expected a non-empty string, got {name!r}")
    desc = data.get("description", "") or ""
    if not isinstance(desc, str):
        raise where.error(("description",), f"expected a string, got {type(desc).__name__}")
    model = _check_model(data.get("model"), where)
    blocks = _check_blocks(data.get("blocks"), where)
    names = expand_layout(data.get("layout"), blocks, model["n_layers"], where)
    train = _check_section("train", data.get("train"), where)
    ev = _check_section("eval", data.get("eval"), where)
    try:
        check_held_out(parse_eval(ev)["held_out"] if ev else (), train.get("data"))
    except SpecError as e:
        raise _spec_error(where, e) from None
    return Recipe(
        name=name,
        path=shown,
        model=model,
        blocks=blocks,
        layer_names=names,
        layers=[copy.deepcopy(blocks[n]) for n in names],
        train=train,
        eval=ev,
        description=desc,
        source=copy.deepcopy(data),
    )


def load_recipe(path: str, overrides: dict | list[str] | None = None) -> Recipe:
    """Read, merge, override and validate a recipe file. Raises :class:`RecipeError` on any problem.

    ``overrides``: ``["train.steps=100", "layout.ratio=1:1"]`` or ``{"train.steps": 100}``.
    """
    data, locs = read_tree(path)
    apply_overrides_with_locs(data, locs, overrides)
    return validate(data, locs, path)


def recipe_from_dict(data: dict, path: str = "<dict>", overrides=None) -> Recipe:
    """Validate an in-memory recipe mapping (no ``extends``); errors carry key paths but no lines."""
    data = copy.deepcopy(data)
    if "extends" in data:
        raise RecipeError(Loc(path), "extends", "extends needs a file; use load_recipe")
    locs: Locs = {}
    apply_overrides_with_locs(data, locs, overrides)
    return validate(data, locs, path)


__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "read_tree", "validate", "key_str"]
