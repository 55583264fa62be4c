"""Throttle signals, Retry-After pauses and adaptive pools, against a real HTTP server
on 127.0.0.1 that enforces a token bucket (``throttle_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from throttle_server import ThrottleServer, client_command

from fleetrun.engine import AttemptEnded, AttemptStarted, PoolChanged
from fleetrun.engine.testing import graph, task
from fleetrun.errors import PlanError
from fleetrun.plan import AdaptiveSettings, Pool, RetryPolicy, ThrottleRule, load_plan_text

RULE = ThrottleRule(
    exit=frozenset({75}), output=(r"\b4[0-9]9\b",), retry_after=r"Retry-After: (\d+)"
)
REGIONS = [f"r{i}" for i in range(8)]


def _one_pool(pool: Pool) -> tuple[Any, list[str]]:
    """``Limits`` over one task in ``pool``, and the reasons its events said."""
    from fleetrun.engine._limits import Limits

    told: list[str] = []
    g = graph([task("t", "x", pools=["api"], targets=["a"])], pools=[pool])
    return Limits(g, 0.0, lambda name, rate, cap, paused, reason: told.append(reason)), told


@pytest.fixture
def server() -> Iterator[ThrottleServer]:
    """A server granting 2 requests/s with a burst of 2 (bounded: stopped on exit)."""
    with ThrottleServer(rate=2.0, burst=2) as s:
        yield s


def test_throttle_signal_lowers_limits_plain_failure_does_not(runner, tmp_path):
    retry = RetryPolicy(attempts=2, backoff=0.01, any_failure=True)
    # A plain failure (disk full, exit 28) is retried but never touches the pool.
    plain = tmp_path / "plain"
    g = graph(
        [
            task(
                "t", f"test -e {plain} || {{ touch {plain}; exit 28; }}", retry=retry, pools=["api"]
            )
        ],
        pools=[Pool("api", rate=20.0, concurrency=4, adaptive=AdaptiveSettings(), throttle=RULE)],
    )
    ran = runner(g)
    assert [(e.outcome, e.throttled) for e in ran.of(AttemptEnded)] == [
        ("retrying", False),
        ("succeeded", False),
    ]
    assert ran.of(PoolChanged) == []

    # Exit 75 is a throttle signal: the pool's rate comes down, with the reason.
    marker = tmp_path / "throttled"
    g = graph(
        [task("t", f"test -e {marker} || {{ touch {marker}; exit 75; }}", pools=["api"])],
        pools=[Pool("api", rate=20.0, concurrency=4, adaptive=AdaptiveSettings(), throttle=RULE)],
    )
    ran = runner(g)
    ends = ran.of(AttemptEnded)
    # No retry policy: a throttled attempt is retried all the same.
    assert [(e.outcome, e.throttled) for e in ends] == [("retrying", True), ("succeeded", False)]
    assert ends[0].retry_reason == "exit 75"
    changes = ran.of(PoolChanged)
    assert len(changes) == 1
    assert changes[0].rate == pytest.approx(18.0)
    assert changes[0].reason.startswith("throttled")


def test_output_patterns_are_regexes(runner, tmp_path):
    marker = tmp_path / "m"
    g = graph(
        [
            task(
                "t",
                f"test -e {marker} || {{ touch {marker}; echo 'HTTP 429'; exit 1; }}",
                pools=["api"],
            )
        ],
        pools=[Pool("api", rate=20.0, throttle=RULE)],
    )
    ran = runner(g)
    ends = ran.of(AttemptEnded)
    assert ends[0].throttled
    assert ends[0].retry_reason == r"output matched '\b4[0-9]9\b'"
    assert ran.of(PoolChanged) == []  # not adaptive: the limits stay


def test_retry_after_pauses_every_start_of_the_pool(runner, server):
    # 8 regions through a pool allowing 50/s; the server grants 2/s (burst 2)
    # and answers 429 + Retry-After when empty. Not adaptive: only the pauses act.
    g = graph(
        [task("call", client_command(server.url), targets=REGIONS, pools=["api"])],
        pools=[Pool("api", rate=50.0, burst=8, throttle=RULE)],
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "succeeded"
    pauses = [e for e in ran.of(PoolChanged) if e.paused > 0]
    resumes = [e for e in ran.of(PoolChanged) if e.reason.startswith("resumed")]
    assert pauses
    assert resumes
    assert all(p.reason.startswith("paused") and "Retry-After" in p.reason for p in pauses)
    starts = sorted(e.at for e in ran.of(AttemptStarted))
    for p in pauses:
        inside = [s for s in starts if p.at + 0.02 < s < p.at + p.paused - 0.05]
        assert inside == [], f"started during a {p.paused}s pause"
    # Every retry's shown delay covers the pause it waits for.
    for e in ran.of(AttemptEnded):
        if e.outcome == "retrying":
            assert e.throttled
            assert e.retry_delay is not None
            assert e.retry_delay >= 0.9  # Retry-After: 1 at least, whatever the backoff
    # The server's word: nothing was served faster than it grants (2/s + burst 2).
    span = server.ok_times[-1] - server.ok_times[0]
    assert server.ok == len(REGIONS)
    assert server.ok - 2 <= 2.0 * span + 1


def test_adaptive_pool_comes_down_to_the_server_rate(runner, server):
    g = graph(
        [task("call", client_command(server.url), targets=REGIONS, pools=["api"])],
        pools=[Pool("api", rate=20.0, adaptive=AdaptiveSettings(), throttle=RULE)],
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "succeeded"
    rates = [e.rate for e in ran.of(PoolChanged) if e.reason.startswith("throttled")]
    assert rates
    assert rates == sorted(rates, reverse=True)
    assert min(rates) >= 20.0 * AdaptiveSettings().floor
    assert min(rates) < 20.0


def test_throttle_regex_errors_name_the_column():
    text = "pools:\n  api: {rate: 1, throttle: {output: ['ok', 'a(b'], retry_after: 'x'}}\n"
    with pytest.raises(PlanError) as err:
        load_plan_text(text + "tasks: {t: {run: x}}\n")
    msg = str(err.value)
    assert "<string>:2:46: pools.api.throttle.output[1]: 'a(b' is not a valid regular" in msg
    assert "pools.api.throttle.retry_after: 'x' has no group for the delay" in msg


def test_throttle_and_adaptive_keys_load():
    p = load_plan_text(
        "pools:\n"
        "  api:\n"
        "    rate: 10/s\n"
        "    burst: 20\n"
        "    adaptive: {decrease: 0.8, floor: 0.2, verify: 6}\n"
        "    throttle: {exit: [75], output: ['429', 'Too Many'], retry_after: 'RA: (\\d+)',"
        " attempts: 9}\n"
        "tasks: {t: {run: x, pools: [api]}}\n"
    )
    pool = p.pools["api"]
    assert pool.adaptive == AdaptiveSettings(decrease=0.8, floor=0.2, verify=6)
    assert pool.throttle == ThrottleRule(frozenset({75}), ("429", "Too Many"), r"RA: (\d+)", 9)
    with pytest.raises(PlanError, match=r"decrease: 1\.5 is out of range|1\.5 is out of range"):
        load_plan_text("pools: {a: {rate: 1, adaptive: {decrease: 1.5}}}\ntasks: {t: {run: x}}")


@pytest.mark.parametrize(
    ("adaptive", "column", "message"),
    [
        # A huge verify window was accepted, then allocated (or overflowed) at the start.
        ("{verify: 1" + "0" * 30 + "}", 37, "must be at most 10000, got 1" + "0" * 30),
        ("{verify: 100000}", 37, "must be at most 10000, got 100000"),
        ("{hold: '5s'}", 35, "'5s' is not a number"),
        ("{probe: 250ms}", 36, "'250ms' is not a number"),
        ("{increase: true}", 39, "true is not a number"),
        ("{hold: -1}", 35, "-1 is out of range"),
    ],
)
def test_adaptive_numbers_are_checked_at_their_place(
    adaptive: str, column: int, message: str
) -> None:
    text = f"pools:\n  api: {{rate: 1, adaptive: {adaptive}}}\ntasks: {{t: {{run: x}}}}\n"
    with pytest.raises(PlanError) as err:
        load_plan_text(text, "p.yaml")
    problems = [str(d) for d in err.value.diagnostics]
    assert len(problems) == 1
    assert problems[0].startswith(f"p.yaml:2:{column}: pools.api.adaptive.")
    assert message in problems[0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # 10 s after "now" below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # a date in the past: no wait
        ("1000000000", 3600.0),  # capped
        ("1e9", None),  # not delay-seconds (digits): said, not read
        ("inf", None),
        ("nan", None),
        ("-5", None),
        ("garbage", None),
    ],
)
def test_retry_after_values(value: str, seconds: float | None) -> None:
    from email.utils import parsedate_to_datetime

    from fleetrun.engine._limits import retry_after_seconds

    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert retry_after_seconds(value, now) == seconds


def test_a_pause_empties_an_adaptive_pools_burst() -> None:
    """After a Retry-After pause the pool starts at its rate, not with the
    ``burst`` it saved up meanwhile: a provider that just refilled its own
    (smaller) bucket would throttle the burst at once."""
    from fleetrun.engine._limits import Limits, ThrottleMatch

    g = graph(
        [task("t", "x", pools=["api"], targets=[f"h{i}" for i in range(40)])],
        pools=[Pool("api", rate=10.0, burst=20, adaptive=AdaptiveSettings())],
    )
    limits = Limits(g, 0.0, lambda *a: None)
    sig = (0,)
    limits.throttled((ThrottleMatch(0, "exit 75", 1.0),), 0.0, 0.5)
    assert limits.wait_time(sig, 1.0) > 0  # paused until 1.5
    rate = limits.rate("api")
    assert rate is not None
    assert limits.wait_time(sig, 1.5) == pytest.approx(1 / rate)  # a token at the rate
    starts = 0
    now = 1.5 + 1 / rate + 1e-6
    while limits.wait_time(sig, now) == 0 and starts < 30:
        limits.acquire(sig, now)
        starts += 1
    assert starts == 1  # then one token per 1/rate seconds


def test_a_late_start_gets_its_lost_time_back_up_to_half_a_token() -> None:
    """A start that waited for a token and was taken late (a busy event loop)
    lets the next one come that much sooner, so the pool keeps its rate; never
    more than half a token sooner, and nothing carries over a pause."""
    from fleetrun.engine._limits import Limits

    g = graph(
        [task("t", "x", pools=["api"], targets=[f"h{i}" for i in range(40)])],
        pools=[Pool("api", rate=10.0)],
    )
    limits = Limits(g, 0.0, lambda *a: None)
    sig = (0,)
    assert limits.wait_time(sig, 0.0) == 0
    limits.acquire(sig, 0.0)
    assert limits.wait_time(sig, 0.0) == pytest.approx(0.1)  # due at 0.1
    assert limits.wait_time(sig, 0.13) == 0  # woken 30 ms late
    limits.acquire(sig, 0.13)
    # The next token is due 0.1 s after the first was, not after the late start.
    assert limits.wait_time(sig, 0.13) == pytest.approx(0.07)
    assert limits.wait_time(sig, 0.5) == 0  # woken 300 ms late: half a token back at most
    limits.acquire(sig, 0.5)
    assert limits.wait_time(sig, 0.5) == pytest.approx(0.05)
    starts = []
    now = 0.5
    while len(starts) < 20:
        now += limits.wait_time(sig, now)
        limits.acquire(sig, now)
        starts.append(now)
    # On time, the rate holds exactly: no burst from the credits.
    assert starts[-1] - starts[0] == pytest.approx(19 * 0.1)


def test_a_concurrency_throttle_delays_only_its_attempt() -> None:
    """A throttle counted against an adaptive pool's concurrency does not pause
    the pool: only the throttled attempt waits its Retry-After; a start
    throttled within that delay pauses the whole pool."""
    from fleetrun.engine._limits import Limits, ThrottleMatch

    g = graph(
        [task("t", "x", pools=["api"], targets=[f"h{i}" for i in range(40)])],
        pools=[Pool("api", concurrency=8, adaptive=AdaptiveSettings(initial=8))],
    )
    said: list[str] = []
    limits = Limits(g, 0.0, lambda _n, _r, _c, paused, why: said.append(f"{paused:g} {why}"))
    sig = (0,)
    for _ in range(8):
        assert limits.wait_time(sig, 0.0) == 0
        limits.acquire(sig, 0.0)
    limits.release(sig)  # the throttled one ended
    signal = limits.throttled((ThrottleMatch(0, "exit 75", 1.0),), 0.0, 0.1)
    assert signal is not None
    assert signal.pause == 1.0  # its own retry waits for the Retry-After
    assert limits.cap("api") == 7  # 7 were admitted
    assert limits.paused_until[0] < 0  # the pool is not paused
    assert not any("paused" in s for s in said)
    assert said[-1].endswith("(7 in flight, Retry-After 1s, for the throttled attempt only)")
    limits.release(sig)  # an admitted one ends: its slot is taken at once
    assert limits.wait_time(sig, 0.2) == 0
    limits.acquire(sig, 0.2)
    # That start is throttled too, within the first Retry-After: the pool pauses.
    limits.release(sig)
    signal = limits.throttled((ThrottleMatch(0, "exit 75", 1.0),), 0.2, 0.3)
    assert signal is not None
    assert limits.paused_until[0] == pytest.approx(1.3)
    assert limits.wait_time(sig, 0.4) > 0


def test_a_retry_after_not_used_as_it_stands_is_said_once_per_pool(tmp_path) -> None:
    """An unreadable Retry-After (no pause) and one past the longest pause
    (capped) each get one pool event that says so, not one per attempt."""
    from fleetrun.engine._limits import MAX_PAUSE
    from fleetrun.executors import AttemptResult

    rule = ThrottleRule(exit=frozenset({75}), retry_after=r"Retry-After:\s*(\S+)")
    limits, told = _one_pool(Pool("api", rate=10.0, throttle=rule))
    soon, long_ = tmp_path / "soon.log", tmp_path / "long.log"
    soon.write_text("HTTP/1.1 429\nRetry-After: soon\n")
    long_.write_text("HTTP/1.1 429\nRetry-After: 86400\n")
    ended = AttemptResult(exit_code=75)
    for _ in range(3):
        (m,) = limits.match((0,), ended, str(soon))
        assert m.retry_after is None
        assert "neither seconds nor an HTTP-date" in m.note
    (m,) = limits.match((0,), ended, str(long_))
    assert m.retry_after == MAX_PAUSE
    assert told == [
        "Retry-After 'soon' is neither seconds nor an HTTP-date: not paused for it",
        f"Retry-After 86400s is longer than a pause may be: paused {MAX_PAUSE:g}s",
    ]


@pytest.mark.parametrize(
    ("line", "delay", "said"),
    [
        ("Retry-After: 5", 5.0, None),
        ("retry-after: 5 (from the gateway)", 5.0, None),
        ("Retry-After: soon", None, "Retry-After 'soon' is neither seconds nor an HTTP-date"),
        ("Retry-After: -5", None, "Retry-After '-5' is no delay"),
        ("Retry-After: 1000000000", 3600.0, "Retry-After 1000000000s is longer than a pause may"),
        ("Retry-After: 1e9", None, "Retry-After '1e9' is neither seconds nor an HTTP-date"),
        ("Retry-After: 0x10", None, "Retry-After '0x10' is neither seconds nor an HTTP-date"),
        ("Retry-After: 1e1", None, "Retry-After '1e1' is neither seconds nor an HTTP-date"),
        ("Retry-After: 1_0", None, "Retry-After '1_0' is neither seconds nor an HTTP-date"),
        ("Retry-After: " + "9" * 5000, 3600.0, "Retry-After 9999999999999999999999999999999"),
        (
            "Retry-After: 99999999999999999999999999",
            3600.0,
            "Retry-After 99999999999999999999999999s is longer",
        ),
        ("Retry-After: \u0661\u0660", None, "Retry-After '\u0661\u0660' is neither seconds"),
        ("Retry-After: 2s", 2.0, None),
        ("Retry-After: 2, 3", 2.0, None),
    ],
)
def test_the_default_rule_reads_the_whole_retry_after_value(tmp_path, line, delay, said) -> None:
    """An adaptive pool without a throttle rule reads a ``Retry-After:`` line's
    whole value: one it cannot use is said, never read in part (``1e9`` was a
    pause of 1 s, ``soon`` passed without a word)."""
    from fleetrun.executors import AttemptResult

    limits, told = _one_pool(Pool("api", rate=10.0, adaptive=AdaptiveSettings()))
    log = tmp_path / "a.log"
    log.write_text(f"HTTP/1.1 429 Too Many Requests\n{line}\n")
    (m,) = limits.match((0,), AttemptResult(exit_code=75), str(log))
    assert m.retry_after == delay
    if said is None:
        assert told == []
    else:
        assert len(told) == 1
        assert told[0].startswith(said)


def test_a_retry_after_pattern_that_backtracks_for_ever_is_said_once(tmp_path, monkeypatch):
    """The Retry-After pattern runs on output the plan does not control: past
    its time bound it finds nothing (no pause), said once for the pool."""
    from fleetrun.engine import _retry
    from fleetrun.executors import AttemptResult

    monkeypatch.setattr(_retry, "SEARCH_SECONDS", 0.2)
    rule = ThrottleRule(exit=frozenset({75}), retry_after=r"Retry-After: ((?:a|aa)+$)")
    limits, told = _one_pool(Pool("api", rate=10.0, throttle=rule))
    log = tmp_path / "a.log"
    log.write_text("HTTP/1.1 429\nRetry-After: " + "a" * 60 + "!\n")
    for _ in range(2):
        (m,) = limits.match((0,), AttemptResult(exit_code=75), str(log))
        assert m.what == "exit 75"
        assert m.retry_after is None
    assert len(told) == 1
    assert told[0].startswith("throttle.retry_after 'Retry-After: ((?:a|aa)+$)' took over")


def test_a_pause_is_said_in_three_digits() -> None:
    from fleetrun.engine._adaptive import pause_text

    assert [pause_text(x) for x in (1.18986, 12.0, 0.5, 3600.0)] == [
        "1.19s",
        "12s",
        "0.5s",
        "3600s",
    ]


def test_a_pattern_the_regex_module_refuses_is_said_once_and_not_searched(tmp_path) -> None:
    """A graph built in code skips the plan check: a pattern the engine cannot
    search (``re`` takes ``(?t)``, the ``regex`` module does not) is said once,
    never falls back to an unbounded search, and never ends the run."""
    from fleetrun.executors import AttemptResult

    rule = ThrottleRule(exit=frozenset(), output=("(?t)(?:a|a)*b", "(?u)x"))
    limits, told = _one_pool(Pool("api", rate=10.0, throttle=rule))
    log = tmp_path / "a.log"
    log.write_text("a" * 40 + "!\n")
    for _ in range(3):
        assert limits.match((0,), AttemptResult(exit_code=3), str(log)) == ()
    assert [t.split(" (")[0] for t in told] == [
        "throttle.output '(?t)(?:a|a)*b' cannot be searched",
        "throttle.output '(?u)x' cannot be searched",
    ]
