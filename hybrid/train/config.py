"""The ``train:`` section of a recipe, validated into a ``TrainConfig``.

``TrainConfig.from_dict(d, path="train")`` checks every key and value and raises
``hybrid.blocks.spec.SpecError(path, message)`` with a near-miss suggestion on a typo. The recipe
language calls it to validate recipes; ``hybrid train`` calls it after applying overrides.

Batch semantics: ``batch_size`` is the number of sequences of ``seq_len`` tokens in one micro-batch
on one device. One optimizer step sees ``batch_size * grad_accum * world_size`` sequences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hybrid.blocks.spec import SpecError, suggest

DATA_KINDS = ("assoc_recall", "ruler_mix", "text")
DTYPES = ("auto", "bf16", "fp32")
LOSS_ON = ("answer", "all")


def _p(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(v: Any, path: str, minimum: int | None = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(path, f"expected an integer, got {type(v).__name__} {v!r}")
    if minimum is not None and v < minimum:
        raise SpecError(path, f"must be >= {minimum}, got {v}")
    return v


def _float(v: Any, path: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    if isinstance(v, str):  # YAML reads "3e-4" (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            raise SpecError(path, f"expected a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(path, f"expected a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if v != v:
        raise SpecError(path, "must not be NaN")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SpecError(path, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise SpecError(path, f"must be <= {hi}, got {v}")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(path, f"expected true or false, got {v!r}")
    return v


def _choice(v: Any, path: str, choices: tuple) -> str:
    if v not in choices:
        raise SpecError(path, f"must be one of {', '.join(choices)}; got {v!r}{suggest(v, choices)}")
    return v


def _str_list(v: Any, path: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise SpecError(path, f"expected a string or a list of strings, got {v!r}")
    return list(v)


def _check_keys(d: dict, allowed: list[str], path: str, what: str) -> None:
    for key in d:
        if key not in allowed:
            raise SpecError(_p(path, str(key)),
                            f"unknown key for {what}; allowed: {', '.join(allowed)}{suggest(key, allowed)}")


@dataclass
class DataConfig:
    """Where training sequences come from.

    kind = assoc_recall: multi-query associative recall (MQAR) token sequences, fresh random draws
        every step. Settings: num_kv_pairs, vocab_size (null: the model's vocabulary), power_a,
        random_non_queries.
    kind = ruler_mix: RULER-format task samples (hybrid.eval.ruler) rendered as text with the
        tokenizer, packed into rows. Settings: tasks (null: every task), tokenizer, loss_on,
        doc_len_warmup (steps over which the longest document grows from the shortest template to
        seq_len; 0 = off), followups (extra RULER questions per document about other facts of its
        context, answered; 0 = off).
    kind = text: local .txt / .jsonl ("text" field) files, tokenized and packed with document
        boundaries. Settings: files (null: the corpus shipped with the package), tokenizer,
        val_fraction.
    """

    kind: str = "text"
    # text
    files: list[str] | None = None
    val_fraction: float = 0.02
    # text + ruler_mix
    tokenizer: str | None = None
    # ruler_mix
    tasks: list[str] | None = None
    loss_on: str = "answer"
    doc_len_warmup: int = 0
    followups: int = 0
    # assoc_recall
    num_kv_pairs: int = 8
    vocab_size: int | None = None
    power_a: float = 0.01
    random_non_queries: bool = True

    KEYS_BY_KIND = {
        "assoc_recall": ["kind", "num_kv_pairs", "vocab_size", "power_a", "random_non_queries"],
        "ruler_mix": ["kind", "tasks", "tokenizer", "loss_on", "doc_len_warmup", "followups"],
        "text": ["kind", "files", "tokenizer", "val_fraction"],
    }

    @classmethod
    def from_dict(cls, d: Any, path: str = "train.data") -> DataConfig:
        if d is None:
            return cls()
        if isinstance(d, str):
            d = {"kind": d}
        if not isinstance(d, dict):
            raise SpecError(path, f"expected a mapping with a 'kind' ({', '.join(DATA_KINDS)}), got {d!r}")
        kind = _choice(d.get("kind", "text"), _p(path, "kind"), DATA_KINDS)
        for key in d:
            owners = [k for k, keys in cls.KEYS_BY_KIND.items() if key in keys and k != kind]
            if key not in cls.KEYS_BY_KIND[kind] and owners and key != "kind":
                msg = (f"'{key}' is a setting of data kind {' / '.join(owners)}, not of '{kind}'; "
                       f"allowed: {', '.join(cls.KEYS_BY_KIND[kind])}")
                raise SpecError(_p(path, str(key)), msg)
        everything = sorted({k for keys in cls.KEYS_BY_KIND.values() for k in keys})
        for key in d:
            if key not in everything:
                raise SpecError(_p(path, str(key)), f"unknown key for data kind '{kind}'; allowed: "
                                f"{', '.join(cls.KEYS_BY_KIND[kind])}{suggest(key, everything)}")
        out = cls(kind=kind)
        for key, v in d.items():
            kp = _p(path, key)
            if key == "kind":
                continue
            if key == "files":
                out.files = None if v is None else _str_list(v, kp)
                if out.files is not None and not out.files:
                    raise SpecError(kp, "empty list; give at least one file or glob, "
                                        "or null for the shipped corpus")
            elif key == "val_fraction":
                out.val_fraction = _float(v, kp, 0.0, 0.5)
            elif key == "tokenizer":
                if v is not None and not isinstance(v, str):
                    raise SpecError(kp, f"expected a path or 'default', got {v!r}")
                out.tokenizer = v
            elif key == "tasks":
                out.tasks = None if v is None else _str_list(v, kp)
            elif key == "loss_on":
                out.loss_on = _choice(v, kp, LOSS_ON)
            elif key == "doc_len_warmup":
                out.doc_len_warmup = _int(v, kp, 0)
            elif key == "followups":
                out.followups = _int(v, kp, 0)
            elif key == "num_kv_pairs":
                out.num_kv_pairs = _int(v, kp, 1)
            elif key == "vocab_size":
                out.vocab_size = None if v is None else _int(v, kp, 8)
            elif key == "power_a":
                out.power_a = _float(v, kp, 0.0, 1.0, lo_open=True)
            elif key == "random_non_queries":
                out.random_non_queries = _bool(v, kp)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in self.KEYS_BY_KIND[self.kind]}


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8
    seq_len: int = 512
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 200
    eval_batches: int = 4
    save_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    compile: bool = False
    dtype: str = "auto"
    log_every: int = 10
    heartbeat_every: int = 100
    decay_embeddings: bool = False
    data_workers: int | None = None
    data: DataConfig = field(default_factory=DataConfig)

    DOCS = {
        "steps": "optimizer steps",
        "batch_size": "sequences per micro-batch per device",
        "seq_len": "tokens per sequence",
        "lr": "peak learning rate (AdamW)",
        "min_lr_ratio": "cosine floor as a fraction of lr",
        "warmup_steps": "linear warmup steps",
        "weight_decay": "AdamW decay on matrices (never on biases, norms, A_log, dt_bias)",
        "betas": "AdamW betas [b1, b2]",
        "grad_clip": "max global grad norm; 0 disables clipping",
        "grad_accum": "micro-batches per optimizer step",
        "eval_every": "steps between held-out evaluations; 0 = only at the end",
        "eval_batches": "micro-batches per evaluation",
        "save_every": "steps between checkpoints; 0 = only at the end",
        "keep_checkpoints": "newest checkpoints kept in OUT/checkpoints (older ones are removed)",
        "seed": "base seed (model init, data streams)",
        "compile": "wrap the model in torch.compile",
        "dtype": "auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32",
        "log_every": "steps between metric lines in metrics.jsonl",
        "heartbeat_every": "steps between one-line progress reports when no bar is drawn; 0 = none",
        "decay_embeddings": "apply weight decay to token embeddings / tied head too",
        "data_workers": "processes generating batches ahead; null = auto (RULER mixture on GPU only)",
        "data": "data source mapping: kind = assoc_recall | ruler_mix | text",
    }

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.DOCS)

    @classmethod
    def from_dict(cls, d: dict | None, path: str = "train") -> TrainConfig:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise SpecError(path, f"expected a mapping of training settings, got {type(d).__name__}")
        d = dict(d)
        if "autocast" in d:  # accepted spelling: autocast: bf16 / fp32 / auto
            if "dtype" in d:
                raise SpecError(_p(path, "autocast"), "give either dtype or autocast, not both")
            d["dtype"] = d.pop("autocast")
        allowed = cls.keys()
        _check_keys(d, allowed, path, "the train section")
        out = cls()
        for key, v in d.items():
            kp = _p(path, key)
            if key in ("steps", "batch_size", "seq_len", "grad_accum", "log_every", "keep_checkpoints"):
                setattr(out, key, _int(v, kp, 1))
            elif key in ("warmup_steps", "eval_every", "eval_batches", "save_every", "seed", "heartbeat_every"):
                setattr(out, key, _int(v, kp, 0))
            elif key == "lr":
                out.lr = _float(v, kp, 0.0, lo_open=True)
            elif key == "min_lr_ratio":
                out.min_lr_ratio = _float(v, kp, 0.0, 1.0)
            elif key == "weight_decay":
                out.weight_decay = _float(v, kp, 0.0)
            elif key == "grad_clip":
                out.grad_clip = _float(v, kp, 0.0)
            elif key == "betas":
                if not isinstance(v, (list, tuple)) or len(v) != 2:
                    raise SpecError(kp, f"expected two numbers [beta1, beta2], got {v!r}")
                out.betas = (_float(v[0], kp + "[0]", 0.0, 1.0), _float(v[1], kp + "[1]", 0.0, 1.0))
            elif key in ("compile", "decay_embeddings"):
                setattr(out, key, _bool(v, kp))
            elif key == "data_workers":
                out.data_workers = None if v is None else _int(v, kp, 0)
            elif key == "dtype":
                out.dtype = _choice(v, kp, DTYPES)
            elif key == "data":
                out.data = DataConfig.from_dict(v, kp)
        if out.seq_len < 8:
            raise SpecError(_p(path, "seq_len"), f"must be >= 8, got {out.seq_len}")
        return out

    # keys a --resume may change without --allow-changes: they decide how long the run goes and what
    # it reports, never the numbers of a step
    CHANGEABLE = ("steps", "eval_every", "eval_batches", "save_every", "keep_checkpoints", "log_every",
                  "heartbeat_every", "data_workers", "compile")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.keys() if k != "data"}
        d["betas"] = list(self.betas)
        d["data"] = self.data.to_dict()
        return d
