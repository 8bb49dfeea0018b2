"""The ``train:`` section of a recipe: its keys as ``Field``s and ``parse_train(d, path)``.

``parse_train`` returns a plain dict with every default filled in (``data`` included, holding only
the keys of its kind) or raises ``hybrid.schema.SpecError(path, message)``. ``hybrid.train.config``
turns the result into a ``TrainConfig``.

Batch semantics: ``batch_size`` is the number of sequences of ``seq_len`` tokens in one micro-batch
on one device. One optimizer step sees ``batch_size * grad_accum * world_size`` sequences.
"""

from __future__ import annotations

from typing import Any

from hybrid.schema import Field, SpecError, check_fields, check_value, join, str_list, suggest
from hybrid.tasks import OFFLINE, RulerError, resolve_tasks

DATA_KINDS = ("assoc_recall", "ruler_mix", "text")
DTYPES = ("auto", "bf16", "fp32")
PARALLEL = ("ddp", "fsdp")
LOSS_ON = ("answer", "all")


def _files(value: Any, path: str) -> list[str]:
    files = str_list(value, path)
    if not files:
        raise SpecError(path, "empty list; give at least one file or glob, or null for the shipped corpus")
    return files


def _path(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, f"expected a path or 'default', got {value!r}")
    return value


def _weights(value: Any, path: str) -> dict[str, float]:
    """``{task: weight}``: a non-negative number per task (the tasks are checked in ``parse_data``)."""
    if not isinstance(value, dict) or not value:
        raise SpecError(path, f"expected a mapping of task name -> weight, e.g. {{niah_single_1: 2, vt: 1}}, "
                              f"got {value!r}")
    out: dict[str, float] = {}
    for task, w in value.items():
        where = join(path, str(task))
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise SpecError(where, f"expected a number >= 0, got {w!r}")
        if not w >= 0:
            raise SpecError(where, f"a weight must be >= 0, got {w!r}")
        out[str(task)] = float(w)
    return out


def _check_ruler_mix(out: dict, path: str) -> None:
    """The listed tasks exist, and every weighted task is one of them."""
    try:
        tasks = resolve_tasks(out["tasks"]) if out["tasks"] else list(OFFLINE)
    except RulerError as e:
        raise SpecError(join(path, "tasks"), str(e)) from None
    for task in out["weights"] or {}:
        if task not in tasks:
            listed = "train.data.tasks" if out["tasks"] else "the offline tasks (train.data.tasks is null)"
            raise SpecError(join(join(path, "weights"), task), f"{task!r} is not one of {listed}: {', '.join(tasks)}"
                                                         f"{suggest(task, tasks)}")
    if out["weights"] and not any(out["weights"].get(t, 1.0) for t in tasks):
        raise SpecError(join(path, "weights"), "every task's weight is 0; give at least one a positive weight")


# kind = assoc_recall: multi-query associative recall (MQAR) token sequences, fresh random draws every step.
# kind = ruler_mix: RULER-format task samples (hybrid.tasks) rendered as text with the tokenizer, packed
#   into rows; doc_len_warmup: steps over which the longest document grows from the shortest template to
#   seq_len (0 = off); followups: extra questions per document about other facts of its context (0 = off);
#   weights: how often each task is drawn relative to the others (default 1 each).
# kind = text: local .txt / .jsonl ("text" field) files, tokenized and packed with document boundaries.
DATA_FIELDS: dict[str, tuple[Field, ...]] = {
    "assoc_recall": (
        Field("num_kv_pairs", int, 8, minimum=1, doc="key-value pairs per sequence"),
        Field("vocab_size", int, None, minimum=8, nullable=True, doc="token range; null = the model's vocabulary"),
        Field("power_a", float, 0.01, above=0.0, maximum=1.0, doc="power-law parameter of query positions"),
        Field("random_non_queries", bool, True, doc="fill non-query positions with random tokens"),
    ),
    "ruler_mix": (
        Field("tasks", list, None, nullable=True, parse=str_list, doc="RULER task names; null = every task"),
        Field("tokenizer", str, None, nullable=True, parse=_path, doc="tokenizer folder; null = the default"),
        Field("loss_on", str, "answer", choices=LOSS_ON, doc="answer tokens only, or every token"),
        Field("doc_len_warmup", int, 0, minimum=0, doc="steps of the document-length curriculum; 0 = off"),
        Field("followups", int, 0, minimum=0, doc="follow-up questions per document; 0 = off"),
        Field("pack", bool, True, doc="several documents per row; false = one document per row, then padding"),
        Field("weights", dict, None, nullable=True, parse=_weights,
              doc="mixture weight per task, {task: weight >= 0}; tasks left out get 1; null = equal"),
    ),
    "text": (
        Field("files", list, None, nullable=True, parse=_files, doc="files or globs; null = the shipped corpus"),
        Field("tokenizer", str, None, nullable=True, parse=_path, doc="tokenizer folder; null = the default"),
        Field("val_fraction", float, 0.02, minimum=0.0, maximum=0.5, doc="share of documents held out"),
    ),
}
DATA_KIND = Field("kind", str, "text", choices=DATA_KINDS, doc="where training sequences come from")


def parse_data(d: Any, path: str = "train.data") -> dict:
    """The ``train.data`` mapping (or a bare kind name) with the defaults of its kind filled in."""
    if d is None:
        d = {}
    if isinstance(d, str):
        d = {"kind": d}
    if not isinstance(d, dict):
        raise SpecError(path, f"expected a mapping with a 'kind' ({', '.join(DATA_KINDS)}), got {d!r}")
    kind = check_value(DATA_KIND, d.get("kind", DATA_KIND.default), join(path, "kind"))
    own = ["kind", *(f.name for f in DATA_FIELDS[kind])]
    for key in d:
        owners = [k for k, fields in DATA_FIELDS.items() if k != kind and key in {f.name for f in fields}]
        if key not in own and owners:
            raise SpecError(join(path, key), f"'{key}' is a setting of data kind {' / '.join(owners)}, not of "
                                             f"'{kind}'; allowed: {', '.join(own)}")
    everything = sorted({"kind", *(f.name for fields in DATA_FIELDS.values() for f in fields)})
    for key in d:
        if key not in own:
            raise SpecError(join(path, key), f"unknown key for data kind '{kind}'; allowed: {', '.join(own)}"
                                             f"{suggest(key, everything)}")
    out = {"kind": kind, **check_fields(DATA_FIELDS[kind], d, path, f"data kind '{kind}'", extra=("kind",))}
    if kind == "ruler_mix":
        _check_ruler_mix(out, path)
    return out


def _betas(value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(path, f"expected two numbers [beta1, beta2], got {value!r}")
    beta = Field("beta", float, minimum=0.0, maximum=1.0)
    return check_value(beta, value[0], path + "[0]"), check_value(beta, value[1], path + "[1]")


TRAIN_FIELDS: tuple[Field, ...] = (
    Field("steps", int, 1000, minimum=1, doc="optimizer steps"),
    Field("batch_size", int, 8, minimum=1, doc="sequences per micro-batch per device"),
    Field("seq_len", int, 512, minimum=8, doc="tokens per sequence"),
    Field("lr", float, 1e-3, above=0.0, doc="peak learning rate (AdamW)"),
    Field("min_lr_ratio", float, 0.1, minimum=0.0, maximum=1.0, doc="cosine floor as a fraction of lr"),
    Field("warmup_steps", int, 100, minimum=0, doc="linear warmup steps"),
    Field("weight_decay", float, 0.1, minimum=0.0,
          doc="AdamW decay on matrices (never on biases, norms, A_log, dt_bias)"),
    Field("betas", list, (0.9, 0.95), parse=_betas, doc="AdamW betas [b1, b2]"),
    Field("grad_clip", float, 1.0, minimum=0.0, doc="max global grad norm; 0 disables clipping"),
    Field("grad_accum", int, 1, minimum=1, doc="micro-batches per optimizer step"),
    Field("eval_every", int, 200, minimum=0, doc="steps between held-out evaluations; 0 = only at the end"),
    Field("eval_batches", int, 4, minimum=0, doc="micro-batches per evaluation"),
    Field("save_every", int, 500, minimum=0, doc="steps between checkpoints; 0 = only at the end"),
    Field("keep_checkpoints", int, 2, minimum=1,
          doc="newest checkpoints kept in OUT/checkpoints (older ones are removed)"),
    Field("seed", int, 0, minimum=0, doc="base seed (model init, data streams)"),
    Field("compile", bool, False, doc="wrap the model in torch.compile"),
    Field("dtype", str, "auto", choices=DTYPES, doc="auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32"),
    Field("log_every", int, 10, minimum=1, doc="steps between metric lines in metrics.jsonl"),
    Field("heartbeat_every", int, 100, minimum=0,
          doc="steps between one-line progress reports when no bar is drawn; 0 = none"),
    Field("decay_embeddings", bool, False, doc="apply weight decay to token embeddings / tied head too"),
    Field("data_workers", int, None, minimum=0, nullable=True,
          doc="processes generating batches ahead; null = auto (RULER mixture on GPU only)"),
    Field("parallel", str, "ddp", choices=PARALLEL,
          doc="several processes: ddp (replicated weights) or fsdp (FSDP2, parameters, gradients and "
              "optimizer state sharded per block; sharded checkpoints)"),
    Field("checkpoint_blocks", list, [], parse=str_list,
          doc="block kinds whose activations are recomputed in the backward pass (e.g. [carve, attention]); "
              "[] = none"),
    Field("data", dict, None, nullable=True, parse=parse_data,
          doc="data source mapping: kind = assoc_recall | ruler_mix | text"),
)


def parse_train(d: Any, path: str = "train") -> dict:
    """The ``train:`` section with every default filled in; ``autocast`` is accepted for ``dtype``."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise SpecError(path, f"expected a mapping of training settings, got {type(d).__name__}")
    d = dict(d)
    if "autocast" in d:  # accepted spelling: autocast: bf16 / fp32 / auto
        if "dtype" in d:
            raise SpecError(join(path, "autocast"), "give either dtype or autocast, not both")
        d["dtype"] = d.pop("autocast")
    out = check_fields(TRAIN_FIELDS, d, path, "the train section")
    if out["data"] is None:
        out["data"] = parse_data(None, join(path, "data"))
    return out
