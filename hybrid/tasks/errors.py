"""The one error type of the RULER package: a bad task name, a length too short, a tokenizer that
cannot represent a task, or a checkpoint that cannot be evaluated."""

from __future__ import annotations


class RulerError(ValueError):
    """A RULER input problem, with a message meant for the user (no traceback needed)."""


class TooShort(RulerError):
    """A task does not fit the target length (its template with the smallest haystack is longer)."""
