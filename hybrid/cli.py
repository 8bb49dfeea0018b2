"""The ``hybrid`` command. Each subcommand lives in ``hybrid/commands/<name>.py`` and defines
``NAME``, ``HELP``, ``DESCRIPTION`` (optional), ``add_arguments(parser)`` and ``main(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import hybrid.commands as commands_pkg

EPILOG = """typical session:
  hybrid demo                          run the operator on random input, check it against the reference
  hybrid build recipes/carve-3to1.yaml  build a model, print predicted vs measured costs
  hybrid calibrate recipes/carve-3to1.yaml  time its parts on this device, for calibrated predictions
  hybrid train recipes/tiny-cpu.yaml    train it
  hybrid ruler runs/tiny-cpu            evaluate on RULER tasks (also a runs/tiny-cpu/checkpoints/step_N)
  hybrid export runs/tiny-cpu/checkpoints/step_000100 --out runs/tiny-100   a from_pretrained folder
  hybrid sweep recipes/sweep-ratios.yaml  compare hybrid ratios end to end
run 'hybrid COMMAND --help' for each command's options."""


def _load_commands():
    mods = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"hybrid.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "main"):
            mods.append(mod)
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="hybrid",
        description="Compose hybrid recurrent/attention language models from YAML recipes, build them with "
        "analytic cost predictions next to measured costs, train them, and compare hybrid ratios on RULER.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from hybrid import __version__

    parser.add_argument("--version", action="version", version=f"hybrid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = {}
    for mod in _load_commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        table[mod.NAME] = mod
    return parser, table


def expected_failure(e: BaseException) -> str | None:
    """The one-line message of a failure the user caused (bad input, file system, device, checkpoint),
    or None when ``e`` is a bug. Error types of this package that derive from ``ValueError`` (recipe,
    block spec, RULER and data-file errors) are expected; a bare ``ValueError`` is not."""
    from hybrid.errors import HybridError, os_error_message

    if isinstance(e, HybridError):
        return str(e)
    if isinstance(e, UnicodeDecodeError):
        return f"{e.reason} at byte {e.start}; the file must be UTF-8 text"
    if isinstance(e, OSError):
        return os_error_message(e)
    if isinstance(e, ValueError) and type(e).__module__.startswith("hybrid."):
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    parser, table = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(table[args.command].main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place where failures become messages
        msg = expected_failure(e)
        if msg is None:
            import traceback

            traceback.print_exc()
            print(f"error: this is a bug in hybrid ({type(e).__name__} above); please report it with the "
                  "command line and the traceback", file=sys.stderr)
            return 1
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
