"""YAML reading that remembers where every value came from.

``read_yaml(path)`` composes PyYAML's node graph (which carries line marks) and converts it to plain
Python data itself, recording a :class:`Loc` per key path. Differences from ``yaml.safe_load``,
all deliberate:

- mapping keys are always the key's text (``on:`` is the string ``"on"``, not ``True``);
- duplicate keys are an error (PyYAML silently keeps the last one);
- a plain scalar like ``3:1`` stays the string ``"3:1"`` (YAML 1.1 would read base-60 ``181``);
- anchors, aliases and ``<<`` merge keys work as usual.
"""

from __future__ import annotations

import os

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from hybrid.recipes.errors import Loc, RecipeError, key_str

_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

Locs = dict  # dict[tuple, Loc]: key path -> where its value was written


def display_path(path: str) -> str:
    """The path as users should see it: relative to the working directory when below it."""
    ap = os.path.abspath(path)
    rel = os.path.relpath(ap)
    return ap if rel.startswith("..") else rel


def read_yaml(path: str) -> tuple[object, Locs]:
    shown = display_path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise RecipeError(Loc(shown), "", "no such file") from None
    except IsADirectoryError:
        raise RecipeError(Loc(shown), "", "is a folder, not a recipe file") from None
    except OSError as e:
        raise RecipeError(Loc(shown), "", f"cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RecipeError(Loc(shown, line), "", f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the recipe "
                                                "as UTF-8") from None
    return parse_yaml(text, shown)


# errors whose problem is only found on a later line: the line to show is where the construct began
_STARTS_AT_CONTEXT = ("while scanning a simple key", "while parsing a flow", "while scanning a quoted scalar")


def parse_yaml(text: str, filename: str, override: str | None = None) -> tuple[object, Locs]:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        line = text[:e.position].count("\n") + 1
        raise RecipeError(Loc(filename, line, override), "",
                          f"character U+{e.character:04X} is not allowed in YAML (control characters and "
                          "NUL bytes); remove it") from None
    try:
        node = loader.get_single_node()
        locs: Locs = {}
        if node is None:
            return None, locs
        data = _convert(loader, node, (), locs, filename, override)
        return data, locs
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (e.context, e.problem) if x)
        ctx = e.context_mark
        if ctx and e.problem_mark and e.context and e.context.startswith(_STARTS_AT_CONTEXT) \
                and ctx.line != e.problem_mark.line:
            line = ctx.line + 1
            what += f" (noticed on line {e.problem_mark.line + 1})"
        raise RecipeError(Loc(filename, line, override), "", f"not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise RecipeError(Loc(filename, None, override), "", f"not valid YAML: {e}") from None
    finally:
        loader.dispose()


def _convert(loader, node, path: tuple, locs: Locs, filename: str, override: str | None):
    if isinstance(node, ScalarNode):
        if node.tag in _NUMBER_TAGS and node.style is None and ":" in node.value:
            return node.value  # "3:1" is a ratio, not a base-60 number
        return loader.construct_object(node, deep=True)
    if isinstance(node, SequenceNode):
        out = []
        for i, child in enumerate(node.value):
            locs[path + (i,)] = Loc(filename, child.start_mark.line + 1, override)
            out.append(_convert(loader, child, path + (i,), locs, filename, override))
        return out
    if isinstance(node, MappingNode):
        explicit: dict = {}
        for key_node, _ in node.value:  # duplicates among the keys written here are errors
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise RecipeError(Loc(filename, line, override), key_str(path),
                                  "mapping keys must be plain names, not lists or mappings")
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in explicit:
                raise RecipeError(Loc(filename, line, override), key_str(path + (key_node.value,)),
                                  f"duplicate key (first written on line {explicit[key_node.value]})")
            explicit[key_node.value] = line
        loader.flatten_mapping(node)  # resolves '<<' merge keys: merged entries first, written ones win
        out: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = key_node.value
            _drop_prefix(locs, path + (key,))
            locs[path + (key,)] = Loc(filename, line, override)
            out[key] = _convert(loader, value_node, path + (key,), locs, filename, override)
        return out
    raise RecipeError(Loc(filename, node.start_mark.line + 1, override), key_str(path),
                      f"unsupported YAML node {type(node).__name__}")


def _drop_prefix(locs: Locs, prefix: tuple) -> None:
    n = len(prefix)
    for k in [k for k in locs if k[:n] == prefix]:
        del locs[k]


def parse_value(text: str, override: str) -> object:
    """A command-line override value, typed as YAML types it (``100`` int, ``3:1`` str, ``null``)."""
    data, _ = parse_yaml(text, "<override>", override)
    return data
