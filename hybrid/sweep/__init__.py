"""Hybrid-ratio sweeps: train every variant of a sweep file (``hybrid.train``), evaluate it on RULER
(``hybrid.eval``), time it, report (``runner.run_sweep``, ``report.write_report``; the command is
``hybrid sweep``). Sweep files are parsed by ``hybrid.recipes.sweep``."""
