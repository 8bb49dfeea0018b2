"""Training: ``hybrid train`` and ``run_training(recipe, out_dir, ...)`` for the sweep.

``hybrid.train.config`` (``TrainConfig``) has no torch import so recipe validation stays cheap;
the loop is imported on first use of ``run_training`` / ``TrainResult``.
"""

from __future__ import annotations

from hybrid.train.config import DataConfig, TrainConfig

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "run_training"]


def __getattr__(name):
    if name in ("run_training", "TrainResult"):
        from hybrid.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
