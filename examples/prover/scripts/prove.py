#!/usr/bin/env python3
"""Stand-in prover: burns CPU for a scaled time, then publishes a checkable proof.

The "proof" is a proof of work over the block: the nonce whose SHA-256 of
``block:nonce`` is lowest after hashing for ``--seconds`` x ``PROVER_SCALE``
(and at least until one hash has ``--bits`` leading zero bits). Checking it
costs one hash (``verify.py``), producing it costs the CPU time: the shape
of a real proof. Outputs (``$FLEETRUN_OUTPUT``): ``block``, ``nonce``,
``proof`` (the hash, hex), ``hashes``, ``worker`` (host name).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import time


def digest(block: str, nonce: int) -> bytes:
    return hashlib.sha256(f"{block}:{nonce}".encode()).digest()


def leading_zero_bits(h: bytes) -> int:
    n = int.from_bytes(h, "big")
    return 256 - n.bit_length()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--bits", type=int, default=8)
    args = ap.parse_args()
    budget = args.seconds * float(os.environ.get("PROVER_SCALE", "1"))
    start = time.monotonic()
    best_nonce, best = 0, digest(args.block, 0)
    nonce = 0
    while time.monotonic() - start < budget or leading_zero_bits(best) < args.bits:
        for _ in range(2000):
            nonce += 1
            h = digest(args.block, nonce)
            if h < best:
                best_nonce, best = nonce, h
    print(f"block {args.block}: {nonce} hashes in {time.monotonic() - start:.2f}s", flush=True)
    with open(os.environ["FLEETRUN_OUTPUT"], "a") as f:
        f.write(f"block={args.block}\nnonce={best_nonce}\nproof={best.hex()}\n")
        f.write(f"hashes={nonce}\nworker={socket.gethostname()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
