"""Shared by commands that take ``RECIPE [key=value ...]`` with options allowed anywhere after it."""

from __future__ import annotations

import argparse


def reparse_mixed(args, prog: str, add_options) -> None:
    """Options may follow the recipe and be mixed with overrides: argparse's REMAINDER keeps them in
    ``args.overrides``; pick them out again with ``add_options`` and leave only ``key=value`` items."""
    p = argparse.ArgumentParser(prog=prog, add_help=False)
    p.add_argument("overrides", nargs="*")
    add_options(p)
    defaults = {a.dest: a.default for a in p._actions if a.dest != "overrides"}
    rest = p.parse_intermixed_args(args.overrides or [])
    for dest, default in defaults.items():
        value = getattr(rest, dest)
        if value != default:
            setattr(args, dest, value)
    args.overrides = rest.overrides
