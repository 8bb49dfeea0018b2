"""RULER-format tasks (NVIDIA, arXiv 2404.06654), written for this project: the task generators that
training mixtures (``hybrid.train.ruler_source``) and evaluation (``hybrid.eval.ruler``) both draw from.

``TASKS`` (name -> task), ``GROUPS``, ``resolve_tasks(names)``, and
``make_sample(task, max_tokens, tokenizer, rng) -> Sample``. Seed ranges are in ``seeds``. See docs/ruler.md."""

from .base import Sample
from .errors import RulerError
from .registry import GROUPS, OFFLINE, TASKS, get_task, is_ruler_like, make_sample, resolve_tasks

__all__ = ["GROUPS", "OFFLINE", "TASKS", "RulerError", "Sample", "get_task", "is_ruler_like", "make_sample",
           "resolve_tasks"]
