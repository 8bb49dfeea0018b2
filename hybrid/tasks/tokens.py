"""Token counting and representability checks that work with a ``transformers`` tokenizer, a raw
``tokenizers.Tokenizer``, or any object with ``encode(text) -> list[int]`` and ``decode(ids)``."""

from __future__ import annotations

from .errors import RulerError


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` exactly as the model will receive them (special tokens included when the
    tokenizer adds any)."""
    out = tokenizer.encode(text)
    ids = getattr(out, "ids", out)  # tokenizers.Encoding
    return list(ids)


def model_ids(tokenizer, text: str) -> list[int]:
    """The ids the evaluated model reads for a prompt: ``encode`` plus a leading BOS when the tokenizer
    has one and did not add it (training documents start with BOS). Lengths are fitted on these."""
    ids = encode(tokenizer, text)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def decode(tokenizer, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=True)
    except TypeError:
        return tokenizer.decode(ids)


def unk_id(tokenizer) -> int | None:
    uid = getattr(tokenizer, "unk_token_id", None)
    if uid is not None:
        return uid
    tok = getattr(tokenizer, "token_to_id", None)
    if tok is not None:
        for name in ("<unk>", "[UNK]", "<|unk|>"):
            i = tok(name)
            if i is not None:
                return i
    return None


def check_text(tokenizer, text: str, what: str) -> None:
    """Raise ``RulerError`` unless ``text`` survives encode -> decode (up to case and surrounding space)
    without unknown tokens: the model could not read or write it otherwise."""
    ids = encode(tokenizer, text)
    u = unk_id(tokenizer)
    if u is not None and u in ids:
        raise RulerError(f"the tokenizer cannot represent {what} {text!r}: it maps part of it to the unknown "
                         "token; use a tokenizer that covers these characters (e.g. a byte-level BPE)")
    back = decode(tokenizer, ids)
    if back.strip().lower() != text.strip().lower():
        raise RulerError(f"the tokenizer cannot represent {what} {text!r}: it decodes back to {back!r}, so "
                         "an exact answer could never be produced or matched")


def check_ids(tokenizer, ids: list[int], task: str) -> None:
    u = unk_id(tokenizer)
    if u is None or u not in ids:
        return
    i = ids.index(u)
    around = decode(tokenizer, ids[max(0, i - 8): i + 8])
    raise RulerError(f"the prompt of task {task} contains {ids.count(u)} unknown token(s), e.g. near {around!r}; "
                     "the tokenizer cannot represent the task (use a byte-level BPE or another haystack)")
