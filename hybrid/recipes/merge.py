"""Combining recipe layers: ``extends:`` inheritance and ``key=value`` overrides share one merge rule.

Rule (documented in docs/recipes.md):

- mappings merge key by key, recursively; anything else (numbers, strings, lists, null) replaces;
- ``layout`` has three forms (``pattern``; ``ratio`` + ``placement``/``recurrent``/``attention``;
  ``at`` + ``default``). Writing a key of one form removes the keys of the other forms, so a child
  recipe or an override ``layout.ratio=1:1`` switches a pattern recipe to a ratio layout;
- a block template whose ``kind`` changes keeps only the settings the new kind has.
"""

from __future__ import annotations

import copy

from hybrid.blocks.spec import BLOCK_KINDS
from hybrid.recipes.errors import Loc, RecipeError, key_str, parse_key
from hybrid.recipes.yamlio import Locs, parse_value

LAYOUT_FORMS = {
    "pattern": ("pattern",),
    "ratio": ("ratio", "placement", "recurrent", "attention"),
    "at": ("at", "default"),
}


def _drop_locs(locs: Locs, prefix: tuple) -> None:
    n = len(prefix)
    for k in [k for k in locs if k[:n] == prefix]:
        del locs[k]


def _copy_locs(dst: Locs, src: Locs, prefix: tuple) -> None:
    n = len(prefix)
    for k, v in src.items():
        if k[:n] == prefix:
            dst[k] = v


def _switch_layout_form(dst: dict, dlocs: Locs, incoming: dict, prefix: tuple) -> None:
    forms = [f for f in LAYOUT_FORMS if f in incoming]
    if not forms:
        return
    keep = {k for f in forms for k in LAYOUT_FORMS[f]}
    for form_keys in LAYOUT_FORMS.values():
        for k in form_keys:
            if k not in keep and k in dst:
                del dst[k]
                _drop_locs(dlocs, prefix + (k,))


def _switch_block_kind(dst: dict, dlocs: Locs, incoming: dict, prefix: tuple) -> None:
    new_kind = incoming.get("kind")
    if new_kind is None or new_kind == dst.get("kind") or new_kind not in BLOCK_KINDS:
        return
    allowed = set(BLOCK_KINDS[new_kind].field_names()) | {"kind"}
    for k in [k for k in dst if k not in allowed]:
        del dst[k]
        _drop_locs(dlocs, prefix + (k,))


def merge_into(dst: dict, dlocs: Locs, src: dict, slocs: Locs, prefix: tuple = ()) -> None:
    """Merge ``src`` (with its locations) into ``dst`` in place, following the module's rule."""
    if prefix == ("layout",):
        _switch_layout_form(dst, dlocs, src, prefix)
    if len(prefix) == 2 and prefix[0] == "blocks" and isinstance(src, dict):
        _switch_block_kind(dst, dlocs, src, prefix)
    for k, v in src.items():
        p = prefix + (k,)
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            if p in slocs:
                dlocs[p] = slocs[p]
            merge_into(dst[k], dlocs, v, slocs, p)
        else:
            dst[k] = copy.deepcopy(v)
            _drop_locs(dlocs, p)
            _copy_locs(dlocs, slocs, p)


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise RecipeError(Loc("", None, item), "", "an override must look like key.path=value, e.g. train.steps=100")
    key, _, value = item.partition("=")
    return key.strip(), value.strip()


def _normalise_overrides(overrides) -> list[tuple[str, object, str]]:
    """-> [(dotted key, value, text for messages)]; accepts a list of 'k=v' strings or a dict."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [(str(k), v, f"{k}={v}") for k, v in overrides.items()]
    if isinstance(overrides, str):
        overrides = [overrides]
    out = []
    for item in overrides:
        key, text = _split_override(str(item))
        out.append((key, parse_value(text, str(item)), str(item)))
    return out


def apply_overrides_with_locs(data: dict, locs: Locs, overrides, source: Loc | None = None) -> None:
    """Apply overrides in place. ``source`` (e.g. a sweep file's line) replaces the override text as
    the location that error messages point at."""
    for key, value, text in _normalise_overrides(overrides):
        where = source or Loc("", None, text)
        try:
            path = parse_key(key)
        except ValueError as e:
            raise RecipeError(where, key, str(e)) from None
        if any(isinstance(p, int) for p in path):
            _set_indexed(data, locs, path, value, where)
            continue
        nested: object = copy.deepcopy(value)
        vlocs: Locs = {}
        for i in range(len(path), 0, -1):
            nested = {path[i - 1]: nested}
            vlocs[path[:i]] = where
        if isinstance(value, dict):
            _mark_all(value, path, vlocs, where)
        _check_path_is_mapping(data, path, where, key)
        merge_into(data, locs, nested, vlocs)


def _mark_all(value, prefix: tuple, locs: Locs, where: Loc) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            locs[prefix + (k,)] = where
            _mark_all(v, prefix + (k,), locs, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            locs[prefix + (i,)] = where
            _mark_all(v, prefix + (i,), locs, where)


def _check_path_is_mapping(data: dict, path: tuple, where: Loc, key: str) -> None:
    node = data
    for i, p in enumerate(path[:-1]):
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
        if not isinstance(node, dict):
            raise RecipeError(where, key, f"cannot set a key inside {key_str(path[: i + 1])}, which is a "
                                          f"{type(node).__name__}, not a mapping")


def _set_indexed(data: dict, locs: Locs, path: tuple, value, where: Loc) -> None:
    node = data
    for i, p in enumerate(path[:-1]):
        nxt = node[p] if isinstance(node, (dict, list)) and _has(node, p) else None
        if nxt is None:
            raise RecipeError(where, key_str(path), f"{key_str(path[: i + 1])} does not exist")
        node = nxt
    last = path[-1]
    if not isinstance(node, (dict, list)) or (isinstance(node, list) and not _has(node, last)):
        raise RecipeError(where, key_str(path), "index out of range or not a list")
    node[last] = copy.deepcopy(value)
    _drop_locs(locs, path)
    locs[path] = where


def _has(node, p) -> bool:
    if isinstance(node, dict):
        return p in node
    return isinstance(p, int) and -len(node) <= p < len(node)


def apply_overrides(recipe_dict: dict, overrides) -> dict:
    """Return a copy of a recipe mapping with dotted-key overrides applied.

    ``overrides`` is a list of ``"key.path=value"`` strings (values typed as YAML: ``100`` is an int,
    ``3:1`` a string, ``null`` None) or a dict ``{"key.path": value}``. The layout-form and block-kind
    rules of :func:`merge_into` apply, so ``layout.ratio=1:1`` turns a pattern layout into a ratio one.
    """
    data = copy.deepcopy(recipe_dict)
    apply_overrides_with_locs(data, {}, overrides)
    return data
