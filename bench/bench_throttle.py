"""Throttling: fleetrun's adaptive pools against a real token-bucket HTTP server.

The server (``tests/engine/throttle_server.py``) runs on 127.0.0.1 and meters
requests like Azure Resource Manager, scaled down: ``--rate`` per second,
``--burst`` saved up, 429 + ``Retry-After`` when empty, and a new 429 for a
request sent before that delay ends. Every request is one real task: ``sh`` +
``curl``, exit 75 and a ``Retry-After: N`` line on a 429. The ideal makespan
is ``(requests - burst) / rate``: the burst at once, then exactly the rate.

Contenders, each against a fresh server, in one run:

- fleetrun, ``adaptive``, the pool configured 5x above the server's rate
  (rate 5 x ``--rate``/s, concurrency 128): target makespan <= 1.10 x ideal and
  429s <= 5% of requests;
- the seed's approach: 128 in flight (a semaphore), each request retried on
  429 with exponential backoff (full jitter, 1 s base, 60 s cap), Retry-After
  ignored; fleetrun must need >= 5x fewer 429s;
- fleetrun without ``adaptive``, the rate set exactly to the server's (for
  reference);
- fleetrun adaptive on a short run (``--short`` requests), where learning
  the limit weighs more;
- the new user's scenario: 6 regions, ``rate: 2/s, adaptive: true``, 0.6 s of
  work each, 40% of requests answered 429 at random (no rate limit behind
  them): the pool's rate must stay above its documented floor.

    python bench/bench_throttle.py [--requests 2000] [--rate 40] [--burst 100] [--short 600]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "engine"))

import contextlib

from _common import machine
from throttle_server import ThrottleServer, client_command

from fleetrun.engine import Event, PoolChanged, RunOptions, run_graph
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import AdaptiveSettings, Pool, ThrottleRule

RULE = ThrottleRule(
    exit=frozenset({75}), output=(r"\b429\b",), retry_after=r"Retry-After: (\d+)", attempts=50
)


def fleetrun_run(
    n: int, rate: float, burst: int, pool: Pool, work: str = "", noise: float = 0.0
) -> dict[str, float]:
    """``n`` tasks, one request each, through ``pool``, against a fresh server."""
    with ThrottleServer(rate=rate, burst=burst, noise=noise, seed=1) as server:
        cmd = (work + "; " if work else "") + client_command(server.url)
        targets = [f"t{i}" for i in range(n)]
        g = graph([task("call", cmd, targets=targets, pools=[pool.name])], pools=[pool])
        events: list[Event] = []
        with tempfile.TemporaryDirectory() as d:
            t0 = time.monotonic()
            result = asyncio.run(
                run_graph(
                    g,
                    RunOptions(run_id="bench", run_dir=Path(d), parallelism=None),
                    LocalExecutor(),
                    [events.append],
                )
            )
            wall = time.monotonic() - t0
    changes = [e for e in events if isinstance(e, PoolChanged) and e.paused == 0]
    rates = [e.rate for e in changes if not e.reason.startswith("resumed")]
    pauses = [e for e in events if isinstance(e, PoolChanged) and e.paused > 0]
    return {
        "wall": wall,
        "ok": server.ok,
        "429": server.throttled,
        "failed": result.counts.get("failed", 0),
        "min_rate": min(rates, default=pool.rate or 0.0),
        "final_rate": rates[-1] if rates else (pool.rate or 0.0),
        "changes": len(changes),
        "pauses": len(pauses),
    }


def seed_run(
    n: int, rate: float, burst: int, limit: float, in_flight: int = 128
) -> dict[str, float]:
    """The seed's approach: a fixed number in flight, exponential backoff on 429.

    Stopped after ``limit`` seconds (it can take many times the ideal): then
    ``wall`` is the limit and ``done`` says how many requests were served."""
    rng = random.Random(1)

    async def main(url: str) -> None:
        sem = asyncio.Semaphore(in_flight)
        cmd = client_command(url)

        async def one() -> None:
            attempt = 0
            while True:
                async with sem:
                    p = await asyncio.create_subprocess_shell(
                        cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                    )
                    code = await p.wait()
                if code != 75:
                    return
                attempt += 1
                await asyncio.sleep(rng.uniform(0, min(60.0, 1.0 * 2 ** (attempt - 1))))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), limit)

    with ThrottleServer(rate=rate, burst=burst) as server:
        t0 = time.monotonic()
        asyncio.run(main(server.url))
        wall = time.monotonic() - t0
    return {"wall": wall, "ok": server.ok, "429": server.throttled, "done": server.ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--short", type=int, default=600)
    ap.add_argument("--seed-limit", type=float, default=3.0, help="x ideal before the seed stops")
    a = ap.parse_args()
    n, rate, burst = a.requests, a.rate, a.burst
    print(f"# bench_throttle: {machine()}")
    print(f"server: {rate:g}/s, burst {burst}; requests {n}; short run {a.short}")
    ideal = (n - burst) / rate
    ideal_short = (a.short - burst) / rate

    # burst 5: a start that comes a few ms late (a busy loop) does not lose its token.
    adaptive = Pool(
        "api", concurrency=128, rate=5 * rate, burst=5, adaptive=AdaptiveSettings(), throttle=RULE
    )
    exact = Pool("api", concurrency=128, rate=rate, burst=5, throttle=RULE)
    results = {
        "fleetrun adaptive (pool 5x too high)": (fleetrun_run(n, rate, burst, adaptive), ideal),
        "seed: 128 in flight + backoff": (
            seed_run(n, rate, burst, a.seed_limit * ideal),
            ideal,
        ),
        "fleetrun, rate set exactly": (fleetrun_run(n, rate, burst, exact), ideal),
        f"fleetrun adaptive, short ({a.short})": (
            fleetrun_run(a.short, rate, burst, adaptive),
            ideal_short,
        ),
    }
    print(f"{'contender':42} {'makespan':>9} {'x ideal':>8} {'429s':>6} {'429/req':>8}")
    for name, (r, ideal_s) in results.items():
        reqs = n if "short" not in name else a.short
        print(
            f"{name:42} {r['wall']:8.1f}s {r['wall'] / ideal_s:7.2f}x {r['429']:6.0f} "
            f"{r['429'] / reqs:7.1%}"
        )
    fr = results["fleetrun adaptive (pool 5x too high)"][0]
    seed = results["seed: 128 in flight + backoff"][0]
    ratio = fr["wall"] / ideal
    # Per request served: the seed may have been stopped before the end.
    fewer = (seed["429"] / max(1.0, seed["ok"])) / max(1.0 / n, fr["429"] / fr["ok"])
    if seed["ok"] < n:
        print(f"seed: stopped at {seed['wall']:.0f}s with {seed['ok']:.0f} of {n} served")
    print(
        f"adaptive: final rate {fr['final_rate']:.1f}/s (server {rate:g}/s), "
        f"{fr['changes']:.0f} changes, {fr['pauses']:.0f} pauses, failed {fr['failed']:.0f}"
    )
    print(f"makespan {ratio:.2f}x ideal (target <= 1.10): {'PASS' if ratio <= 1.10 else 'MISS'}")
    share = fr["429"] / n
    print(f"429s {share:.1%} of requests (target <= 5%): {'PASS' if share <= 0.05 else 'MISS'}")
    print(
        f"seed/fleetrun 429s per request {fewer:.1f}x (target >= 5x): "
        f"{'PASS' if fewer >= 5 else 'MISS'}"
    )

    # The new user's scenario: 6 regions, 2/s adaptive, 40% random 429s.
    settings = AdaptiveSettings()
    user = Pool("azure-api", rate=2.0, adaptive=settings, throttle=RULE)
    r = fleetrun_run(6, 1e6, 10**6, user, work="sleep 0.6", noise=0.4)
    floor = 2.0 * settings.floor
    print(
        f"new user (6 regions, 2/s, 40% random 429s): makespan {r['wall']:.1f}s for 3.6s of work, "
        f"{r['429']:.0f} 429s, rate min {r['min_rate']:.2f}/s final {r['final_rate']:.2f}/s, "
        f"floor {floor:.2f}/s: {'PASS' if r['min_rate'] > floor else 'MISS'}"
    )


if __name__ == "__main__":
    main()
