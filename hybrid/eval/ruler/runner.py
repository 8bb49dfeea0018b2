"""Run RULER on a model: make the samples, generate greedily in left-padded batches through the
model's ``generate()`` (hybrid cache), score, and collect per-task, per-length results."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hybrid.tasks.base import Sample
from hybrid.tasks.errors import RulerError, TooShort
from hybrid.tasks.registry import get_task, is_ruler_like, make_sample
from hybrid.tasks.seeds import eval_rng
from hybrid.tasks.shape import cell_shape
from hybrid.tasks.tokens import model_ids

from .intervals import wilson
from .scoring import postprocess, score_one


@dataclass
class RulerRun:
    tasks: list[str]
    lengths: list[int]
    samples: int
    seed: int
    haystack: str | None
    scores: dict[str, dict[int, float]] = field(default_factory=dict)
    # teacher-forced accuracy on the canonical answer's word/number tokens (percent), a graded signal
    # next to the all-or-nothing RULER score
    answer_token_acc: dict[str, dict[int, float]] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    gen_tokens: int = 0
    gen_seconds: float = 0.0
    prompt_tokens: int = 0
    held_out: list[str] = field(default_factory=list)  # tasks never trained on (reported apart)
    # per (task, length): every sample's score in [0, 1] (for bootstrap intervals)
    sample_scores: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    # per (task, length): the haystack size in the task's units ({"unit", "median", "min", "thin"})
    shape: dict[str, dict[int, dict]] = field(default_factory=dict)
    # per (task, length) that does not fit the length: why
    skipped: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def trained_tasks(self) -> list[str]:
        return [t for t in self.tasks if t not in self.held_out]

    def mean_tasks(self, length: int, held_out: bool = False) -> list[str]:
        """The tasks behind the mean at ``length``: those scored there (trained ones, or held-out ones)."""
        pool = self.held_out if held_out else self.trained_tasks
        return [t for t in pool if t in self.tasks and length in self.scores.get(t, {})]

    def mean(self, length: int, held_out: bool = False) -> float:
        vals = [self.scores[t][length] for t in self.mean_tasks(length, held_out)]
        return sum(vals) / len(vals) if vals else float("nan")

    @property
    def ruler_like(self) -> list[str]:
        return [t for t in self.tasks if is_ruler_like(t)]

    def to_dict(self) -> dict:
        from hybrid.tasks.haystack import essay_label

        return {
            "tasks": self.tasks, "lengths": self.lengths, "samples": self.samples, "seed": self.seed,
            "haystack": essay_label(self.haystack), "ruler_like_tasks": self.ruler_like,
            "metric": {t: get_task(t).metric for t in self.tasks},
            "scores": {t: {str(n): v for n, v in self.scores.get(t, {}).items()} for t in self.tasks},
            # the unweighted mean of the trained-format task scores at one length (not RULER's 13-task
            # average); held-out tasks have their own mean
            "mean": {str(n): self.mean(n) for n in self.lengths},
            "mean_of_tasks": {str(n): len(self.mean_tasks(n)) for n in self.lengths},
            "held_out": list(self.held_out),
            "held_out_mean": {str(n): self.mean(n, True) for n in self.lengths} if self.held_out else {},
            # 95% Wilson intervals [lo, hi] (x100) over the samples of a cell (x tasks for the mean)
            "intervals95": {"scores": {t: {str(n): list(wilson(v, self.samples)) for n, v in self.scores.get(t, {}).items()}
                                       for t in self.tasks},
                            "mean": {str(n): list(wilson(self.mean(n), self.samples * len(self.mean_tasks(n))))
                                     for n in self.lengths if self.mean_tasks(n)}},
            "sample_scores": {t: {str(n): v for n, v in c.items()} for t, c in self.sample_scores.items()},
            "shape": {t: {str(n): v for n, v in c.items()} for t, c in self.shape.items()},
            "skipped": {t: {str(n): v for n, v in c.items()} for t, c in self.skipped.items()},
            "answer_token_acc": {t: {str(n): v for n, v in self.answer_token_acc.get(t, {}).items()}
                                 for t in self.tasks},
            "decode": {"generated_tokens": self.gen_tokens, "seconds": self.gen_seconds,
                       "prompt_tokens": self.prompt_tokens,
                       "ms_per_generated_token": 1000 * self.gen_seconds / max(self.gen_tokens, 1)},
        }


def make_samples(tasks: list[str], lengths: list[int], n: int, tokenizer, *, seed: int = 0,
                 haystack: str | None = None, data: dict | None = None,
                 skipped: dict | None = None) -> dict[tuple[str, int], list[Sample]]:
    """Sample ``i`` of (task, length) uses seed ``eval_seed(task, length, i, seed)``.

    With a ``skipped`` dict, a (task, length) that does not fit the length is left out and its reason
    recorded there (``skipped[task][length]``); without one, it raises ``TooShort``."""
    data = data or {}
    out = {}
    # encoding the prompts (several times each, to fit the length) is most of the work, and the tokenizer
    # releases the GIL while it encodes: the samples of a cell are made on a few threads
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for t in tasks:
            for length in lengths:
                src = data.get(t)

                def one(i, t=t, length=length, src=src):
                    return make_sample(t, length, tokenizer, eval_rng(t, length, i, seed), haystack=haystack,
                                       data=src)

                try:
                    # the first in this thread: a length the task does not fit fails once, and the tokenizer
                    # has set itself up before threads share it
                    first = [one(0)] if n > 0 else []
                    out[(t, length)] = first + list(pool.map(one, range(1, n)))
                except TooShort as e:
                    if skipped is None:
                        raise
                    skipped.setdefault(t, {})[length] = str(e)
    return out


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
             completions: list[str] | None = None) -> tuple[list[str], int, list[tuple[int, int]] | None]:
    """Greedy continuations of token-id prompts, batched with left padding. Returns (texts, tokens made,
    answer tokens right): the last is ``answer_tokens_right`` of ``completions``, counted from the same
    prefill where the model can (ours on CUDA), else None (the caller runs ``answer_tokens_right``).

    Our models decode through ``greedy_new_tokens`` (on CUDA the captured static-cache step in a loop that
    reads back to the host every few tokens); any other model, or ours on a CPU, through ``generate``."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    device = next(model.parameters()).device
    fast = getattr(model, "greedy_new_tokens", None)  # ours: the captured static-cache loop on CUDA
    comp = None if completions is None else _completion_ids(tokenizer, completions)
    tf = None
    with torch.inference_mode():
        new = None
        if fast is not None:
            forced = None
            if comp is not None:
                forced = torch.full((len(comp), max(1, max(len(c) for c in comp))), pad, dtype=torch.long)
                for i, c in enumerate(comp):
                    forced[i, :len(c)] = torch.tensor(c, dtype=torch.long)
                forced = forced.to(device)
            new = fast(ids.to(device), mask.to(device), max_new_tokens=max_new_tokens, eos_token_id=eos,
                       pad_token_id=pad, forced=forced)
            if new is not None and forced is not None:
                new, pred = new
                tf = _tally(tokenizer, comp, pred.cpu().tolist())
        if new is None:
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
            new = out[:, width:]
    new = new.tolist()
    texts, made = [], 0
    for row in new:
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        made += len(row)
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts, made, tf


def _completion_ids(tokenizer, completions: list[str]) -> list[list[int]]:
    return [tokenizer.encode(c, add_special_tokens=False) for c in completions]


def _tally(tokenizer, comp: list[list[int]], pred: list[list[int]]) -> list[tuple[int, int]]:
    """(right, counted) per row: of the completion's content tokens (those with a letter or digit), how
    many ``pred[i][j]`` (the prediction of completion token j of row i) gets exactly."""
    out = []
    for c, p in zip(comp, pred):
        right = counted = 0
        for j, t in enumerate(c):
            if not any(ch.isalnum() for ch in tokenizer.decode([t])):
                continue
            counted += 1
            right += int(p[j]) == t
        out.append((right, counted))
    return out


def _takes(model, name: str) -> bool:
    import inspect

    forward = getattr(model, "forward", None)
    try:
        return name in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def answer_tokens_right(model, tokenizer, prompts: list[list[int]], completions: list[str]) -> list[tuple[int, int]]:
    """Teacher forcing: feed ``prompt + completion`` and count, per row, how many of the completion's
    content tokens (those with a letter or digit) the model predicts exactly, as (right, counted).

    Rows are right-padded, which a causal model never sees before its own tokens, so no mask is needed; the
    logits are computed only from the shortest prompt's last token on, not over the whole prompt."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    comp = _completion_ids(tokenizer, completions)
    rows = [p + c for p, c in zip(prompts, comp)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    # only the logits that predict a completion token: the last ``keep`` positions of the widest row (a
    # model whose forward takes no ``logits_to_keep`` computes them all)
    keep = width - min(len(p) for p in prompts) + 1
    kwargs = {"logits_to_keep": keep} if _takes(model, "logits_to_keep") else {}
    device = next(model.parameters()).device
    with torch.inference_mode():
        pred = model(input_ids=ids.to(device), **kwargs).logits[:, -keep:].argmax(-1).cpu()
    # column len(p) - 1 - (width - keep) of row i predicts its first completion token
    return _tally(tokenizer, comp, [pred[i, len(p) - 1 - (width - keep):].tolist() for i, p in enumerate(prompts)])


def evaluate(model, tokenizer, tasks: list[str], lengths: list[int], n: int, *, batch_size: int = 8,
             seed: int = 0, haystack: str | None = None, data: dict | None = None, progress: bool = True,
             label: str = "RULER", held_out: list[str] | tuple = (), on_skip=None) -> RulerRun:
    """Generate and score ``n`` samples of every task at every length.

    A (task, length) whose template does not fit the length is skipped (``run.skipped``, and
    ``on_skip(message)`` is called for it); when no cell fits at all, ``RulerError`` is raised."""
    from tqdm.auto import tqdm

    tasks = list(tasks) + [t for t in held_out if t not in tasks]
    for t in tasks:
        get_task(t)
    run = RulerRun(list(tasks), list(lengths), n, seed, haystack, held_out=list(held_out))
    samples = make_samples(tasks, lengths, n, tokenizer, seed=seed, haystack=haystack, data=data,
                           skipped=run.skipped)
    for t, cells in run.skipped.items():
        for length, why in cells.items():
            if on_skip is not None:
                on_skip(f"skipped {t} at {length} tokens: it does not fit ({why.split(': ', 1)[-1]})")
    if not samples:
        raise RulerError("no task fits any of the lengths: " + "; ".join(
            why for cells in run.skipped.values() for why in cells.values()))
    total = sum(len(v) for v in samples.values())
    bar = tqdm(total=total, desc=label, unit="sample", disable=not progress, dynamic_ncols=True)
    try:
        for (t, length), group in samples.items():
            scores = []
            tf_right = tf_counted = 0
            order = sorted(range(len(group)), key=lambda i: -group[i].prompt_tokens)
            for b in range(0, len(order), batch_size):
                idx = order[b: b + batch_size]
                prompts = [model_ids(tokenizer, group[i].prompt) for i in idx]
                t0 = time.perf_counter()
                completions = [group[i].completion for i in idx]
                texts, made, tf = generate(model, tokenizer, prompts, group[idx[0]].gen_tokens, completions)
                run.gen_seconds += time.perf_counter() - t0
                run.gen_tokens += made
                run.prompt_tokens += sum(len(p) for p in prompts)
                if tf is None:  # a model that cannot teacher-force from its prefill: a forward of its own
                    tf = answer_tokens_right(model, tokenizer, prompts, completions)
                for i, text, (right, counted) in zip(idx, texts, tf):
                    s = group[i]
                    v = score_one(get_task(t).metric, text, s.answers)
                    scores.append(v)
                    tf_right, tf_counted = tf_right + right, tf_counted + counted
                    run.predictions.append({"task": t, "length": length, "index": i, "seed": s.seed,
                                            "answers": s.answers, "prediction": postprocess(text),
                                            "score": v, "prompt_tokens": s.prompt_tokens,
                                            "answer_tokens_right": right, "answer_tokens": counted})
                bar.update(len(idx))
                bar.set_postfix_str(f"{t}@{length}")
            run.scores.setdefault(t, {})[length] = 100.0 * sum(scores) / len(scores)
            run.sample_scores.setdefault(t, {})[length] = [scores[order.index(i)] for i in range(len(group))]
            run.shape.setdefault(t, {})[length] = cell_shape(t, [s.meta for s in group])
            if tf_counted:
                run.answer_token_acc.setdefault(t, {})[length] = 100.0 * tf_right / tf_counted
    finally:
        bar.close()
    return run
