"""The parsed ``train:`` section of a recipe as a ``TrainConfig`` (with its ``DataConfig``).

The keys, their defaults and their checks are the recipe's (``hybrid.recipes.train_section``);
``TrainConfig.from_dict(d, path="train")`` parses a section with them and raises
``hybrid.schema.SpecError(path, message)`` with a near-miss suggestion on a typo. No torch import,
so that reading a recipe stays cheap.

Batch semantics: ``batch_size`` is the number of sequences of ``seq_len`` tokens in one micro-batch
on one device. One optimizer step sees ``batch_size * grad_accum * world_size`` sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybrid.recipes.train_section import DATA_FIELDS, TRAIN_FIELDS, parse_data, parse_train


@dataclass
class DataConfig:
    """Where training sequences come from: ``kind`` (assoc_recall | ruler_mix | text) and the settings
    of that kind (see ``hybrid.recipes.train_section.DATA_FIELDS``); the others keep their defaults."""

    kind: str
    # text
    files: list[str] | None
    val_fraction: float
    # text + ruler_mix
    tokenizer: str | None
    # ruler_mix
    tasks: list[str] | None
    loss_on: str
    doc_len_warmup: int
    followups: int
    weights: dict[str, float] | None
    pack: bool
    # assoc_recall
    num_kv_pairs: int
    vocab_size: int | None
    power_a: float
    random_non_queries: bool

    @classmethod
    def from_dict(cls, d: Any, path: str = "train.data") -> DataConfig:
        parsed = parse_data(d, path)
        values = {f.name: f.default for fields_ in DATA_FIELDS.values() for f in fields_}
        values.update(parsed)
        return cls(**values)

    def keys(self) -> list[str]:
        return ["kind", *(f.name for f in DATA_FIELDS[self.kind])]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.keys()}


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float
    grad_accum: int
    eval_every: int
    eval_batches: int
    save_every: int
    keep_checkpoints: int
    seed: int
    compile: bool
    dtype: str
    log_every: int
    heartbeat_every: int
    decay_embeddings: bool
    data_workers: int | None
    parallel: str
    checkpoint_blocks: list[str]
    data: DataConfig

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in TRAIN_FIELDS]

    @classmethod
    def from_dict(cls, d: dict | None, path: str = "train") -> TrainConfig:
        parsed = parse_train(d, path)
        parsed["betas"] = tuple(parsed["betas"])
        parsed["checkpoint_blocks"] = list(parsed["checkpoint_blocks"])
        parsed["data"] = DataConfig.from_dict(parsed["data"], f"{path}.data" if path else "data")
        return cls(**parsed)

    # keys a --resume may change without --allow-changes: they decide how long the run goes and what
    # it reports, never the numbers of a step
    CHANGEABLE = ("steps", "eval_every", "eval_batches", "save_every", "keep_checkpoints", "log_every",
                  "heartbeat_every", "data_workers", "compile", "checkpoint_blocks")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.keys() if k != "data"}
        d["betas"] = list(self.betas)
        d["checkpoint_blocks"] = list(self.checkpoint_blocks)
        d["data"] = self.data.to_dict()
        return d

