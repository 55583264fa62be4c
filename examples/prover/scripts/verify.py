#!/usr/bin/env python3
"""Checks one proof from prove.py (one hash) and files it under ``--out`` for aggregation.

Exit 1, saying why, when the proof is wrong. The file is written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", required=True)
    ap.add_argument("--nonce", type=int, required=True)
    ap.add_argument("--proof", required=True)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    h = hashlib.sha256(f"{args.block}:{args.nonce}".encode()).digest()
    if h.hex() != args.proof:
        print(f"block {args.block}: proof does not match nonce {args.nonce}")
        return 1
    zeros = 256 - int.from_bytes(h, "big").bit_length()
    if zeros < args.bits:
        print(f"block {args.block}: {zeros} leading zero bits, {args.bits} required")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{args.block}.tmp"
    tmp.write_text(f"{args.block}:{args.nonce}:{args.proof}\n")
    os.replace(tmp, out / f"{args.block}.proof")
    print(f"block {args.block}: valid ({zeros} leading zero bits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
