#!/usr/bin/env python3
"""Coordinator side of the prover example.

    python3 scripts/generate.py targets --blocks 8 > blocks.yaml   # the batch's jobs (targets)
    python3 scripts/generate.py batch                              # a run's batch seed (output)

``batch`` publishes ``seed`` (fresh per run, so every run proves new work)
and ``blocks`` through ``$FLEETRUN_OUTPUT``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("targets")
    t.add_argument("--blocks", type=int, default=8)
    t.add_argument("--first", type=int, default=1000)
    sub.add_parser("batch")
    args = ap.parse_args()
    if args.what == "targets":
        for i in range(args.blocks):
            n = args.first + i
            # Bigger blocks take longer to prove.
            print(f"block-{n}: {{number: {n}, seconds: {1 + (i % 3)}}}")
        return 0
    seed = secrets.token_hex(4)
    print(f"batch {seed}")
    with open(os.environ["FLEETRUN_OUTPUT"], "a") as f:
        f.write(f"seed={seed}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
