"""Summarise an Nsight Compute source-page export (scripts/ncu-carve writes them as ncu-source-*.csv).

    python3 benchmarks/ncu_summary.py out/ncu-source-bwd.csv [--top 30]

Prints the warp-stall samples by reason and by instruction (SASS opcode), the local-memory (spill)
instructions and their samples, and the instructions with the most samples.
"""

from __future__ import annotations

import argparse
import collections
import csv
import re


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    cols = rows[head]
    return cols, [dict(zip(cols, r)) for r in rows[head + 1:] if len(r) == len(cols)]


def num(x):
    try:
        return float(x.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    cols, rows = load(args.csv)
    samp = "Warp Stall Sampling (All Samples)"
    total = sum(num(r[samp]) for r in rows)
    reasons = [c for c in cols if c.startswith("stall_") and "Not Issued" not in c]
    print(f"{len(rows)} instructions, {total:.0f} stall samples")
    by_reason = sorted(((sum(num(r[c]) for r in rows), c) for c in reasons), reverse=True)
    print("by reason:", ", ".join(f"{c[6:]} {v / total:.1%}" for v, c in by_reason if v > 0.005 * total))
    ops = collections.Counter()
    cnt = collections.Counter()
    for r in rows:
        m = re.match(r"\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", r["Source"])
        op = m.group(1) if m else "?"
        ops[op] += num(r[samp])
        cnt[op] += 1
    print("by opcode (share of samples, static count):")
    print("  " + ", ".join(f"{op} {v / total:.1%} ({cnt[op]})" for op, v in ops.most_common(18)))
    execd = "Instructions Executed"
    loc = [r for r in rows if re.search(r"\b(LDL|STL)\b", r["Source"])]
    print(f"local-memory instructions: {len(loc)} static, {sum(num(r[execd]) for r in loc):.0f} warp-level executed "
          f"(all instructions: {sum(num(r[execd]) for r in rows):.0f})")
    print(f"top {args.top} instructions by samples (address, samples, share, main reasons, source):")
    for r in sorted(rows, key=lambda r: -num(r[samp]))[:args.top]:
        top = sorted(((num(r[c]), c[6:]) for c in reasons), reverse=True)[:2]
        print(f"  {r['Address'][-5:]} {num(r[samp]):7.0f} {num(r[samp]) / total:5.1%}  "
              f"{'/'.join(f'{n}' for v, n in top if v)}  {r['Source'].strip()[:90]}")


if __name__ == "__main__":
    main()
