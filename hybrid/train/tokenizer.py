"""The default byte-level BPE tokenizer, and loading any local Hugging Face tokenizer.

Design of the default tokenizer (``hybrid/data/tokenizer/``, vocab 4096):
- byte-level BPE (every byte string round-trips exactly, no unknown token);
- digits are split one per token before BPE, so a 7-digit RULER value is always 7 tokens and
  numbers never merge with neighbouring letters;
- the training text is the shipped Shakespeare corpus plus generated RULER-style lines (needle
  sentences with 7-digit numbers and UUIDs, variable chains, word lists), so template words are
  single tokens and hex strings split into short, consistent pieces;
- special tokens ``<|bos|>`` (id 0), ``<|eos|>`` (1), ``<|pad|>`` (2).

A second shipped tokenizer, ``digits3`` (``hybrid/data/tokenizer-digits3/``, ``load_tokenizer("digits3")``),
is the same except that digit runs split into groups of up to three from the left (every group of
1-3 digits is one token): a 7-digit RULER value is 3 tokens (``762`` ``403`` ``9``). Copying such a
value is an induction over mostly distinct tokens rather than over 7 single digits that repeat all
over the context; in our small CPU probes 2 of 3 runs with digit groups learned to copy the passkey
(72% of its answer tokens after 1400 steps) and none of 3 with single digits did (docs/ruler.md).

``load_tokenizer(spec)`` accepts None / "default" (the shipped one), a directory holding a
``tokenizer.json`` (``AutoTokenizer.from_pretrained`` on a local dir) or a ``tokenizer.json`` file.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

from hybrid.train.textfiles import DATA_DIR, DataFileError, expand_files, iter_all_documents

DEFAULT_TOKENIZER_DIR = DATA_DIR / "tokenizer"
SHIPPED_TOKENIZERS = {"default": DEFAULT_TOKENIZER_DIR, "digits3": DATA_DIR / "tokenizer-digits3"}
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD]

_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_WORDS = ("amber anchor ancient autumn bright brittle calm candid crimson curious daring eager elegant "
          "fading fierce gentle golden hidden hollow humble idle jolly keen lively lucky mellow misty "
          "noble quiet rapid rustic silent silver steady swift tender velvet vivid wild wise young "
          "apple arrow bridge candle castle cloud copper desert dragon engine falcon feather forest "
          "garden harbor island jacket kettle ladder lantern meadow mirror needle orchard parrot pencil "
          "pillow river saddle shadow spider stone thunder tiger tower valley violin wagon window").split()


def synthetic_lines(n: int, seed: int = 1234) -> Iterator[str]:
    """RULER-style text for tokenizer training only (numbers, UUIDs, templates, variable chains)."""
    rng = random.Random(seed)
    for i in range(n):
        key = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}"
        num = rng.randint(1_000_000, 9_999_999)
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        kind = i % 5
        if kind == 0:
            yield f"One of the special magic numbers for {key} is: {num}."
        elif kind == 1:
            yield f"One of the special magic uuids for {uid} is: {uuid.UUID(int=rng.getrandbits(128), version=4)}."
        elif kind == 2:
            a, b = ("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)) for _ in range(2))
            yield f"VAR {a} = {rng.randint(10000, 99999)}\nVAR {b} = VAR {a}"
        elif kind == 3:
            words = " ".join(f"{j + 1}. {rng.choice(_WORDS)}" for j in range(8))
            yield f"{words}\nWhat are the 10 most common words in the above list?"
        else:
            yield (f"{_NOISE}\nWhat are all the special magic numbers for {key} mentioned in the provided "
                   f"text? The special magic number for {key} mentioned in the provided text is {num}")


def digit_group_lines(group: int, n: int = 20000, seed: int = 4321) -> Iterator[str]:
    """Lines of random digit groups (1 to ``group`` digits, leading zeros included) so that BPE learns
    every group as one token."""
    rng = random.Random(seed)
    for _ in range(n):
        yield " ".join(str(rng.randrange(10 ** group)).zfill(rng.randint(1, group)) for _ in range(20))


def train_tokenizer(out_dir: str | Path = DEFAULT_TOKENIZER_DIR, files: list[str] | None = None,
                    vocab_size: int = 4096, synthetic: int = 20000, min_frequency: int = 2,
                    digit_group: int = 1):
    """Train a byte-level BPE on ``files`` (default: the shipped corpus) and save it as a HF tokenizer
    directory. ``digit_group``: digit runs are split into groups of up to this many digits before BPE
    (1: one token per digit; 3: the ``digits3`` tokenizer). Returns the ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (the byte alphabet), got {vocab_size}")
    if not 1 <= digit_group <= 4:
        raise ValueError(f"digit_group must be 1..4 (every group becomes a token), got {digit_group}")
    paths = expand_files(files)
    tok = Tokenizer(models.BPE())
    if digit_group == 1:
        digits = pre_tokenizers.Digits(individual_digits=True)
    else:
        digits = pre_tokenizers.Split(Regex(rf"\d{{1,{digit_group}}}"), behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        digits,
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def texts():
        yield from iter_all_documents(paths)
        yield from synthetic_lines(synthetic)
        if digit_group > 1:
            yield from digit_group_lines(digit_group)

    tok.train_from_iterator(texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=1 << 20)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(spec: str | Path | None = None):
    """Load a tokenizer: None/"default" or "digits3" = shipped; a local HF tokenizer dir; or a tokenizer.json
    file.
    The result always has bos/eos/pad ids (pad falls back to eos, bos to eos if missing)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec is None or str(spec) in SHIPPED_TOKENIZERS:
        name = "default" if spec is None else str(spec)
        path = SHIPPED_TOKENIZERS[name]
        if not (path / "tokenizer.json").exists():
            how = "" if name == "default" else f" --digit-group 3 --out {path}"
            raise DataFileError(f"the shipped tokenizer {name!r} is missing from {path}; build it with "
                                f"'hybrid tokenizer train{how}'")
    else:
        path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".json":
            raise DataFileError(f"tokenizer {path}: expected a directory or a tokenizer.json file")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    elif path.is_dir():
        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; re-raise with the path
            raise DataFileError(f"cannot load a tokenizer from {path}: {e}") from e
    else:
        raise DataFileError(f"tokenizer path {str(spec)!r} does not exist (give a directory with a "
                            "tokenizer.json, a tokenizer.json file, or 'default')")
    if tok.eos_token is None:
        for cand in (EOS, "</s>", "<|endoftext|>", "[SEP]"):
            if cand in tok.get_vocab():
                tok.eos_token = cand
                break
        else:
            raise DataFileError(f"tokenizer {path} has no eos token; add one (needed to separate documents)")
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def describe(tok, text: str) -> list[str]:
    """The token strings of ``text`` (decoded one by one), for showing how text splits."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return [tok.decode([i]) for i in ids]
