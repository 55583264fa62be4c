"""A real throttling HTTP server on 127.0.0.1, for tests and ``bench/bench_throttle.py``.

It meters requests as Azure Resource Manager does (a token bucket: ``burst``
saved up, ``rate`` per second refill; ARM writes are 200 / 10 per s, scaled
down here) and answers ``429 Too Many Requests`` with ``Retry-After: N``
(whole seconds until a token is back, at least 1) when the bucket is empty.
A request sent before that delay has passed is not served either: it gets a
new 429 and a new delay. ``noise`` answers that share of requests 429 at
random, without a Retry-After, whatever the rate (a provider whose 429s do
not depend on the caller's rate).

``client_command(url)`` is the shell command a task runs: curl, exit 75 and
the ``Retry-After: N`` line on a 429, exit 0 on a 200.
"""

from __future__ import annotations

import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class ThrottleServer:
    """The server, its bucket and what it answered; a context manager that
    starts it in a thread and stops it (bounded: the thread is a daemon and
    ``shutdown`` ends the serving loop)."""

    def __init__(
        self, rate: float, burst: int, noise: float = 0.0, seed: int | None = None
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.noise = noise
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._blocked_until = 0.0
        self.ok = 0
        self.throttled = 0
        self.ok_times: list[float] = []  # monotonic time of every served request
        self.throttle_times: list[float] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the bucket -----------------------------------------------------------------

    def admit(self, now: float) -> int | None:
        """None when a request at ``now`` is served; else the Retry-After in seconds
        (0: a random 429 without one)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self.noise and self._rng.random() < self.noise:
                self.throttled += 1
                self.throttle_times.append(now)
                return 0
            if now >= self._blocked_until and self._tokens >= 1.0:
                self._tokens -= 1.0
                self.ok += 1
                self.ok_times.append(now)
                return None
            wait = max(1, math.ceil((1.0 - self._tokens) / self.rate))
            # Sent before the delay ended (or the bucket is empty): a new delay.
            self._blocked_until = now + wait
            self.throttled += 1
            self.throttle_times.append(now)
            return wait

    # -- serving --------------------------------------------------------------------

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
                wait = server.admit(time.monotonic())
                if wait is None:
                    body = b"ok\n"
                    self.send_response(200)
                else:
                    body = b"Too Many Requests\n"
                    self.send_response(429, "Too Many Requests")
                    if wait:
                        self.send_header("Retry-After", str(wait))
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its own timeout): nothing to answer

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


def client_command(url: str) -> str:
    """A task's command: GET ``url``; on 429 print the status and the Retry-After
    line and exit 75 (EX_TEMPFAIL); on another error exit 1."""
    return (
        f"h=$(curl -s -m 10 -o /dev/null -D - {url}) || exit 1; "
        'case "$h" in '
        '"HTTP/1.0 200"*|"HTTP/1.1 200"*) exit 0;; '
        '*" 429 "*) echo "HTTP 429 Too Many Requests"; '
        'printf "%s\\n" "$h" | tr -d "\\r" | grep -i "^retry-after:"; exit 75;; '
        "esac; exit 1"
    )
