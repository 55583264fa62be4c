"""Throttling: fleetrun's adaptive pools against real limited HTTP servers, end to end.

Each scenario starts a fresh server on 127.0.0.1 in its own process
(``tests/engine/throttle_server.py``) and, against it, each contender cold:

- **fleetrun**: ``fleetrun apply`` run as a user runs it (a subprocess of the
  CLI, ``--plain``, its own state directory) on a generated plan: one task,
  ``for_each: all`` over one target per request, ``pools: [api]``,
  ``retry: {attempts: 50, on: {exit: [75]}}``; each request is a real ``sh``
  + ``curl`` process that exits 75 and prints ``Retry-After: N`` on a 429.
- **seed**: the hand-written approach fleetrun replaces, a small Python
  script in its own process: 128 requests in flight (real ``sh`` + ``curl``
  processes), each retried on 429 with exponential backoff and full jitter
  (1 s base, 60 s cap, Retry-After ignored); stopped at ``--seed-limit`` x
  ideal, so its 429s are compared per request served.

Scenarios and targets (the provider's scale):

- ``bucket``: a token bucket of 40/s, burst 10, Retry-After, a request during
  the delay earns a new one (Azure Resource Manager's rule); 2,000 requests;
  pool ``rate: 200/s, adaptive: true`` (5x too fast). Ideal (n - burst)/rate.
  Target: makespan <= 1.10x ideal, 429s <= 5% of requests.
- ``concurrency``: 4 requests in progress at once (429 + ``Retry-After: 1``
  beyond), 200 requests of 0.2 s each; pool ``concurrency: 64, adaptive:
  true``. Ideal requests x 0.2 s / 4. Target: makespan <= 1.15x, 429s <= 10%.
- ``step``: the bucket whose rate halves (40 -> 20/s) at T1 and comes back
  at T2 (after the first request); pool as ``bucket``. Target: 429s <= 10%,
  and 5 s after each change the pool's rate is within 10% of what the server
  grants. Ideal: when the bucket has granted every request.
- every scenario: fleetrun has >= 5x fewer 429s per request served than the seed.

Four more shapes run when named (``--only window,small,burst1,random``) or with
``--all``: ``window`` (100 requests per sliding 10 s, pool ``rate: 50/s,
adaptive``; no target, the ideal is one window's worth every 10 s),
``small`` (a token bucket of 10/s with a burst of 2 and the penalty rule,
300 requests, pool ``rate: 50/s, adaptive``: each pause lets only a few
through, so the throttled share hardly falls with the rate; target 1.5x
ideal, the search for so small a limit takes some seconds of a 30 s run),
``burst1`` (a token bucket of 5/s with a burst of 1 and the penalty rule,
100 requests, pool ``rate: 50/s, adaptive``: every other request is refused
at any rate over the limit, as random throttles of 50% would be, so only the
first start after each pause tells them apart; target 2x ideal and 20%
refused, the search takes most of a 20 s run)
and ``random`` (20% of requests answered 429 at random with no limit behind
them, pool ``rate: 20/s, adaptive``; target: the pool's rate never below
90% of 20/s).

With ``--fixed``, a third contender shows what this machine can do at its
present load: fleetrun with the pool set just under the server's limit
(95% of the bucket's rate, honouring Retry-After; the concurrency limit),
not adaptive.

Makespan is the server's: from the first request's arrival to the last
served request's end (``wall`` adds fleetrun's own start and end). The
pool's trajectory comes from the run's journal (its ``PoolChanged`` events:
effective rate and concurrency, Retry-After pauses), drawn one column per
second beside what the server served and throttled.

    python3 bench/bench_throttle.py --quick         # smaller counts, 1 to 2 minutes
    python3 bench/bench_throttle.py                 # the full sizes, about 5 minutes
    python3 bench/bench_throttle.py --only bucket,step --table
    python3 bench/bench_throttle.py --quick --all   # also the window and random shapes
    python3 bench/bench_throttle.py --quick --fixed # and the pool set by hand, for reference
    python3 bench/bench_throttle.py --src /tmp/old  # the fleetrun in /tmp/old/src

The machine's load is printed first: on 2 shared cores, spawning 40
processes a second is near the limit and the timings are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "engine"))

from _common import load, machine
from throttle_server import Stats, client_command, spawn

from fleetrun.state import JournalReader

SEED_IN_FLIGHT = 128
FIXED_THROTTLE = {"exit": [75], "retry_after": r"(?i)retry-after:\s*(\d+)"}
"""The fixed pool's throttle rule: it honours Retry-After as the adaptive pool does
(without one, a single 429 under ARM's penalty rule is followed by retries that
each earn a new penalty, and the run never recovers)."""

RECOVERY_S = 5.0
"""A change of the server's limit must be followed within this many seconds."""


@dataclass(frozen=True)
class Scenario:
    """One server, one pool, one request count, and the targets."""

    key: str
    title: str
    kind: str
    server: dict[str, Any]
    requests: int
    pool: dict[str, Any]
    ideal: float
    query: str = ""  # appended to the URL (``?sleep=0.2``)
    makespan_target: float | None = None
    share_target: float | None = 0.10
    rate_floor: float | None = None  # target: the pool's rate never below this
    extra: bool = False  # run only when named (``--only``) or with ``--all``
    seed: bool = True  # compare with the seed (not where the 429s do not depend on the caller)
    fixed: dict[str, Any] | None = (
        None  # ``--fixed``: a pool set just under the limit, not adaptive
    )


@dataclass
class Result:
    """What one contender did against its own server."""

    name: str
    stats: Stats
    wall: float
    failed: int = 0
    stopped: bool = False
    # (at, rate, concurrency, paused, reason) of every PoolChanged, in order.
    changes: list[tuple[float, float, int | None, float, str]] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        """The server's makespan; for a contender stopped before the end, until it stopped."""
        first, last = self.stats.first, self.stats.last
        if self.stopped and first is not None and last is not None:
            return last - first
        return self.stats.makespan()

    def share(self, n: int) -> float:
        return self.stats.throttled / n


# -- scenarios ------------------------------------------------------------------------


def step_ideal(rate: float, burst: int, steps: Sequence[tuple[float, float]], n: int) -> float:
    """When a bucket of ``rate`` (changing at ``steps``) has granted ``n`` requests."""
    need = n - burst
    t, r = 0.0, rate
    for at, new in sorted(steps):
        if need <= r * (at - t):
            break
        need -= r * (at - t)
        t, r = at, new
    return t + need / r


def scenarios(quick: bool) -> list[Scenario]:
    """The issue's scenarios at full size, or smaller (``--quick``)."""
    rate, burst = 40.0, 10
    n_bucket = 300 if quick else 2000
    n_conc = 60 if quick else 200
    t1, t2, n_step = (4.0, 9.0, 470) if quick else (10.0, 25.0, 1310)
    per_window, n_window = (50, 150) if quick else (100, 500)
    n_random = 150 if quick else 500
    n_small = 150 if quick else 300
    n_burst1 = 60 if quick else 100
    steps = [(t1, rate / 2), (t2, rate)]
    fast = {"rate": f"{5 * rate:g}/s", "adaptive": True}
    return [
        Scenario(
            "bucket",
            f"token bucket {rate:g}/s, burst {burst}, penalty rule; {n_bucket} requests; "
            f"pool rate {5 * rate:g}/s adaptive",
            "bucket",
            {"rate": rate, "burst": burst},
            n_bucket,
            fast,
            (n_bucket - burst) / rate,
            makespan_target=1.10,
            share_target=0.05,
            fixed={"rate": f"{0.95 * rate:g}/s", "throttle": FIXED_THROTTLE},
        ),
        Scenario(
            "concurrency",
            f"concurrency limit 4 (Retry-After 1); {n_conc} requests of 0.2 s; "
            "pool concurrency 64 adaptive",
            "concurrency",
            {"limit": 4, "retry_after": 1},
            n_conc,
            {"concurrency": 64, "adaptive": True},
            n_conc * 0.2 / 4,
            query="?sleep=0.2",
            makespan_target=1.15,
            share_target=0.10,
            fixed={"concurrency": 4},
        ),
        Scenario(
            "step",
            f"token bucket {rate:g}/s burst {burst}, halves at {t1:g}s, back at {t2:g}s; "
            f"{n_step} requests; pool rate {5 * rate:g}/s adaptive",
            "step",
            {"rate": rate, "burst": burst, "steps": steps},
            n_step,
            fast,
            step_ideal(rate, burst, steps, n_step),
            share_target=0.10,
        ),
        Scenario(
            "window",
            f"sliding window {per_window} per 10 s (Retry-After until a slot frees); "
            f"{n_window} requests; pool rate 50/s adaptive",
            "window",
            {"limit": per_window, "window": 10.0},
            n_window,
            {"rate": "50/s", "adaptive": True},
            (math.ceil(n_window / per_window) - 1) * 10.0 + per_window / 50,
            share_target=None,
            extra=True,
        ),
        Scenario(
            "small",
            f"token bucket 10/s, burst 2, penalty rule; {n_small} requests; "
            "pool rate 50/s adaptive",
            "bucket",
            {"rate": 10.0, "burst": 2},
            n_small,
            {"rate": "50/s", "adaptive": True},
            (n_small - 2) / 10.0,
            makespan_target=1.5,
            share_target=0.10,
            fixed={"rate": "9.5/s", "throttle": FIXED_THROTTLE},
            extra=True,
        ),
        Scenario(
            "burst1",
            f"token bucket 5/s, burst 1, penalty rule; {n_burst1} requests; "
            "pool rate 50/s adaptive",
            "bucket",
            {"rate": 5.0, "burst": 1},
            n_burst1,
            {"rate": "50/s", "adaptive": True},
            (n_burst1 - 1) / 5.0,
            makespan_target=2.0,
            share_target=0.20,
            fixed={"rate": "4.75/s", "throttle": FIXED_THROTTLE},
            extra=True,
        ),
        Scenario(
            "random",
            f"20% of requests 429 at random (no Retry-After, no limit); {n_random} requests; "
            "pool rate 20/s adaptive",
            "random",
            {"share": 0.2, "seed": 1},
            n_random,
            {"rate": "20/s", "adaptive": True},
            n_random / 0.8 / 20.0,
            share_target=None,
            rate_floor=0.9 * 20.0,
            extra=True,
            seed=False,
        ),
    ]


# -- contenders ----------------------------------------------------------------------


def plan_text(scn: Scenario, url: str, pool: dict[str, Any]) -> str:
    """The plan a user would write for this scenario."""
    plan = {
        "name": f"bench-{scn.key}",
        "targets": {f"t{i}": {} for i in range(scn.requests)},
        "pools": {"api": pool},
        "tasks": {
            "call": {
                "for_each": "all",
                "pools": ["api"],
                "retry": {"attempts": 50, "on": {"exit": [75]}},
                "run": client_command(url + scn.query),
            }
        },
    }
    return yaml.safe_dump(plan, sort_keys=False, width=1000)


def run_fleetrun(
    scn: Scenario, work: Path, env: dict[str, str], timeout: float, fixed: bool = False
) -> Result:
    """``fleetrun apply`` on the scenario's plan against a fresh server (``fixed``: with
    the scenario's fixed pool instead of the adaptive one)."""
    name = "fixed" if fixed else "fleetrun"
    pool = scn.fixed if fixed and scn.fixed is not None else scn.pool
    d = work / f"{name}-{scn.key}"
    d.mkdir()
    with spawn(scn.kind, **scn.server) as server:
        plan = d / "plan.yaml"
        plan.write_text(plan_text(scn, server.url, pool))
        argv = [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", "-q"]
        argv += ["--state-dir", str(d / "state")]
        t0 = time.monotonic()
        with open(d / "console.txt", "w") as out:
            try:
                subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
                stopped = False
            except subprocess.TimeoutExpired:
                stopped = True
        wall = time.monotonic() - t0
        stats = server.stats()
    with JournalReader(d / "state") as j:
        run = j.run()
        events = j.event_data(run.id, "PoolChanged")
    changes = [
        (
            e["at"],
            float(e["rate"] or 0.0),
            e.get("concurrency"),
            float(e.get("paused", 0.0)),
            e["reason"],
        )
        for e in events
    ]
    failed = int(run.counts.get("failed", 0)) + int(run.counts.get("skipped", 0))
    return Result(name, stats, wall, failed, stopped, changes)


def run_seed(scn: Scenario, limit: float) -> Result:
    """The seed's approach against a fresh server, stopped after ``limit`` seconds."""
    with spawn(scn.kind, **scn.server) as server:
        argv = [sys.executable, __file__, "--seed-client", server.url + scn.query]
        argv += ["--requests", str(scn.requests), "--seed-stop", f"{limit:.1f}"]
        t0 = time.monotonic()
        p = subprocess.run(argv, check=False)
        wall = time.monotonic() - t0
        stats = server.stats()
    return Result("seed", stats, wall, stopped=p.returncode == 3)


def seed_client(url: str, n: int, in_flight: int, stop: float) -> int:
    """The seed: ``n`` requests, ``in_flight`` at once, exponential backoff with full
    jitter on 429 (1 s base, 60 s cap). Exit 3 when stopped after ``stop`` seconds."""
    rng = random.Random(1)
    cmd = client_command(url)

    async def main() -> bool:
        sem = asyncio.Semaphore(in_flight)
        live: set[asyncio.subprocess.Process] = set()

        async def one() -> None:
            attempt = 0
            while True:
                async with sem:
                    p = await asyncio.create_subprocess_shell(
                        cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                    )
                    live.add(p)
                    try:
                        code = await p.wait()
                    finally:
                        live.discard(p)
                if code != 75:
                    return
                attempt += 1
                await asyncio.sleep(rng.uniform(0, min(60.0, 1.0 * 2 ** (attempt - 1))))

        try:
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), stop)
        except TimeoutError:
            for p in live:  # stopped: end the requests still in flight
                if p.returncode is None:
                    p.kill()
            for p in list(live):
                await p.wait()
            return False
        return True

    return 0 if asyncio.run(main()) else 3


# -- the trajectory --------------------------------------------------------------------

BARS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float], top: float) -> str:
    """One character per value, ``top`` the full bar; '·' for zero."""
    out = []
    for v in values:
        if v <= 0 or top <= 0:
            out.append("·")
        else:
            out.append(BARS[min(len(BARS) - 1, int(v / top * len(BARS) - 1e-9))])
    return "".join(out)


def limits_at(
    r: Result, initial: tuple[float, int | None]
) -> Callable[[float], tuple[float, int | None]]:
    """The pool's (rate, concurrency) in effect at a wall-clock time."""

    def at(t: float) -> tuple[float, int | None]:
        rate, conc = initial
        for when, rt, c, _, _ in r.changes:
            if when > t:
                break
            rate, conc = rt, c
        return rate, conc

    return at


def pool_initial(scn: Scenario) -> tuple[float, int | None]:
    rate = scn.pool.get("rate")
    return (float(str(rate).split("/")[0]) if rate else 0.0), scn.pool.get("concurrency")


@dataclass
class Bins:
    """Per-second (or per ``width``-second) values from a run's start."""

    width: float
    served: list[float]
    throttled: list[float]
    rate: list[float]
    conc: list[float]
    busy: list[float]  # most requests in progress at the server
    paused: list[bool]


def bins(scn: Scenario, r: Result, t0: float) -> Bins:
    span = max(1.0, (r.stats.last or t0) - t0)
    width = float(max(1, math.ceil(span / 100)))
    count = math.ceil(span / width)
    served = [0.0] * count
    throttled = [0.0] * count
    for times, out in ((r.stats.ok_times, served), (r.stats.throttle_times, throttled)):
        for t in times:
            k = min(count - 1, max(0, int((t - t0) / width)))
            out[k] += 1 / width
    busy = [0.0] * count
    level = 0.0
    for t, n in r.stats.in_progress:
        k = min(count - 1, max(0, int((t - t0) / width)))
        level = n
        busy[k] = max(busy[k], level)
    at = limits_at(r, pool_initial(scn))
    rate = [at(t0 + (k + 1) * width)[0] for k in range(count)]
    conc = [float(at(t0 + (k + 1) * width)[1] or 0) for k in range(count)]
    pauses = [(when, when + p) for when, _, _, p, _ in r.changes if p > 0]
    paused = [
        any(a < t0 + (k + 1) * width and b > t0 + k * width for a, b in pauses)
        for k in range(count)
    ]
    return Bins(width, served, throttled, rate, conc, busy, paused)


def draw(scn: Scenario, r: Result, table: bool) -> list[str]:
    """The trajectory of one contender, as the report draws it: one column per bin."""
    t0 = r.stats.first
    if t0 is None:
        return ["     (no request reached the server)"]
    b = bins(scn, r, t0)
    unit = f"{b.width:g} s" if b.width != 1 else "second"
    lines = [f"        trajectory, one column per {unit} from the first request:"]
    # One scale for the pool's rate and what was served: a little above the most
    # served in a second (a rate far above it, as configured, draws as a full bar).
    top = 1.25 * max([*b.served, 1.0])
    ruler = "".join("|" if k % 10 == 0 else " " for k in range(len(b.served)))
    lines.append(f"       {'t (|: 10 s)':12} {ruler}")
    if r.changes or r.name == "fleetrun":
        rate0, conc0 = pool_initial(scn)
        if any(b.rate):
            lines.append(
                f"       {'pool rate/s':12} {spark(b.rate, top)}  "
                f"configured {rate0:.4g}, min {min(b.rate):.4g}, end {b.rate[-1]:.4g}"
            )
        if any(b.conc):
            ctop = max([*b.conc, *b.busy, 1.0])
            lines.append(
                f"       {'pool conc':12} {spark(b.conc, ctop)}  "
                f"configured {conc0}, min {min(b.conc):.0f}, end {b.conc[-1]:.0f}"
            )
    lines.append(
        f"       {'served/s':12} {spark(b.served, top)}  max {max(b.served):.4g}, scale {top:.4g}/s"
    )
    lines.append(
        f"       {'429/s':12} {spark(b.throttled, max([*b.throttled, 1.0]))}  "
        f"max {max(b.throttled):.4g}"
    )
    if scn.kind == "concurrency":
        ctop = max([*b.conc, *b.busy, 1.0])
        lines.append(
            f"       {'in progress':12} {spark(b.busy, ctop)}  peak {r.stats.peak_in_progress}"
        )
    if any(b.paused):
        lines.append(f"       {'paused':12} {''.join('P' if p else '·' for p in b.paused)}")
    if r.changes:
        kinds: dict[str, int] = {}
        for *_, reason in r.changes:
            word = reason.split(":")[0].split(" (")[0].split(" ")[0]
            kinds[word] = kinds.get(word, 0) + 1
        lines.append(
            f"       {len(r.changes)} PoolChanged: "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        )
    if table:
        lines.append(
            f"       {'t':>5} {'rate':>8} {'conc':>5} {'served':>7} {'429':>5} {'busy':>5}"
        )
        for k in range(len(b.served)):
            lines.append(
                f"       {k * b.width:5.0f} {b.rate[k]:8.3g} {b.conc[k]:5.0f} "
                f"{b.served[k]:7.3g} {b.throttled[k]:5.3g} {b.busy[k]:5.0f}"
                + ("  paused" if b.paused[k] else "")
            )
    return lines


# -- verdicts ------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def recovery(scn: Scenario, r: Result) -> list[tuple[str, bool]]:
    """For each change of the server's limit: the pool's rate RECOVERY_S later,
    against what the server grants then, and when it first came within 10%."""
    out: list[tuple[str, bool]] = []
    changes = r.stats.limit.get("changes") or []
    at = limits_at(r, pool_initial(scn))
    ends = [t for t, _ in changes[1:]] + [math.inf]
    for (tc, granted), until in zip(changes, ends, strict=True):
        rate = at(tc + RECOVERY_S)[0]
        ok = abs(rate / granted - 1) <= 0.10 + 1e-9
        within = None
        for t in [tc] + [c[0] for c in r.changes if tc < c[0] < until]:
            if abs(at(t)[0] / granted - 1) <= 0.10 + 1e-9 and all(
                abs(c[1] / granted - 1) <= 0.10 + 1e-9
                for c in r.changes
                if t < c[0] < min(until, tc + 3 * RECOVERY_S)
            ):
                within = t - tc
                break
        came = (
            f"within 10% to stay after {within:.1f}s"
            if within is not None
            else f"not within 10% for {3 * RECOVERY_S:g}s on end: it probes for the old rate"
        )
        t_rel = tc - (r.stats.first or tc)
        out.append(
            (
                f"limit -> {granted:g}/s at {t_rel:.1f}s: pool rate {rate:.3g}/s "
                f"{RECOVERY_S:g}s later ({came})",
                ok,
            )
        )
    return out


def report(
    scn: Scenario, fr: Result | None, seed: Result | None, fixed: Result | None, table: bool
) -> list[tuple[str, bool]]:
    """Print one scenario's table, targets and trajectories; return its targets."""
    print(f"\n== {scn.key}: {scn.title}")
    print(f"   ideal makespan {scn.ideal:.2f}s")
    if fixed is not None:
        print(
            f"   fixed: fleetrun with the pool {scn.fixed}, not adaptive (what this machine does)"
        )
    print(
        f"   {'contender':10} {'makespan':>9} {'x ideal':>8} {'429s':>6} {'429/req':>8} "
        f"{'served':>7} {'wall':>7} {'failed':>6}"
    )
    for r in (fr, seed, fixed):
        if r is None:
            continue
        note = "  (stopped)" if r.stopped else ""
        print(
            f"   {r.name:10} {r.makespan:8.2f}s {r.makespan / scn.ideal:7.2f}x "
            f"{r.stats.throttled:6d} {r.share(scn.requests):7.1%} {r.stats.ok:7d} "
            f"{r.wall:6.1f}s {r.failed:6d}{note}"
        )
    targets: list[tuple[str, bool]] = []
    if fr is not None:
        done = fr.stats.ok >= scn.requests and not fr.stopped and fr.failed == 0
        targets.append((f"fleetrun served all {scn.requests} requests", done))
        if scn.makespan_target is not None:
            ratio = fr.makespan / scn.ideal
            targets.append(
                (
                    f"makespan {ratio:.2f}x ideal <= {scn.makespan_target:.2f}x",
                    ratio <= scn.makespan_target,
                )
            )
        share = fr.share(scn.requests)
        if scn.share_target is not None:
            targets.append(
                (
                    f"429s {share:.1%} of requests <= {scn.share_target:.0%}",
                    share <= scn.share_target,
                )
            )
        if scn.rate_floor is not None:
            rates = [c[1] for c in fr.changes if c[3] == 0 and not c[4].startswith("resumed")]
            low = min(rates, default=pool_initial(scn)[0])
            targets.append(
                (f"pool rate min {low:.3g}/s >= {scn.rate_floor:.3g}/s", low >= scn.rate_floor)
            )
        if scn.kind == "step":
            targets += recovery(scn, fr)
    if fr is not None and seed is not None:
        per_fr = fr.stats.throttled / max(1, fr.stats.ok)
        per_seed = seed.stats.throttled / max(1, seed.stats.ok)
        fewer = per_seed / max(per_fr, 1.0 / scn.requests)
        targets.append(
            (
                f"seed/fleetrun 429s per request served {fewer:.1f}x >= 5x "
                f"({per_seed:.2f} vs {per_fr:.3f})",
                fewer >= 5,
            )
        )
    for text, ok in targets:
        print(f"   {verdict(ok)}  {text}")
    for r in (fr, seed):
        if r is not None:
            print(f"   {r.name}:")
            for line in draw(scn, r, table and r.name == "fleetrun"):
                print(line)
    return targets


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (1 to 2 minutes)")
    ap.add_argument(
        "--only",
        default="",
        help="scenarios (comma-separated): bucket,concurrency,step,window,small,burst1,random",
    )
    ap.add_argument("--all", action="store_true", help="also the window and random scenarios")
    ap.add_argument(
        "--fixed", action="store_true", help="also fleetrun with the limit set, not adaptive"
    )
    ap.add_argument("--no-seed", action="store_true", help="run fleetrun only")
    ap.add_argument("--seed-limit", type=float, default=None, help="x ideal before the seed stops")
    ap.add_argument("--table", action="store_true", help="also a row per second of fleetrun")
    ap.add_argument(
        "--events", action="store_true", help="also every PoolChanged event of fleetrun"
    )
    ap.add_argument("--src", default=None, help="run the fleetrun in DIR/src (PYTHONPATH)")
    ap.add_argument("--seed-client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seed-stop", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.seed_client:
        sys.exit(seed_client(a.seed_client, a.requests, SEED_IN_FLIGHT, a.seed_stop))

    env = dict(os.environ)
    if a.src:
        env["PYTHONPATH"] = str(Path(a.src).resolve() / "src")
    seed_limit = a.seed_limit or (1.0 if a.quick else 3.0)
    wanted = [s for s in a.only.split(",") if s]
    chosen = [
        s for s in scenarios(a.quick) if (s.key in wanted if wanted else a.all or not s.extra)
    ]
    print(f"# bench_throttle{' --quick' if a.quick else ''}: {machine()} (load {load()})")
    if a.src:
        print(f"# fleetrun from {env['PYTHONPATH']}")
    summary: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="bench-throttle-") as tmp:
        work = Path(tmp)
        for scn in chosen:
            timeout = max(60.0, 6 * scn.ideal)
            fr = run_fleetrun(scn, work, env, timeout)
            seed = None if a.no_seed or not scn.seed else run_seed(scn, seed_limit * scn.ideal)
            fixed = None
            if a.fixed and scn.fixed is not None:
                fixed = run_fleetrun(scn, work, env, timeout, fixed=True)
            for text, ok in report(scn, fr, seed, fixed, a.table):
                summary.append((scn.key, text, ok))
            if a.events:
                print("   fleetrun's PoolChanged events (s from the first request, rate, reason):")
                t0 = fr.stats.first or 0.0
                for at, rate, _conc, _paused, why in fr.changes:
                    print(f"     {at - t0:7.2f} {rate:7.3g}  {why}")
            if fr.stopped or fr.failed:
                console = (work / f"fleetrun-{scn.key}" / "console.txt").read_text()
                print("   fleetrun's console (last lines):")
                for line in console.splitlines()[-10:]:
                    print("     " + line)
    missed = [s for s in summary if not s[2]]
    print(f"\n# load after: {load()}")
    print(
        f"# {len(summary) - len(missed)} PASS, {len(missed)} MISS"
        + ("".join(f"\n#   MISS {k}: {t}" for k, t, _ in missed))
    )


if __name__ == "__main__":
    main()
