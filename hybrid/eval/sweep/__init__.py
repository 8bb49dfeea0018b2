"""Hybrid-ratio sweeps: train every variant of a sweep file, evaluate it on RULER, time it, report
(``runner.run_sweep``, ``report.write_report``; the command is ``hybrid sweep``)."""
