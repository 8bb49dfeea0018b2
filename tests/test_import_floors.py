"""Data flows one way: every module of ``hybrid`` imports only from its own floor or the floors below.

The floor order (bottom first) is defined here, once. A package's floor is that of its first name
under ``hybrid`` (``hybrid.train.loop`` is on the ``train`` floor). Imports inside functions count
too: a lazy import that climbs is still a climb.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hybrid"

FLOORS: list[tuple[str, ...]] = [
    ("__init__", "schema", "errors", "device"),  # the package itself, the settings schema, error types
    ("kernels", "ops", "tasks"),  # operators (Triton kernels and their references), RULER task generators
    ("blocks",),  # block kinds, layers, the transformers model
    ("recipes",),  # recipe text -> a validated Recipe (layout, train and eval sections)
    ("analytic",),  # predicted costs of a recipe
    ("train",),  # training loop, data sources, checkpoints
    ("eval",),  # RULER runs on trained models, lm-eval glue
    ("sweep",),  # train + evaluate + report the variants of a sweep
    ("commands",),  # one module per `hybrid` subcommand
    ("cli", "__main__"),  # the `hybrid` entry point
]
FLOOR_OF = {name: i for i, names in enumerate(FLOORS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(module: str) -> int:
    """The floor of a dotted module name under ``hybrid``."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in FLOOR_OF:
        raise KeyError(f"{module}: '{top}' is on no floor; add it to FLOORS in {Path(__file__).name}")
    return FLOOR_OF[top]


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of a ``hybrid`` module in ``source``, a module of
    the dotted ``package``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "hybrid" or n.startswith("hybrid.")]
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    mod = module_name(path)
    return imports_in(path.read_text(encoding="utf-8"), mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0])


FILES = sorted(ROOT.rglob("*.py"))


def test_every_package_is_on_a_floor():
    for path in FILES:
        floor(module_name(path))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT.parent)) for p in FILES])
def test_no_import_climbs_a_floor(path):
    mod = module_name(path)
    here = floor(mod)
    climbs = [f"{path.relative_to(ROOT.parent)}:{line} imports {name} (floor {floor(name)} "
              f"'{FLOORS[floor(name)][0]}' is above floor {here} '{FLOORS[here][0]}')"
              for line, name in imports_of(path) if floor(name) > here]
    assert not climbs, "\n".join(climbs)


def test_the_check_sees_a_climb():
    """Lazy and relative imports from a block module up to training and evaluation are found."""
    source = "def f():\n    from hybrid.train.loop import run_training\n    from ..eval import config\n"
    names = [n for _, n in imports_in(source, "hybrid.blocks")]
    assert names == ["hybrid.train.loop", "hybrid.eval"]
    assert all(floor(n) > floor("hybrid.blocks.probe") for n in names)


def test_block_mixers_live_on_the_blocks_floor():
    from hybrid.blocks.spec import BLOCK_KINDS

    for kind in BLOCK_KINDS.values():
        assert (ROOT / "blocks" / f"{kind.mixer.rsplit('.', 1)[0]}.py").is_file(), kind.name
