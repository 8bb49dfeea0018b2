"""Layout expansion: every layout form becomes one list of block-template names, one per layer.

The pure functions (``tile``, ``attention_count``, ``place``, ``from_positions``) know nothing about
files; ``expand_layout`` validates a recipe's ``layout:`` section and calls them.

Ratio rounding (``attention_count``): with ``ratio: "R:A"`` and L layers the number of attention
layers is ``round_half_up(L * A / (R + A))``; when both R and A are non-zero and L >= 2 it is then
clamped to [1, L - 1], so a non-zero part never disappears. When L is a multiple of R + A the ratio
is met exactly.

Placements of the attention layers:
- ``spread``: layer ``floor((i + 1) * L / n) - 1`` for i = 0..n-1, i.e. the last layer of each of n
  near-equal periods (``CCCA CCCA``, as Qwen3-Next and Kimi Linear end each period with attention);
- ``start`` / ``end``: the first / last n layers;
- ``middle``: one contiguous run starting at ``(L - n) // 2``.
"""

from __future__ import annotations

import re

from hybrid.blocks.spec import is_recurrent
from hybrid.recipes.errors import Where
from hybrid.schema import suggest

PLACEMENTS = ("spread", "start", "end", "middle")
RATIO_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def near(word: str, choices) -> str:
    """A ' (did you mean ...?)' hint, case-insensitive first (difflib misses 'c' vs 'C')."""
    for c in choices:
        if str(c).lower() == str(word).lower():
            return f" (did you mean '{c}'?)"
    return suggest(word, choices)


def tile(tokens: list[str], n_layers: int) -> list[str]:
    """Repeat ``tokens`` to ``n_layers`` entries; the last period is cut if L is not a multiple."""
    if not tokens:
        raise ValueError("empty pattern")
    return [tokens[i % len(tokens)] for i in range(n_layers)]


def parse_ratio(text: str) -> tuple[int, int]:
    m = RATIO_RE.match(str(text))
    if not m:
        raise ValueError(f"expected a ratio 'R:A' (recurrent:attention) such as '3:1', got {text!r}")
    r, a = int(m.group(1)), int(m.group(2))
    if r == 0 and a == 0:
        raise ValueError("ratio '0:0' has no layers; use e.g. '1:0' (all recurrent) or '0:1' (all attention)")
    return r, a


def attention_count(n_layers: int, r: int, a: int) -> int:
    """Number of attention layers for ratio R:A over ``n_layers`` (see the module docstring)."""
    total = r + a
    n = (2 * n_layers * a + total) // (2 * total)  # round half up, in integers
    if r > 0 and a > 0 and n_layers >= 2:
        n = min(max(n, 1), n_layers - 1)
    return n


def place(n_layers: int, n_attn: int, placement: str) -> list[bool]:
    """``is_attention`` per layer for ``n_attn`` attention layers placed by ``placement``."""
    if not 0 <= n_attn <= n_layers:
        raise ValueError(f"n_attn={n_attn} out of range for {n_layers} layers")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if placement == "start":
        pos = range(n_attn)
    elif placement == "end":
        pos = range(n_layers - n_attn, n_layers)
    elif placement == "middle":
        s = (n_layers - n_attn) // 2
        pos = range(s, s + n_attn)
    else:
        pos = [(i + 1) * n_layers // n_attn - 1 for i in range(n_attn)]
    out = [False] * n_layers
    for p in pos:
        out[p] = True
    return out


def from_positions(at: dict[str, list[int]], default: str | None, n_layers: int) -> list[str]:
    """Explicit positions (0-based, negative counts from the end); the rest get ``default``."""
    out: list[str | None] = [None] * n_layers
    for name, positions in at.items():
        for p in positions:
            if not -n_layers <= p < n_layers:
                raise ValueError(f"layer {p} of {name} is out of range for {n_layers} layers")
            q = p % n_layers
            if out[q] is not None:
                raise ValueError(f"layer {q} is given to both {out[q]} and {name}")
            out[q] = name
    if default is None and any(x is None for x in out):
        raise ValueError("some layers have no block and there is no default")
    return [x if x is not None else default for x in out]


def _names_list(blocks: dict) -> str:
    return ", ".join(blocks) if blocks else "(none)"


def _pattern_tokens(value, where: Where, blocks: dict) -> list[str]:
    key = ("layout", "pattern")
    if isinstance(value, list):
        tokens = [str(t) for t in value]
    elif isinstance(value, str):
        spaced = any(ch.isspace() for ch in value.strip())
        tokens = value.split() if spaced or value.strip() in blocks else list(value.strip())
    else:
        raise where.error(key, f"expected a string like 'CCCA' (or space-separated names), got "
                               f"{type(value).__name__} {value!r}")
    if not tokens:
        raise where.error(key, "empty pattern; expected block names such as 'CCCA'")
    for t in tokens:
        if t not in blocks:
            hint = near(t, blocks)
            if not hint and isinstance(value, str) and any(len(n) > 1 for n in blocks) and len(t) == 1:
                hint = " (names longer than one letter must be separated by spaces: 'carve carve attn')"
            raise where.error(key, f"unknown block {t!r}; defined blocks: {_names_list(blocks)}{hint}")
    return tokens


def _template(layout: dict, field: str, want_recurrent: bool, blocks: dict, where: Where) -> str:
    kind = "recurrent" if want_recurrent else "attention"
    if field in layout:
        name = layout[field]
        if name not in blocks:
            raise where.error(("layout", field), f"unknown block {name!r}; defined blocks: "
                                                 f"{_names_list(blocks)}{near(name, blocks)}")
        if is_recurrent(blocks[name]) != want_recurrent:
            raise where.error(("layout", field), f"block {name!r} is a '{blocks[name]['kind']}' block, "
                                                 f"not {'a recurrent' if want_recurrent else 'an attention'} one")
        return name
    cands = [n for n, b in blocks.items() if is_recurrent(b) == want_recurrent]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise where.error(("layout", "ratio"), f"the ratio asks for {kind} layers but no {kind} block is "
                                               f"defined; defined blocks: {_names_list(blocks)}")
    raise where.error(("layout",), f"several {kind} blocks are defined ({', '.join(cands)}); "
                                   f"say which with layout.{field}")


def _expand_ratio(layout: dict, blocks: dict, n_layers: int, where: Where) -> list[str]:
    try:
        r, a = parse_ratio(layout["ratio"])
    except ValueError as e:
        raise where.error(("layout", "ratio"), str(e)) from None
    placement = layout.get("placement", "spread")
    if placement not in PLACEMENTS:
        raise where.error(("layout", "placement"), f"expected one of {', '.join(PLACEMENTS)}, got "
                                                   f"{placement!r}{near(placement, PLACEMENTS)}")
    n_attn = attention_count(n_layers, r, a)
    rec = _template(layout, "recurrent", True, blocks, where) if n_attn < n_layers else None
    att = _template(layout, "attention", False, blocks, where) if n_attn > 0 else None
    for field, used in (("recurrent", rec), ("attention", att)):
        if field in layout and used is None:
            _template(layout, field, field == "recurrent", blocks, where)  # still check the name
    return [att if is_att else rec for is_att in place(n_layers, n_attn, placement)]


def _expand_at(layout: dict, blocks: dict, n_layers: int, where: Where) -> list[str]:
    at = layout["at"]
    if not isinstance(at, dict) or not at:
        raise where.error(("layout", "at"), "expected a mapping of block name -> list of layer indices, "
                                            "e.g. {A: [3, 7]}")
    clean: dict[str, list[int]] = {}
    for name, positions in at.items():
        key = ("layout", "at", name)
        if name not in blocks:
            raise where.error(key, f"unknown block {name!r}; defined blocks: {_names_list(blocks)}"
                                   f"{near(name, blocks)}")
        if isinstance(positions, int) and not isinstance(positions, bool):
            positions = [positions]
        if not isinstance(positions, list) or not positions:
            raise where.error(key, f"expected a list of 0-based layer indices, got {positions!r}")
        for i, p in enumerate(positions):
            if isinstance(p, bool) or not isinstance(p, int):
                raise where.error(key + (i,), f"expected an integer layer index, got {p!r}")
            if not -n_layers <= p < n_layers:
                raise where.error(key + (i,), f"layer {p} is out of range: the model has {n_layers} layers "
                                              f"(indices 0..{n_layers - 1}, or negative from the end)")
        clean[name] = positions
    seen: dict[int, str] = {}
    for name, positions in clean.items():
        for i, p in enumerate(positions):
            q = p % n_layers
            if q in seen:
                raise where.error(("layout", "at", name, i), f"layer {q} is already given to {seen[q]}")
            seen[q] = name
    default = layout.get("default")
    if default is not None and default not in blocks:
        raise where.error(("layout", "default"), f"unknown block {default!r}; defined blocks: "
                                                 f"{_names_list(blocks)}{near(default, blocks)}")
    if default is None and len(seen) < n_layers:
        rest = [n for n in blocks if n not in clean]
        if len(rest) != 1:
            raise where.error(("layout", "at"), f"{n_layers - len(seen)} layers have no block; add "
                                                f"layout.default (one of {_names_list(blocks)})")
        default = rest[0]
    return from_positions(clean, default, n_layers)


LAYOUT_KEYS = ("pattern", "ratio", "placement", "recurrent", "attention", "at", "default")


def expand_layout(layout, blocks: dict, n_layers: int, where: Where) -> list[str]:
    """Validate the ``layout:`` section and return one template name per layer."""
    if layout is None:
        raise where.error(("layout",), "missing; expected one of pattern: 'CCCA', ratio: '3:1' or "
                                       "at: {A: [3, 7]}")
    if not isinstance(layout, dict):
        raise where.error(("layout",), f"expected a mapping, got {type(layout).__name__}")
    for k in layout:
        if k not in LAYOUT_KEYS:
            raise where.error(("layout", k), f"unknown key; allowed: {', '.join(LAYOUT_KEYS)}"
                                             f"{near(k, LAYOUT_KEYS)}")
    forms = [f for f in ("pattern", "ratio", "at") if f in layout]
    if len(forms) != 1:
        what = "none" if not forms else " and ".join(forms)
        raise where.error(("layout",), f"give exactly one of pattern, ratio, at (got {what})")
    form = forms[0]
    allowed = {"pattern": {"pattern"}, "ratio": {"ratio", "placement", "recurrent", "attention"},
               "at": {"at", "default"}}[form]
    for k in layout:
        if k not in allowed:
            raise where.error(("layout", k), f"only applies to a {'ratio' if k in ('placement', 'recurrent', 'attention') else 'at'} "
                                             f"layout, but this layout uses {form}")
    if form == "pattern":
        tokens = _pattern_tokens(layout["pattern"], where, blocks)
        if len(tokens) > n_layers:
            raise where.error(("layout", "pattern"), f"the pattern has {len(tokens)} layers but model.n_layers "
                                                     f"is {n_layers}")
        return tile(tokens, n_layers)
    if form == "ratio":
        return _expand_ratio(layout, blocks, n_layers, where)
    return _expand_at(layout, blocks, n_layers, where)
