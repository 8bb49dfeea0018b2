"""Subcommands of the ``hybrid`` CLI, discovered by hybrid.cli (one module per command)."""
