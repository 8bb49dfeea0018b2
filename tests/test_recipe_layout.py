"""Property tests of the layout expansion (hypothesis) and the documented rounding rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid.recipes import recipe_from_dict
from hybrid.recipes.layout import PLACEMENTS, attention_count, from_positions, parse_ratio, place, tile

layers = st.integers(min_value=1, max_value=96)
parts = st.integers(min_value=0, max_value=16)


@given(n=layers, r=parts, a=parts, placement=st.sampled_from(PLACEMENTS))
@settings(max_examples=400, deadline=None)
def test_every_layer_assigned_and_count_matches(n, r, a, placement):
    if r == 0 and a == 0:
        return
    k = attention_count(n, r, a)
    assert 0 <= k <= n
    flags = place(n, k, placement)
    assert len(flags) == n
    assert sum(flags) == k


@given(periods=st.integers(1, 12), r=parts, a=parts)
@settings(max_examples=300, deadline=None)
def test_ratio_exact_when_divisible(periods, r, a):
    if r + a == 0:
        return
    n = periods * (r + a)
    k = attention_count(n, r, a)
    assert k == periods * a
    assert (n - k) == periods * r


@given(n=layers, r=parts, a=parts)
@settings(max_examples=400, deadline=None)
def test_rounding_rule_documented(n, r, a):
    if r + a == 0:
        return
    k = attention_count(n, r, a)
    exact = n * a / (r + a)
    if r > 0 and a > 0 and n >= 2:
        assert 1 <= k <= n - 1  # a non-zero part never disappears
        unclamped = int(exact + 0.5)
        assert k == min(max(unclamped, 1), n - 1)
    else:
        assert abs(k - exact) <= 0.5  # round half up
        assert k == int(exact + 0.5)


@given(n=layers, k=st.integers(0, 96), placement=st.sampled_from(PLACEMENTS))
@settings(max_examples=300, deadline=None)
def test_placement_deterministic(n, k, placement):
    k = min(k, n)
    assert place(n, k, placement) == place(n, k, placement)


@given(n=layers, k=st.integers(1, 96))
@settings(max_examples=400, deadline=None)
def test_spread_is_even(n, k):
    k = min(k, n)
    pos = [i for i, f in enumerate(place(n, k, "spread")) if f]
    assert pos[-1] == n - 1  # each period ends with attention
    gaps = [pos[0] + 1] + [b - a for a, b in zip(pos, pos[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert set(gaps) <= {n // k, -(-n // k)}


@given(n=layers, k=st.integers(0, 96))
@settings(max_examples=200, deadline=None)
def test_start_end_middle_are_contiguous(n, k):
    k = min(k, n)
    for placement in ("start", "end", "middle"):
        pos = [i for i, f in enumerate(place(n, k, placement)) if f]
        assert pos == list(range(pos[0], pos[0] + k)) if k else pos == []
    if k:
        assert place(n, k, "start")[0] and place(n, k, "end")[-1]
        mid = [i for i, f in enumerate(place(n, k, "middle")) if f]
        assert abs(mid[0] - (n - 1 - mid[-1])) <= 1  # centred


@given(tokens=st.lists(st.sampled_from("CAW"), min_size=1, max_size=8), n=layers)
@settings(max_examples=200, deadline=None)
def test_tile(tokens, n):
    out = tile(tokens, n)
    assert len(out) == n
    assert all(out[i] == tokens[i % len(tokens)] for i in range(n))


@given(n=st.integers(2, 64), data=st.data())
@settings(max_examples=200, deadline=None)
def test_explicit_positions(n, data):
    chosen = data.draw(st.sets(st.integers(0, n - 1), max_size=n))
    negative = data.draw(st.booleans())
    pos = [p - n if negative else p for p in sorted(chosen)]
    out = from_positions({"A": pos}, "C", n)
    assert len(out) == n
    assert [i for i, x in enumerate(out) if x == "A"] == sorted(chosen)


def test_parse_ratio():
    assert parse_ratio("3:1") == (3, 1)
    assert parse_ratio(" 7 : 1 ") == (7, 1)
    for bad in ("0:0", "3-1", "a:b", "1:2:3", ""):
        with pytest.raises(ValueError):
            parse_ratio(bad)


def _recipe(layout, n_layers=8):
    return recipe_from_dict({
        "model": {"d_model": 64, "n_layers": n_layers, "vocab_size": 128},
        "blocks": {"C": {"kind": "carve", "heads": 2, "head_dim": 32},
                   "A": {"kind": "attention", "heads": 2, "head_dim": 32}},
        "layout": layout,
    })


@given(n=st.integers(1, 40), r=parts, a=parts, placement=st.sampled_from(PLACEMENTS))
@settings(max_examples=150, deadline=None)
def test_recipe_ratio_layout_matches_pure_functions(n, r, a, placement):
    if r + a == 0:
        return
    rec = _recipe({"ratio": f"{r}:{a}", "placement": placement}, n)
    flags = place(n, attention_count(n, r, a), placement)
    assert rec.layer_names == ["A" if f else "C" for f in flags]
    assert [b["kind"] for b in rec.layers] == ["attention" if f else "carve" for f in flags]


def test_three_forms_agree():
    a = _recipe({"pattern": "CCCA"}).layer_names
    b = _recipe({"ratio": "3:1", "placement": "spread"}).layer_names
    c = _recipe({"at": {"A": [3, 7]}, "default": "C"}).layer_names
    d = _recipe({"at": {"A": [-5, -1]}}).layer_names  # default inferred: the only other template
    assert a == b == c == d == list("CCCACCCA")
