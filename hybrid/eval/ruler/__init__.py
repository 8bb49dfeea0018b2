"""RULER (NVIDIA, arXiv 2404.06654) task generators and scoring, written for this project.

``TASKS`` (name -> task), ``make_sample(task, max_tokens, tokenizer, rng) -> Sample``, and the scores
``string_match_all`` / ``string_match_part``. See docs/ruler.md."""

from .base import Sample
from .errors import RulerError
from .tasks import GROUPS, OFFLINE, TASKS, get_task, is_ruler_like, make_sample, resolve_tasks

__all__ = ["GROUPS", "OFFLINE", "TASKS", "RulerError", "Sample", "get_task", "is_ruler_like", "make_sample",
           "resolve_tasks"]
