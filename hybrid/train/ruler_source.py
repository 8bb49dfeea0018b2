"""RULER-format training mixture: samples from ``hybrid.tasks`` rendered as text and packed.

A training document is ``<bos> prompt completion <eos>``, where ``prompt`` ends with the task's answer
prefix and ``completion`` is the canonical answer text (e.g. `` 1478007.``). With ``loss_on: answer``
(default) only the completion and ``<eos>`` tokens carry loss, which is what RULER scores; with
``loss_on: all`` every token after ``<bos>`` does.

Rows of ``seq_len`` tokens are filled greedily: pick a task among those that still fit (uniformly, or in
proportion to ``weights``, a ``{task: weight}`` mapping where unnamed tasks weigh 1),
draw a document length uniformly between the task's shortest document and the space left, generate,
repeat; the tail that no task fits is padding (its own segment, no loss). A RULER length counts the
task's generation budget (128 tokens for NIAH) next to the prompt, but a training document holds
only the completion (about 10 tokens), so the target handed to the generator is the space left plus
that difference: documents fill the row instead of leaving the unused budget as padding (NIAH
mixture at 512 tokens: 1.49 documents per row and 14% padding, against 1.20 and 38% before).

Length curriculum (``doc_len_warmup: N``, default 0 = off): during the first ``N`` training steps a
document's length is capped, the cap growing linearly from the longest task minimum (so every task
is drawn from the first step) to the full row. Early rows then hold several short documents, so
each step carries more answers and each needle sits among fewer tokens, which is the signal
retrieval has to be learned from. Held-out batches are never capped.

Packing (``pack: true``, default): a row holds as many documents as fit. With ``pack: false`` a row
holds one document and padding; such rows need no document boundary (the padding after the document
carries no target and cannot change it), so the batch runs as plain ``(B, T)`` rows, which the
recurrent layers process several times faster on a CPU than one long packed sequence.

Follow-up questions (``followups: N``, default 0 = off): after the answer, a training document asks
up to ``N`` more questions about other facts its context states (the other keys of niah_multikey_*,
the distractor needles of a needle haystack), each in RULER's own question and answer-prefix
templates and answered. Every document still starts as an exact RULER prompt; the follow-ups add
answers (retrieval targets) per token, which is what a model trained from scratch learns retrieval
from. A task with a single fact (niah_single_*) gets none.

Seeds: sample ``k`` of micro-batch ``micro`` of rank ``rank`` at step ``step`` uses
``hybrid.tasks.seeds.train_seed(seed, step, index)`` (range ``[0, 2**48)``), which is disjoint
from every RULER evaluation seed (``[2**48, 2**49)``). Held-out evaluation draws use negative step
numbers, so they never coincide with training draws.
"""

from __future__ import annotations

import numpy as np

from hybrid.tasks import OFFLINE, RulerError, get_task, make_sample, resolve_tasks
from hybrid.tasks.seeds import train_seed
from hybrid.train.batches import Batch, pack_rows, rng_for


def _min_length(task: str, tok, limit: int) -> int | None:
    """Smallest max_tokens (<= limit) at which ``task`` can build a sample, or None."""
    def ok(n: int) -> bool:
        try:
            make_sample(task, n, tok, 12345)
            return True
        except RulerError:
            return False

    if not ok(limit):
        return None
    lo, hi = 16, limit  # invariant: ok(hi)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return min(hi + 24, limit)  # margin: the minimum varies a little with the drawn words


def _slack(task: str, tok, n: int) -> int:
    """How many tokens of a ``task`` sample's length budget a training document does not use: the
    generation budget minus the completion's tokens, less a margin of 8 for longer completions."""
    s = make_sample(task, n, tok, 12345)
    used = len(tok.encode(s.completion, add_special_tokens=False))
    return max(0, s.gen_tokens - used - 8)


class RulerSource:
    kind = "ruler_mix"

    def __init__(self, *, tokenizer, tasks: list[str] | None, seq_len: int, batch_size: int,
                 loss_on: str = "answer", doc_len_warmup: int = 0, followups: int = 0,
                 weights: dict[str, float] | None = None, pack: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.tok = tokenizer
        self.T, self.B, self.loss_on = seq_len, batch_size, loss_on
        self.doc_len_warmup = int(doc_len_warmup)
        self.followups = int(followups)
        self.pack = bool(pack)
        self.seed, self.rank, self.world = seed, rank, world_size
        names = resolve_tasks(tasks) if tasks else list(OFFLINE)
        body = seq_len - 2  # room for <bos> and <eos>
        self.min_len: dict[str, int] = {}
        self.slack: dict[str, int] = {}  # generation budget minus the completion's tokens (+ margin)
        too_long = []
        for name in names:
            m = _min_length(name, tokenizer, body)
            if m is None:  # a document holds its completion, not the task's whole generation budget: probe
                # up to the row plus that budget, and keep the task when its shortest document fits the row
                m = _min_length(name, tokenizer, body + get_task(name).gen_tokens)
            slack = None if m is None else _slack(name, tokenizer, m)
            if m is None or m > body + slack:
                too_long.append(name)
            else:
                self.min_len[name] = m
                self.slack[name] = slack
        if too_long and tasks:
            raise ValueError(f"ruler_mix: task(s) {', '.join(too_long)} need more than seq_len={seq_len} tokens; "
                             "raise train.seq_len or remove them from train.data.tasks")
        if not self.min_len:
            raise ValueError(f"ruler_mix: no RULER task fits seq_len={seq_len}; raise train.seq_len")
        self.skipped = too_long
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"ruler_mix: weights name task(s) {', '.join(unknown)} that are not in the mixture "
                             f"({', '.join(names)})")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"ruler_mix: negative task weight in {weights}")
        # a task of weight 0 is never drawn
        self.tasks = [t for t in self.min_len if weights.get(t, 1.0) > 0]
        if not self.tasks:
            raise ValueError("ruler_mix: every task that fits seq_len has weight 0")
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.equal = len(set(self.weights.values())) == 1
        # room a document leaves for its follow-ups: a follow-up costs about this many tokens
        self.followup_tokens = 0
        if self.followups:
            for name in self.tasks:  # the first task that has follow-ups (the NIAH ones) sets the size
                s = make_sample(name, self.min_len[name], tokenizer, 12345)
                if "followup" in s.meta:
                    q, a = self._followup(s.meta, s.meta["queried"][0], "1234567")
                    self.followup_tokens = len(q) + len(a) + 2
                    break

    def _followup(self, meta: dict, key: str, value: str) -> tuple[list[int], list[int]]:
        """Token ids of one follow-up question (with its answer prefix) and of its answer."""
        question, prefix, typ = meta["followup"]
        q = "\n" + question.format(type=typ, query=key) + prefix.format(type=typ, query=key)
        return (self.tok.encode(q, add_special_tokens=False),
                self.tok.encode(f" {value}.", add_special_tokens=False))

    def length_cap(self, step: int) -> int:
        """Longest document (its length budget, prompt + generation) allowed at training ``step``;
        held-out batches (negative steps) and steps past the warm-up get the full row."""
        full = self.T - 2
        if self.doc_len_warmup <= 0 or step < 0 or step >= self.doc_len_warmup:
            return full + max(self.slack[t] for t in self.tasks)
        lo = max(self.min_len[t] for t in self.tasks)  # every task fits from the first step
        return lo + int((full - lo) * step / self.doc_len_warmup)

    def _pick(self, rng: np.random.Generator, fits: list[str]) -> str:
        """One of ``fits``, uniformly or in proportion to the task weights."""
        if self.equal:
            return fits[int(rng.integers(len(fits)))]
        w = np.array([self.weights[t] for t in fits])
        return fits[int(rng.choice(len(fits), p=w / w.sum()))]

    def _row(self, rng: np.random.Generator, step: int, row_index: int):
        bos, eos, pad = self.tok.bos_token_id, self.tok.eos_token_id, self.tok.pad_token_id
        ids: list[int] = []
        labels: list[int] = []
        answers: list[int] = []  # labels of the answer tokens only, whatever loss_on says
        starts: list[int] = []
        k = 0
        failures = 0
        cap = self.length_cap(step)
        while failures < 3:
            room = self.T - len(ids) - 2
            fits = [t for t in self.tasks if self.min_len[t] <= min(room + self.slack[t], cap)]
            if not fits:
                break
            task = self._pick(rng, fits)
            hi = min(room + self.slack[task], cap)
            if self.followups:  # leave room for the follow-ups where the row allows it
                hi = max(self.min_len[task], hi - self.followups * self.followup_tokens)
            n = int(rng.integers(self.min_len[task], hi + 1))
            seed = train_seed(self.seed, step, (row_index << 8) + k)
            k += 1
            try:
                s = make_sample(task, n, self.tok, seed)
            except RulerError:  # this draw's template came out longer than the probed minimum
                failures += 1
                continue
            p = self.tok.encode(s.prompt, add_special_tokens=False)
            c = self.tok.encode(s.completion, add_special_tokens=False)
            doc, lab = [bos] + p + c, [-100] * (1 + len(p)) + c
            if len(doc) + 1 > self.T - len(ids):  # the fit counts prompt + gen_tokens; be safe anyway
                break
            if self.followups and s.meta.get("facts"):
                asked = set(s.meta.get("queried", ()))
                facts = [f for f in s.meta["facts"] if f[0] not in asked]
                order = rng.permutation(len(facts))[: self.followups]
                for i in order:
                    q, a = self._followup(s.meta, *facts[int(i)])
                    if len(doc) + len(q) + len(a) + 1 > self.T - len(ids):
                        break
                    doc += q + a
                    lab += [-100] * len(q) + a
            doc.append(eos)
            lab.append(eos)
            starts.append(len(ids))
            ids += doc
            labels += lab if self.loss_on == "answer" else doc
            answers += lab[:-1] + [-100]  # not the closing <eos>
            if not self.pack:  # one document per row, then padding
                break
        if len(ids) < self.T:
            starts.append(len(ids))
            labels += [-100] * (self.T - len(ids))
            answers += [-100] * (self.T - len(ids))
            ids += [pad] * (self.T - len(ids))
        return (np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64), starts,
                np.asarray(answers, dtype=np.int64))

    def batch(self, step: int, micro: int, *, stream: int = 1) -> Batch:
        rng = rng_for(self.seed, stream, self.rank, step, micro)
        s = step if stream == 1 else -1 - step
        rows = [self._row(rng, s, ((micro * self.world + self.rank) << 12) + b) for b in range(self.B)]
        return pack_rows(rows)

    def eval_batch(self, i: int) -> Batch:
        return self.batch(i, 0, stream=2)

    def baselines(self) -> dict:
        return {"tasks": self.tasks, "task_weights": self.weights,
                "skipped_tasks (too long for seq_len)": self.skipped,
                "min_lengths": self.min_len, "generation_budget_not_in_documents": self.slack}

    def describe(self) -> str:
        skip = f"; skipped (need > seq_len): {', '.join(self.skipped)}" if self.skipped else ""
        warm = f", document length warm-up over {self.doc_len_warmup} steps" if self.doc_len_warmup else ""
        warm += f", up to {self.followups} follow-up questions per document" if self.followups else ""
        names = ", ".join(self.tasks) if self.equal else ", ".join(f"{t} x{w:g}" for t, w in self.weights.items())
        return f"ruler_mix: {len(self.tasks)} tasks ({names}), loss on {self.loss_on}{warm}{skip}"
