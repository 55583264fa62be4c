"""Real throttling HTTP servers on 127.0.0.1, for tests and ``bench/bench_throttle.py``.

Each server enforces one kind of limit, as a cloud provider does, and answers
``429 Too Many Requests`` with a ``Retry-After`` when a request is over it:

- ``bucket``: a token bucket (``rate`` per second refill, ``burst`` saved
  up), as Azure Resource Manager meters writes. The Retry-After is the whole
  seconds until a token is back (at least 1). With ``penalty`` (the default,
  ARM's documented rule) a request sent before that delay has passed is not
  served either: it gets a new 429 and a new delay.
- ``step``: the same bucket whose rate changes at given times after the first
  request (``steps``: the limit halves at T1 and comes back at T2).
- ``concurrency``: at most ``limit`` requests in progress at once; a request
  over it gets a 429 at once with a fixed Retry-After (``retry_after``).
- ``window``: at most ``limit`` requests served in any ``window`` seconds
  (sliding); the Retry-After is the time until the oldest of them leaves the
  window.
- ``random``: a ``share`` of requests answered 429 at random (seeded), with
  no limit behind them (a provider whose 429s do not depend on the caller);
  the Retry-After is ``retry_after`` (0: no header).

The Retry-After is written in one of three ``form``\\ s: ``seconds``
(``Retry-After: 2``), ``date`` (the HTTP-date form, ``Retry-After: Wed, 21
Oct 2015 07:28:00 GMT``, rounded up to the next whole second so the delay it
gives is never shorter than the limit's), or ``none`` (no header).

A served request takes ``?sleep=S`` seconds (the handler sleeps while the
request counts as in progress; else the server's ``sleep``). ``GET /stats``
answers the server's record as JSON (``Stats``): the wall-clock time
(``time.time()``, as the journal's events) of every served request's start
and end and of every 429, the in-progress count after each change, and the
limit's own changes (``step``).

Two ways to run one:

- in a thread of this process: ``with ThrottleServer(limit=...) as s`` (the
  engine tests that need only a few requests);
- in its own process: ``with spawn("concurrency", limit=4) as s``, which runs
  ``python3 tests/engine/throttle_server.py --kind concurrency --limit 4``
  (it prints ``url http://127.0.0.1:PORT/`` and serves until SIGTERM or until
  its standard input closes, so it never outlives the test or bench that
  started it). The benchmark and ``test_limit_shapes.py`` use this: the engine
  under test runs its event loop in the test's process and spawns a process
  per request, and a server thread there would share the interpreter lock
  with it. Then the limit's timing (when a token comes back, how many
  requests are in progress) would depend on how busy the engine is, and the
  server's threads would slow the engine being measured.

``client_command(url)`` is the shell command a task runs: curl, exit 75 and
the ``Retry-After: ...`` line on a 429, exit 0 on a 200.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import math
import random
import select
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

Form = Literal["seconds", "date", "none"]
FORMS: tuple[Form, ...] = ("seconds", "date", "none")
KINDS = ("bucket", "step", "concurrency", "window", "random")


# -- the limits ---------------------------------------------------------------------
#
# ``admit(now, in_progress)``: None when a request arriving at ``now`` is served
# (``in_progress`` requests are being served already); else the Retry-After in
# seconds (0: a 429 without one). The server calls it under its lock.


class Limit(Protocol):
    """One kind of provider limit (see the module doc)."""

    def admit(self, now: float, in_progress: int) -> float | None: ...

    def info(self) -> dict[str, Any]: ...


class TokenBucket:
    """``rate`` per second, ``burst`` saved up; ``steps``: (seconds after the
    first request, new rate) changes of the rate; ``penalty``: a request during
    a Retry-After delay earns a new delay."""

    def __init__(
        self,
        rate: float,
        burst: int,
        penalty: bool = True,
        steps: tuple[tuple[float, float], ...] = (),
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.penalty = penalty
        self.steps = tuple(sorted(steps))
        self._tokens = float(burst)
        self._t0: float | None = None
        self._last = 0.0
        self._blocked_until = -math.inf

    def rate_at(self, t: float) -> float:
        """The rate in effect at ``t`` (the base rate before the first request)."""
        r = self.rate
        if self._t0 is not None:
            for after, new in self.steps:
                if t >= self._t0 + after:
                    r = new
        return r

    def _refill(self, now: float) -> None:
        if self._t0 is None:
            self._t0 = self._last = now
        t = self._last
        for after, _ in self.steps:  # integrate piecewise across rate changes
            b = self._t0 + after
            if t < b < now:
                self._tokens = min(self.burst, self._tokens + (b - t) * self.rate_at(t))
                t = b
        if now > t:
            self._tokens = min(self.burst, self._tokens + (now - t) * self.rate_at(t))
        self._last = max(self._last, now)

    def admit(self, now: float, in_progress: int) -> float | None:
        """See ``Limit``."""
        self._refill(now)
        if now >= self._blocked_until and self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        wait = float(max(1, math.ceil((1.0 - self._tokens) / self.rate_at(now))))
        if self.penalty:
            # Sent before the delay ended (or the bucket is empty): a new delay.
            self._blocked_until = now + wait
        return wait

    def info(self) -> dict[str, Any]:
        """What the limit is, and when its rate changed (wall-clock times)."""
        t0 = self._t0
        return {
            "rate": self.rate,
            "burst": self.burst,
            "penalty": self.penalty,
            "t0": t0,
            "changes": [] if t0 is None else [[t0 + a, r] for a, r in self.steps],
        }


class ConcurrencyLimit:
    """At most ``limit`` requests in progress; over it a 429 with ``retry_after``."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after

    def admit(self, now: float, in_progress: int) -> float | None:
        """See ``Limit``."""
        return None if in_progress < self.limit else self.retry_after

    def info(self) -> dict[str, Any]:
        """What the limit is."""
        return {"limit": self.limit, "retry_after": self.retry_after}


class SlidingWindow:
    """At most ``limit`` requests served in any ``window`` seconds."""

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self.limit = limit
        self.window = window
        self._served: deque[float] = deque()

    def admit(self, now: float, in_progress: int) -> float | None:
        """See ``Limit``."""
        while self._served and self._served[0] <= now - self.window:
            self._served.popleft()
        if len(self._served) < self.limit:
            self._served.append(now)
            return None
        return float(max(1, math.ceil(self._served[0] + self.window - now)))

    def info(self) -> dict[str, Any]:
        """What the limit is."""
        return {"limit": self.limit, "window": self.window}


class RandomThrottle:
    """A ``share`` of requests answered 429 at random (``seed``), whatever the rate;
    the others go to ``inner`` (None: served)."""

    def __init__(
        self,
        share: float,
        seed: int | None = None,
        retry_after: float = 0.0,
        inner: Limit | None = None,
    ) -> None:
        self.share = share
        self.retry_after = retry_after
        self.inner = inner
        self._rng = random.Random(seed)

    def admit(self, now: float, in_progress: int) -> float | None:
        """See ``Limit``."""
        if self._rng.random() < self.share:
            return self.retry_after
        return None if self.inner is None else self.inner.admit(now, in_progress)

    def info(self) -> dict[str, Any]:
        """What the limit is."""
        inner = None if self.inner is None else self.inner.info()
        return {"share": self.share, "retry_after": self.retry_after, "inner": inner}


def make_limit(kind: str, **p: Any) -> Limit:
    """The limit of ``kind`` (``KINDS``) with its parameters (see the module doc)."""
    if kind == "bucket":
        return TokenBucket(float(p["rate"]), int(p.get("burst", 1)), p.get("penalty", True))
    if kind == "step":
        steps = tuple((float(a), float(r)) for a, r in p["steps"])
        return TokenBucket(float(p["rate"]), int(p.get("burst", 1)), p.get("penalty", True), steps)
    if kind == "concurrency":
        return ConcurrencyLimit(int(p["limit"]), float(p.get("retry_after", 1.0)))
    if kind == "window":
        return SlidingWindow(int(p["limit"]), float(p.get("window", 10.0)))
    if kind == "random":
        return RandomThrottle(float(p["share"]), p.get("seed"), float(p.get("retry_after", 0.0)))
    raise ValueError(f"unknown limit kind {kind!r}: one of {', '.join(KINDS)}")


def retry_after_header(wait: float, now: float, form: Form) -> str | None:
    """The Retry-After value for a delay of ``wait`` seconds at wall time ``now``
    in ``form``; None: no header."""
    if form == "none" or wait <= 0:
        return None
    if form == "date":
        # Whole seconds only: round up, so the date never asks for less than ``wait``.
        return email.utils.formatdate(math.ceil(now + wait), usegmt=True)
    return str(max(1, math.ceil(wait)))


# -- the record -------------------------------------------------------------------


@dataclass
class Stats:
    """What a server answered. Times are wall-clock seconds (``time.time()``).

    ``ok_times``/``ok_ends``: start and end of each served request (in order of
    start; an end is None while it is in progress); ``throttle_times``: each
    429; ``in_progress``: ``[time, count]`` after each change; ``limit``: the
    limit's ``info()``.
    """

    kind: str = ""
    ok_times: list[float] = field(default_factory=list)
    ok_ends: list[float | None] = field(default_factory=list)
    throttle_times: list[float] = field(default_factory=list)
    in_progress: list[list[float]] = field(default_factory=list)
    peak_in_progress: int = 0
    limit: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Requests served."""
        return len(self.ok_times)

    @property
    def throttled(self) -> int:
        """Requests answered 429."""
        return len(self.throttle_times)

    @property
    def first(self) -> float | None:
        """When the first request arrived (None: none did)."""
        times = self.ok_times[:1] + sorted(self.throttle_times)[:1]
        return min(times) if times else None

    @property
    def last_end(self) -> float | None:
        """When the last served request ended (None: none did)."""
        ends = [e for e in self.ok_ends if e is not None]
        return max(ends) if ends else None

    @property
    def last(self) -> float | None:
        """When the server last answered anything (None: never)."""
        times = [e for e in self.ok_ends if e is not None] + self.throttle_times[-1:]
        return max(times) if times else None

    def makespan(self) -> float:
        """From the first request's arrival to the last served request's end."""
        first, last = self.first, self.last_end
        return 0.0 if first is None or last is None else last - first

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        """The record ``GET /stats`` answered."""
        return cls(**data)


# -- serving ----------------------------------------------------------------------


class ThrottleServer:
    """A throttling HTTP server in a thread of this process: a context manager
    that starts it and stops it (bounded: the thread is a daemon and
    ``shutdown`` ends the serving loop).

    ``ThrottleServer(rate, burst, noise=0.0, seed=None)`` is a ``bucket`` (with a
    share ``noise`` of random 429s without a Retry-After in front of it);
    ``ThrottleServer(limit=...)`` enforces any ``Limit``.
    """

    def __init__(
        self,
        rate: float | None = None,
        burst: int = 1,
        noise: float = 0.0,
        seed: int | None = None,
        *,
        limit: Limit | None = None,
        kind: str = "",
        form: Form = "seconds",
        sleep: float = 0.0,
    ) -> None:
        if limit is None:
            if rate is None:
                raise ValueError("ThrottleServer needs a rate or a limit")
            limit = TokenBucket(rate, burst)
            kind = kind or "bucket"
            if noise:
                limit = RandomThrottle(noise, seed, inner=limit)
        self.limit = limit
        self.form: Form = form
        self.sleep = sleep
        self._lock = threading.Lock()
        self._stats = Stats(kind=kind or type(limit).__name__)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the record (thread-safe copies) ------------------------------------------

    def stats(self) -> Stats:
        """A copy of what the server answered so far."""
        with self._lock:
            s = self._stats
            return Stats(
                kind=s.kind,
                ok_times=list(s.ok_times),
                ok_ends=list(s.ok_ends),
                throttle_times=list(s.throttle_times),
                in_progress=[list(x) for x in s.in_progress],
                peak_in_progress=s.peak_in_progress,
                limit=self.limit.info(),
            )

    @property
    def ok(self) -> int:
        """Requests served so far."""
        return self._stats.ok

    @property
    def throttled(self) -> int:
        """Requests answered 429 so far."""
        return self._stats.throttled

    @property
    def ok_times(self) -> list[float]:
        """When each served request arrived."""
        return list(self._stats.ok_times)

    @property
    def throttle_times(self) -> list[float]:
        """When each 429 was answered."""
        return list(self._stats.throttle_times)

    # -- one request --------------------------------------------------------------

    def _begin(self, now: float) -> tuple[int, float | None]:
        """Admit a request: (its index among served ones, -1 if refused; Retry-After)."""
        with self._lock:
            s = self._stats
            busy = len(s.in_progress) and int(s.in_progress[-1][1])
            wait = self.limit.admit(now, busy)
            if wait is not None:
                s.throttle_times.append(now)
                return -1, wait
            s.ok_times.append(now)
            s.ok_ends.append(None)
            s.in_progress.append([now, busy + 1])
            s.peak_in_progress = max(s.peak_in_progress, busy + 1)
            return len(s.ok_times) - 1, None

    def _end(self, index: int, now: float) -> None:
        with self._lock:
            s = self._stats
            s.ok_ends[index] = now
            s.in_progress.append([now, int(s.in_progress[-1][1]) - 1])

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        if parts.path == "/stats":
            body = json.dumps(asdict(self.stats())).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            _finish(h, body)
            return
        now = time.time()
        index, wait = self._begin(now)
        if wait is not None:
            h.send_response(429, "Too Many Requests")
            value = retry_after_header(wait, now, self.form)
            if value is not None:
                h.send_header("Retry-After", value)
            _finish(h, b"Too Many Requests\n")
            return
        try:
            query = parse_qs(parts.query)
            sleep = float(query["sleep"][0]) if "sleep" in query else self.sleep
            if sleep > 0:
                time.sleep(sleep)
            h.send_response(200)
            _finish(h, b"ok\n")
        finally:
            self._end(index, time.time())

    @property
    def url(self) -> str:
        """The server's base URL."""
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> ThrottleServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.request_queue_size = 1024
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._httpd is not None
        assert self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _finish(h: BaseHTTPRequestHandler, body: bytes) -> None:
    h.send_header("Content-Length", str(len(body)))
    try:
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its own timeout): nothing to answer


# -- in its own process -----------------------------------------------------------


class RemoteServer:
    """A server running in its own process (``spawn``)."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stats(self) -> Stats:
        """What the server answered so far (``GET /stats``)."""
        with urllib.request.urlopen(self.url + "stats", timeout=30) as r:
            return Stats.from_json(json.load(r))


@contextlib.contextmanager
def spawn(
    kind: str, form: Form = "seconds", sleep: float = 0.0, **params: Any
) -> Iterator[RemoteServer]:
    """Run a ``kind`` server (``make_limit``'s parameters) in its own process;
    stop it (SIGTERM, then SIGKILL) on exit."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--kind", kind, "--form", form]
    argv += ["--sleep", str(sleep)]
    for name, value in params.items():
        if name == "steps":
            value = ",".join(f"{a:g}:{r:g}" for a, r in value)
        elif name == "penalty":
            if not value:
                argv.append("--no-penalty")
            continue
        argv += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("url "):
            raise RuntimeError(f"throttle server did not start: {argv} said {line!r}")
        yield RemoteServer(proc, line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A throttling HTTP server on 127.0.0.1.")
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--form", choices=FORMS, default="seconds", help="Retry-After form")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds a served request takes")
    ap.add_argument("--rate", type=float, help="bucket, step: tokens per second")
    ap.add_argument("--burst", type=int, default=1, help="bucket, step: tokens saved up")
    ap.add_argument("--no-penalty", action="store_true", help="bucket, step: no new delay")
    ap.add_argument("--steps", default="", help="step: AFTER:RATE,... (seconds after 1st request)")
    ap.add_argument("--limit", type=int, help="concurrency: at once; window: per window")
    ap.add_argument("--window", type=float, default=10.0, help="window: its length (s)")
    ap.add_argument("--share", type=float, help="random: share of requests answered 429")
    ap.add_argument("--seed", type=int, default=None, help="random: seed")
    ap.add_argument("--retry-after", type=float, help="concurrency, random: its Retry-After")
    a = ap.parse_args(argv)
    params: dict[str, Any] = {
        "rate": a.rate,
        "burst": a.burst,
        "penalty": not a.no_penalty,
        "limit": a.limit,
        "window": a.window,
        "share": a.share,
        "seed": a.seed,
    }
    if a.retry_after is not None:
        params["retry_after"] = a.retry_after
    if a.steps:
        params["steps"] = [tuple(map(float, s.split(":"))) for s in a.steps.split(",")]
    try:
        limit = make_limit(a.kind, **params)
    except (KeyError, TypeError, ValueError) as e:
        ap.error(f"--kind {a.kind}: missing or bad parameter ({e})")
    with ThrottleServer(limit=limit, kind=a.kind, form=a.form, sleep=a.sleep) as server:
        print("url", server.url, flush=True)
        # Serve until stdin closes (the parent died or is done) or SIGTERM.
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()


def client_command(url: str) -> str:
    """A task's command: GET ``url``; on 429 print the status and the Retry-After
    line and exit 75 (EX_TEMPFAIL); on another error exit 1."""
    return (
        f"h=$(curl -s -m 10 -o /dev/null -D - {shlex.quote(url)}) || exit 1; "
        'case "$h" in '
        '"HTTP/1.0 200"*|"HTTP/1.1 200"*) exit 0;; '
        '*" 429 "*) echo "HTTP 429 Too Many Requests"; '
        'printf "%s\\n" "$h" | tr -d "\\r" | grep -i "^retry-after:"; exit 75;; '
        "esac; exit 1"
    )


if __name__ == "__main__":
    _main()
