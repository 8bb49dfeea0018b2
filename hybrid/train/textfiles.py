"""Reading local text: .txt and .jsonl files (optionally .gz), one document per .txt file or per
JSON line (its "text" field). Globs are expanded. Errors name the file and what is wrong with it."""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_CORPUS = DATA_DIR / "corpus" / "shakespeare.jsonl.gz"
SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz", ".md", ".text")


class DataFileError(ValueError):
    """A training/tokenizer text file is missing, empty or malformed."""


def expand_files(specs: list[str] | None) -> list[Path]:
    """Turn paths / globs / directories into a sorted, de-duplicated list of text files."""
    if not specs:
        if not DEFAULT_CORPUS.exists():
            raise DataFileError(f"the shipped corpus {DEFAULT_CORPUS} is missing; rebuild it with "
                                "'hybrid tokenizer corpus SDIST' (see hybrid/data/README.md)")
        return [DEFAULT_CORPUS]
    out: list[Path] = []
    for spec in specs:
        spec = os.path.expanduser(spec)
        if any(c in spec for c in "*?["):
            hits = sorted(glob.glob(spec, recursive=True))
            if not hits:
                raise DataFileError(f"no file matches the pattern {spec!r}")
            out.extend(Path(h) for h in hits if Path(h).is_file())
        elif os.path.isdir(spec):
            hits = sorted(p for p in Path(spec).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            if not hits:
                raise DataFileError(f"directory {spec!r} holds no {'/'.join(SUFFIXES)} files")
            out.extend(hits)
        elif os.path.isfile(spec):
            out.append(Path(spec))
        else:
            raise DataFileError(f"data file {spec!r} does not exist")
    seen, uniq = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            uniq.append(p)
    return uniq


def _open_text(path: Path) -> io.TextIOBase:
    """The file as text. Bytes that are not UTF-8 become U+FFFD, with a warning naming the first one."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="replace")
        line = raw[:e.start].count(b"\n") + 1
        print(f"warning: {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
              f"{text.count(chr(0xFFFD)) - raw.decode('utf-8', 'ignore').count(chr(0xFFFD))} undecodable "
              "byte sequences were replaced with U+FFFD; convert the file to UTF-8", file=sys.stderr)
    return io.StringIO(text, newline=None)


def iter_documents(path: Path) -> Iterator[str]:
    """Yield the documents of one file (whole .txt file, or each JSON line's "text")."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if os.path.getsize(path) == 0:
        raise DataFileError(f"data file {path} is empty")
    with _open_text(path) as f:
        if name.endswith(".jsonl") or name.endswith(".json"):
            n = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFileError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or "text" not in obj:
                    raise DataFileError(f"{path}:{lineno}: each JSON line needs a \"text\" field")
                if not isinstance(obj["text"], str):
                    raise DataFileError(f"{path}:{lineno}: \"text\" must be a string")
                if obj["text"].strip():
                    n += 1
                    yield obj["text"]
            if n == 0:
                raise DataFileError(f"data file {path} holds no non-empty \"text\" entries")
        else:
            text = f.read()
            if not text.strip():
                raise DataFileError(f"data file {path} holds only whitespace")
            yield text


def iter_all_documents(paths: list[Path]) -> Iterator[str]:
    for p in paths:
        yield from iter_documents(p)
