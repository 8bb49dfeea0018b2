"""Evaluation: running RULER on a trained model (``hybrid.eval.ruler``; the tasks themselves are in
``hybrid.tasks``), the parsed ``eval:`` recipe section (``hybrid.eval.config``) and lm-evaluation-harness glue."""
