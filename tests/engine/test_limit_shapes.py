"""Adaptive pools against each shape of provider limit, end to end.

Each end-to-end test starts a real server on 127.0.0.1 in its own process
(``throttle_server.spawn``: a concurrency limit, random 429s, a token bucket
answering Retry-After in the HTTP-date form), runs ``fleetrun apply`` as a user
does (``python -m fleetrun``, its own state directory) on a plan whose tasks
call the server with real ``curl`` processes, and reads what happened from
the run's journal (``PoolChanged`` events, attempts) and the server's record.
Counts, orders and bounds only: nothing here depends on how fast the machine is.

The limits themselves are checked first, on virtual time (no server, no sleep).
"""

from __future__ import annotations

import email.utils
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from throttle_server import (
    ConcurrencyLimit,
    RandomThrottle,
    SlidingWindow,
    Stats,
    TokenBucket,
    client_command,
    retry_after_header,
    spawn,
)

from fleetrun.state import AttemptRecord, JournalReader

# -- the limits, on virtual time ------------------------------------------------------


def test_bucket_penalty_rule_gives_a_new_delay_to_a_request_during_the_delay():
    b = TokenBucket(rate=2.0, burst=2)
    assert b.admit(0.0, 0) is None
    assert b.admit(0.0, 0) is None
    assert b.admit(0.1, 0) == 1.0  # empty: Retry-After 1 s
    # A token is back at 0.5 s, but 0.6 s is inside the delay: a new 429 and delay.
    assert b.admit(0.6, 0) == 1.0
    assert b.admit(1.3, 0) == 1.0  # still inside the delay given at 0.6 s
    assert b.admit(2.4, 0) is None  # after it: served
    free = TokenBucket(rate=2.0, burst=1, penalty=False)
    assert free.admit(0.0, 0) is None
    assert free.admit(0.1, 0) == 1.0
    assert free.admit(0.6, 0) is None  # no penalty: the token is back at 0.5 s


def test_step_bucket_changes_its_rate_after_the_first_request():
    b = TokenBucket(rate=10.0, burst=1, penalty=False, steps=((1.0, 5.0), (3.0, 10.0)))
    served = 0
    t = 100.0  # the first request's time is the schedule's zero
    while t < 104.0:
        served += b.admit(t, 0) is None
        t += 0.01
    # 1 + 10/s for 1 s + 5/s for 2 s + 10/s for 1 s = 31, give or take the step.
    assert 29 <= served <= 32
    assert [r for _, r in b.info()["changes"]] == [5.0, 10.0]
    assert b.info()["changes"][0][0] == pytest.approx(101.0)
    assert b.rate_at(101.5) == 5.0
    assert b.rate_at(103.5) == 10.0


def test_concurrency_window_and_random_limits():
    c = ConcurrencyLimit(3, retry_after=2.0)
    assert [c.admit(0.0, n) for n in range(5)] == [None, None, None, 2.0, 2.0]
    w = SlidingWindow(3, window=10.0)
    assert [w.admit(t, 0) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert w.admit(3.0, 0) == 7.0  # the request at 0 s leaves the window at 10 s
    assert w.admit(9.5, 0) == 1.0
    assert w.admit(10.0, 0) is None
    assert w.admit(10.5, 0) == 1.0  # 1, 2 and 10 s are in (0.5, 10.5]
    r = RandomThrottle(0.2, seed=3)
    answers = [r.admit(float(t), 0) for t in range(2000)]
    assert 300 <= sum(a is not None for a in answers) <= 500
    assert all(a in (None, 0.0) for a in answers)  # no Retry-After by default


def test_retry_after_forms():
    now = 1_700_000_000.25
    assert retry_after_header(2.0, now, "seconds") == "2"
    assert retry_after_header(1.2, now, "seconds") == "2"
    assert retry_after_header(1.0, now, "none") is None
    assert retry_after_header(0.0, now, "seconds") is None
    date = retry_after_header(1.0, now, "date")
    assert date is not None
    assert date.endswith(" GMT")
    # Rounded up to a whole second, never less than asked for.
    when = email.utils.parsedate_to_datetime(date).timestamp()
    assert now + 1.0 <= when < now + 2.0


# -- end to end: fleetrun apply, real curl, the journal ----------------------------------


@dataclass
class Applied:
    """One ``fleetrun apply`` against one server: what the journal and the server say."""

    code: int
    changes: list[dict[str, Any]]  # PoolChanged, in order
    attempts: list[AttemptRecord]
    stats: Stats

    def limits(self) -> list[dict[str, Any]]:
        """The changes of effective limits (not the pauses and their ends)."""
        return [
            c for c in self.changes if c["paused"] == 0 and not c["reason"].startswith("resumed")
        ]


def apply(
    tmp_path: Path,
    server: Any,
    requests: int,
    pool: dict[str, Any],
    query: str = "",
    retry: dict[str, Any] | None = None,
) -> Applied:
    """Run ``fleetrun apply`` on one task of ``requests`` instances calling ``server``."""
    assert shutil.which("curl"), "curl is not on PATH: the tasks call the server with it"
    plan = {
        "name": "limits",
        "targets": {f"r{i}": {} for i in range(requests)},
        "pools": {"api": pool},
        "tasks": {
            "call": {
                "for_each": "all",
                "pools": ["api"],
                "retry": retry or {"attempts": 30, "backoff": "100ms", "on": {"exit": [75]}},
                "run": client_command(server.url + query),
            }
        },
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False, width=1000))
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "fleetrun", "apply", str(path), "--plain", "-q"]
    proc = subprocess.Popen(
        [*argv, "--state-dir", str(state), "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and every request it started
        out, _ = proc.communicate()
        pytest.fail(f"fleetrun apply did not finish in 90 s:\n{out[-2000:]}")
    assert proc.returncode == 0, out[-2000:]
    with JournalReader(state) as j:
        run = j.run()
        changes = j.event_data(run.id, "PoolChanged")
        attempts = j.attempts(run.id)
    return Applied(proc.returncode, changes, attempts, server.stats())


@pytest.mark.slow
def test_a_concurrency_limit_settles_the_pools_concurrency_at_it(tmp_path):
    # The provider serves 3 requests at once (0.2 s each) and answers 429, with
    # no Retry-After, beyond; the pool may have 16 in flight.
    limit = 3
    with spawn("concurrency", limit=limit, retry_after=0) as server:
        ran = apply(tmp_path, server, 60, {"concurrency": 16, "adaptive": True}, query="?sleep=0.2")
    assert ran.stats.ok == 60
    assert ran.stats.throttled > 0  # the pool did start above the limit
    limits = ran.limits()
    assert limits, "the pool never changed its concurrency"
    assert limits[0]["concurrency"] < 16
    assert any(c["reason"].startswith("throttled") for c in limits)
    # Where it ended: at the server's limit, give or take a probe.
    final = limits[-1]["concurrency"]
    assert limit - 1 <= final <= limit + 1, (
        f"the pool's concurrency ended at {final}, the server allows {limit}; "
        f"{ran.stats.throttled} of {len(ran.attempts)} attempts got 429; changes: "
        + ", ".join(f"{c['concurrency']} ({c['reason']})" for c in limits[-8:])
    )


@pytest.mark.slow
def test_random_throttles_keep_the_pool_near_its_configured_rate(tmp_path):
    """20% of requests answered 429 at random, whatever the rate: nothing to adapt
    to. A first throttle may cost one decrease before the pool can tell noise
    from a limit; over the run the pool keeps (time-weighted) at least 90% of
    its configured rate and ends there."""
    configured = 40.0
    n = 120
    with spawn("random", share=0.2, seed=7) as server:
        ran = apply(tmp_path, server, n, {"rate": f"{configured:g}/s", "adaptive": True})
    assert ran.stats.ok == n
    assert ran.stats.throttled >= 15  # the throttles were there to mislead the pool
    assert all(not c["reason"].startswith("paused") for c in ran.changes)  # no Retry-After
    limits = ran.limits()
    starts = sorted(a.started_at for a in ran.attempts)
    begin, end = starts[0], max(a.ended_at or starts[-1] for a in ran.attempts)
    # The rate in effect, weighted by how long it was in effect.
    steps = [(begin, configured)] + [(max(begin, c["at"]), c["rate"]) for c in limits]
    total = sum(
        rate * ((steps[i + 1][0] if i + 1 < len(steps) else end) - at)
        for i, (at, rate) in enumerate(steps)
    )
    mean = total / (end - begin)
    final = limits[-1]["rate"] if limits else configured
    detail = (
        f"mean rate {mean:.3g}/s, final {final:.3g}/s of {configured:g}/s after "
        f"{ran.stats.throttled} random 429s; changes: "
        + ", ".join(f"{c['rate']:.3g} ({c['reason']})" for c in limits[:8])
    )
    assert mean >= 0.9 * configured - 1e-6, detail
    assert final >= 0.9 * configured - 1e-6, detail
    assert min((c["rate"] for c in limits), default=configured) >= 0.5 * configured, detail


@pytest.mark.slow
def test_retry_after_in_http_date_form_pauses_the_pool(tmp_path):
    # 2 requests/s, burst 2, and every 429 says when to come back as an HTTP-date.
    with spawn("bucket", form="date", rate=2.0, burst=2) as server:
        ran = apply(tmp_path, server, 8, {"rate": "50/s", "burst": 8, "adaptive": True})
    assert ran.stats.ok == 8
    assert ran.stats.throttled > 0
    pauses = [c for c in ran.changes if c["paused"] > 0]
    assert pauses, (
        f"{ran.stats.throttled} 429s with 'Retry-After: <HTTP-date>' and no pause: "
        + ", ".join(c["reason"] for c in ran.changes[:6])
    )
    assert all("Retry-After" in c["reason"] for c in pauses)
    # The date is read as a delay from now (at most the 2 s the whole seconds round to).
    assert all(0 < c["paused"] <= 3 for c in pauses), [c["paused"] for c in pauses]
    assert any(c["reason"].startswith("resumed") for c in ran.changes)
    # Nothing of the pool started inside a pause (the journal's attempt starts).
    # The journal records a start once its process exists, which on a busy
    # machine can come a few hundred ms after the pool admitted it (before
    # the pause): those are not starts inside the pause.
    spawn_delay = 0.3
    starts = sorted(a.started_at for a in ran.attempts)
    for p in pauses:
        inside = [s for s in starts if p["at"] + spawn_delay < s < p["at"] + p["paused"] - 0.05]
        assert inside == [], f"started during a {p['paused']}s pause"


@pytest.mark.slow
def test_a_pause_of_the_pools_own_is_never_said_to_be_for_a_retry_after(tmp_path):
    """A provider that throttles most requests and never says a Retry-After: the
    pool backs off by itself. Its pauses, and the waits they cause, are named as
    the pool's own back-off, not as a Retry-After the provider never sent."""
    from fleetrun.engine import BACKOFF_PAUSED, BACKOFF_WHY

    with spawn("bucket", form="none", rate=10.0, burst=2) as server:
        ran = apply(tmp_path, server, 20, {"rate": "50/s", "concurrency": 50, "adaptive": True})
    assert ran.stats.ok == 20
    pauses = [c for c in ran.changes if c["paused"] > 0]
    assert pauses, ", ".join(c["reason"] for c in ran.changes[:8])
    assert all(c["reason"].endswith(BACKOFF_WHY) for c in pauses), [c["reason"] for c in pauses]
    ends = [c["reason"] for c in ran.changes if c["reason"].startswith("resumed")]
    assert ends
    assert set(ends) == {"resumed: the back-off is over"}
    assert not any("Retry-After" in (a.queued_reason or "") for a in ran.attempts)
    assert any(a.queued_reason == f"pool api {BACKOFF_PAUSED}" for a in ran.attempts)
