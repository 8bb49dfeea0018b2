"""Multi-query associative recall (MQAR, after Zoology / Arora et al. 2023), drawn fresh every step.

One sequence of ``seq_len`` tokens: first ``K`` key-value pairs ``k1 v1 k2 v2 ...`` (keys from
``[4, V/2)``, values from ``[V/2, V)``, all distinct within the sequence), then a query region in
which every key appears once more, at an even offset drawn from a power law that favours short gaps
(``p(i) ~ a * i^(a-1)``, ``a = power_a``). The token after a queried key carries the label: that
key's value. Every other position is unlabelled; its input is a random token
(``random_non_queries``) or 0. Loss and accuracy are on the K value predictions only.

Chance level for a value prediction is ``ln(V/2)`` nats (uniform over values), which is the
baseline the loss must beat to show recall.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hybrid.train.batches import EVAL_STREAM, IGNORE, TRAIN_STREAM, Batch, rng_for


class MQARSource:
    kind = "assoc_recall"

    def __init__(self, *, vocab_size: int, seq_len: int, batch_size: int, num_kv_pairs: int,
                 power_a: float = 0.01, random_non_queries: bool = True, seed: int = 0, rank: int = 0):
        if vocab_size < 2 * num_kv_pairs + 8:
            raise ValueError(f"assoc_recall: vocab_size {vocab_size} too small for {num_kv_pairs} distinct "
                             "keys and values")
        if 4 * num_kv_pairs > seq_len:
            raise ValueError(f"assoc_recall: seq_len {seq_len} must be >= 4 * num_kv_pairs "
                             f"({4 * num_kv_pairs}) to fit the pairs and their queries")
        self.V, self.T, self.B, self.K = vocab_size, seq_len, batch_size, num_kv_pairs
        self.power_a, self.random_non_queries = power_a, random_non_queries
        self.seed, self.rank = seed, rank
        q_len = seq_len - 2 * num_kv_pairs
        self.n_slots = q_len // 2  # query slots at even offsets inside the query region
        i = np.arange(1, self.n_slots + 1, dtype=np.float64)
        p = power_a * i ** (power_a - 1)
        self.slot_p = p / p.sum()

    def _example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        V, T, K = self.V, self.T, self.K
        keys = rng.choice(np.arange(4, V // 2), K, replace=False)
        vals = rng.choice(np.arange(V // 2, V), K, replace=False)
        if self.random_non_queries:
            ids = rng.integers(4, V, size=T)
        else:
            ids = np.zeros(T, dtype=np.int64)
        labels = np.full(T, IGNORE, dtype=np.int64)
        ids[0:2 * K:2] = keys
        ids[1:2 * K:2] = vals
        slots = rng.choice(self.n_slots, K, replace=False, p=self.slot_p)
        pos = 2 * K + 2 * slots
        order = rng.permutation(K)
        ids[pos] = keys[order]
        labels[pos + 1] = vals[order]
        return ids.astype(np.int64), labels

    def batch(self, step: int, micro: int, *, stream: int = TRAIN_STREAM) -> Batch:
        rng = rng_for(self.seed, stream, self.rank, step, micro)
        ex = [self._example(rng) for _ in range(self.B)]
        ids = torch.from_numpy(np.stack([e[0] for e in ex]))
        labels = torch.from_numpy(np.stack([e[1] for e in ex]))
        return Batch(ids, labels, None)

    def eval_batch(self, i: int) -> Batch:
        return self.batch(0, i, stream=EVAL_STREAM)

    def baselines(self) -> dict:
        return {"chance_value_nats": math.log(self.V // 2 - 0), "note": "uniform guess over the V/2 value ids"}

    def describe(self) -> str:
        return (f"assoc_recall (MQAR): V={self.V}, seq_len={self.T}, {self.K} key-value pairs, "
                f"{self.K} queries per sequence")
