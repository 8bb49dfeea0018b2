"""Evaluation: RULER-format long-context tasks (``hybrid.eval.ruler``), the ``eval:`` recipe section
(``hybrid.eval.config``), hybrid-ratio sweeps (``hybrid.eval.sweep``) and lm-evaluation-harness glue."""
