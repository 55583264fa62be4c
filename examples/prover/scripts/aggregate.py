#!/usr/bin/env python3
"""Aggregates the verified proofs in a directory into one batch commitment.

    python3 scripts/aggregate.py results/<seed> --expect 8

The commitment is the SHA-256 of the sorted ``block:nonce:proof`` lines;
published as ``root`` and ``proofs`` through ``$FLEETRUN_OUTPUT``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--expect", type=int, default=None)
    args = ap.parse_args()
    lines = sorted(p.read_text().strip() for p in Path(args.directory).glob("*.proof"))
    if args.expect is not None and len(lines) != args.expect:
        print(f"{len(lines)} verified proofs, {args.expect} expected")
        return 1
    root = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    print(f"{len(lines)} proofs aggregated: {root}")
    with open(os.environ["FLEETRUN_OUTPUT"], "a") as f:
        f.write(f"proofs={len(lines)}\nroot={root}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
