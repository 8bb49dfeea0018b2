"""The one way a settings mapping is checked: a tuple of ``Field``s, read by ``check_fields``.

Block templates, the model section, the ``train:`` and ``eval:`` sections of a recipe all describe
their keys as ``Field``s. ``check_fields(fields, d, path)`` returns a new dict with every default
filled in, or raises ``SpecError(path, message)`` naming the dotted key path, what was expected and,
for a typo, the nearest allowed key or value. The recipe reader turns a ``SpecError`` into
``file:line key.path: message``.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A bad setting. ``path`` is the dotted key path (e.g. ``blocks.C.heads``)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def suggest(word: Any, choices) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(frozen=True)
class Field:
    """One key of a settings mapping.

    ``type`` is int, float, bool, str, dict or list; a float also accepts an int and a numeric string
    (YAML 1.1 reads ``1e-6`` as a string). ``minimum``/``maximum`` are inclusive bounds, ``above`` an
    exclusive lower bound. ``parse(value, path)`` replaces the type check for values the plain types
    do not describe (a list of task names, a length such as ``2x``); it returns the parsed value or
    raises ``SpecError``. ``None`` is accepted when ``nullable`` or when the default is ``None``."""

    name: str
    type: type | tuple = object
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    nullable: bool = False
    doc: str = ""
    parse: Callable[[Any, str], Any] | None = None


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
               list: "a list"}


def type_name(t) -> str:
    return _TYPE_NAMES.get(t, getattr(t, "__name__", str(t)))


def check_value(f: Field, value: Any, path: str) -> Any:
    """``value`` checked against ``f`` (converted where the field allows it)."""
    if value is None:
        if f.nullable or (not f.required and f.default is None):
            return None
        raise SpecError(path, f"must not be null; expected {type_name(f.type)}")
    if f.parse is not None:
        value = f.parse(value, path)
    else:
        if f.type is float:
            value = _number(value, path)
        elif (f.type is not bool and isinstance(value, bool)) or not isinstance(value, f.type):
            doc = f" ({f.doc})" if f.doc else ""
            raise SpecError(path, f"expected {type_name(f.type)}{doc}, got {type(value).__name__} {value!r}")
    if f.choices is not None and value not in f.choices:
        raise SpecError(path, f"must be one of {', '.join(map(str, f.choices))}; got {value!r}"
                              f"{suggest(value, f.choices)}")
    if f.minimum is not None and value < f.minimum:
        raise SpecError(path, f"must be >= {f.minimum}, got {value}")
    if f.above is not None and not value > f.above:
        raise SpecError(path, f"must be > {f.above}, got {value}")
    if f.maximum is not None and value > f.maximum:
        raise SpecError(path, f"must be <= {f.maximum}, got {value}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SpecError(path, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if value != value:
        raise SpecError(path, "must not be NaN")
    return value


def check_keys(d: dict, names, path: str, what: str = "") -> None:
    """Raise on the first key of ``d`` not in ``names``, with the allowed keys and a near miss."""
    names = list(names)
    for key in d:
        if key not in names:
            owner = f" for {what}" if what else ""
            raise SpecError(join(path, key), f"unknown key{owner}; allowed: {', '.join(names)}{suggest(key, names)}")


def check_fields(fields: tuple[Field, ...], d: Any, path: str = "", what: str = "", *,
                 extra: tuple[str, ...] = ()) -> dict:
    """Check the mapping ``d`` against ``fields``; returns a new dict holding every field (defaults filled
    in) plus the keys named in ``extra``, which the caller checks itself. ``what`` names the mapping
    in messages ("the train section", "a 'carve' block")."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        owner = what or "this section"
        raise SpecError(path, f"expected a mapping for {owner}, got {type(d).__name__}")
    check_keys(d, [*extra, *(f.name for f in fields)], path, what)
    out = {k: d[k] for k in extra if k in d}
    for f in fields:
        if f.name in d:
            out[f.name] = check_value(f, d[f.name], join(path, f.name))
        elif f.required:
            owner = f" for {what}" if what else ""
            raise SpecError(join(path, f.name), f"required{owner} ({f.doc})")
        else:
            out[f.name] = copy.deepcopy(f.default)
    return out


def str_list(value: Any, path: str) -> list[str]:
    """A string or a list of strings, as a list."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise SpecError(path, f"expected a string or a list of strings, got {value!r}")
    return list(value)


__all__ = ["Field", "SpecError", "check_fields", "check_keys", "check_value", "join", "str_list", "suggest",
           "type_name"]
