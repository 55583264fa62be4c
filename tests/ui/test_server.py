"""``fleetrun ui`` over HTTP: a real server process over the journal of a real run.

What the pages read (runs, a run, its timeline, an attempt and its log), what
they must never show (secrets, files outside the record), who may act, and
what a disconnecting page leaves behind.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from fleetrun.cli import cli

from ._helpers import Ui, fleetrun, journal_rows, request, serving, wait_for

SECRET = "s3cr3t-Value-9f2e"
HOSTILE = 'eu<img src=x onerror="alert(1)">'

PLAN = """\
name: web
secrets: [DEPLOY_TOKEN]
targets:
  'eu<img src=x onerror="alert(1)">': {}
  us: {}
tasks:
  deploy:
    for_each: all
    run: |
      echo "deploying {{ target.name }} with $DEPLOY_TOKEN"
      for i in $(seq 1 400); do echo "line $i of the deploy log"; done
      if [ "{{ target.name }}" = us ]; then echo "error: quota exceeded" >&2; exit 3; fi
      echo "address=0xfeed-$DEPLOY_TOKEN" >> "$FLEETRUN_OUTPUT"
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A plan applied once (``deploy@us`` fails): the plan, its state directory, the run."""
    root = tmp_path_factory.mktemp("ui")
    plan = root / "plan.yaml"
    plan.write_text(PLAN)
    res = fleetrun("apply", str(plan), "--plain", DEPLOY_TOKEN=SECRET)
    assert res.returncode == 1, res.stdout + res.stderr
    state = root / ".fleetrun"
    run_id = journal_rows(state, "SELECT id FROM runs")[0][0]
    return plan, state, run_id


@pytest.fixture(scope="module")
def ui(recorded: tuple[Path, Path, str]) -> Iterator[Ui]:
    with serving("--state-dir", str(recorded[1])) as server:
        yield server


def _q(**params: Any) -> str:
    return urllib.parse.urlencode(params)


def test_a_state_dir_without_a_journal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = fleetrun("ui", "--state-dir", str(tmp_path), "--port", "0", timeout=30)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: no journal in ")
    assert "Traceback" not in res.stderr


def _ui_cli(*args: str) -> Any:
    """``fleetrun ui ARGS`` in this process (it must stop before serving)."""
    return CliRunner().invoke(cli, ["ui", "--port", "0", *args])


def test_a_missing_state_dir_is_said_as_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    res = _ui_cli("--state-dir", str(missing))
    assert res.exit_code == 2, res.output
    assert res.output == (
        f"error: the state directory {missing} does not exist; "
        "name the state directory with --state-dir\n"
    )


def test_a_corrupt_journal_stops_the_ui_at_start_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(bytes(range(256)) * 16)
    res = _ui_cli("--state-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"error: cannot read the journal {tmp_path / 'state.db'}: ")
    assert "serving" not in res.output


def test_the_help_names_the_token_variable() -> None:
    res = CliRunner().invoke(cli, ["ui", "--help"])
    assert res.exit_code == 0
    assert "env var: FLEETRUN_UI_TOKEN]" in " ".join(res.output.split())


def test_the_runs_page_lists_the_run_with_who_failed(
    ui: Ui, recorded: tuple[Path, Path, str]
) -> None:
    plan, _, run_id = recorded
    data = ui.json("/api/runs")
    assert [r["id"] for r in data["runs"]] == [run_id]
    row = data["runs"][0]
    assert (row["plan_name"], row["kind"], row["status"]) == ("web", "apply", "failed")
    assert row["counts"] == {"succeeded": 1, "failed": 1}
    assert row["failed"]["key"] == "deploy@us"
    assert row["failed"]["line"] == "error: quota exceeded"
    assert data["plans"] == [{"key": str(plan), "name": "web", "path": str(plan)}]
    # Filters: by status and by plan.
    assert ui.json("/api/runs?" + _q(status="succeeded"))["runs"] == []
    assert len(ui.json("/api/runs?" + _q(status="failed", plan=str(plan)))["runs"]) == 1
    assert ui.json("/api/runs?" + _q(plan="/elsewhere.yaml"))["runs"] == []


def test_the_run_page_data_keeps_names_as_data(ui: Ui, recorded: tuple[Path, Path, str]) -> None:
    _, state, run_id = recorded
    data = ui.json(f"/api/runs/{run_id}")
    grid = data["grid"]
    assert grid["tasks"] == ["deploy"]
    assert grid["targets"] == [HOSTILE, "us"]
    states = {c[2]: c[3] for c in grid["cells"]}
    assert states == {f"deploy@{HOSTILE}": "succeeded", "deploy@us": "failed"}
    assert data["outputs"] == [{"key": f"deploy@{HOSTILE}", "outputs": {"address": "0xfeed-***"}}]
    assert data["first_failed"] == {"key": "deploy@us", "n": 1}
    assert data["run"]["live"] is False
    assert data["next"][0]["cmd"] == f"fleetrun retry {run_id} --state-dir {state}"
    timeline = ui.json(f"/api/runs/{run_id}/timeline")
    assert timeline["total"] == 2
    assert sorted(b[0] for b in timeline["bars"]) == sorted(states)


def test_the_attempt_page_opens_on_the_failed_attempt_and_reads_in_pieces(
    ui: Ui, recorded: tuple[Path, Path, str]
) -> None:
    _, _, run_id = recorded
    a = ui.json(f"/api/runs/{run_id}/attempt")  # no key: the first failed attempt
    assert (a["key"], a["n"], a["outcome"], a["exit_code"]) == ("deploy@us", 1, "failed", 3)
    assert "echo" in a["command"]
    key = _q(key="deploy@us", n=1)
    whole = ui.json(f"/api/runs/{run_id}/log?{key}&offset=0&limit=1000000")
    assert whole["start"] == 0
    assert whole["end"] == whole["size"]
    tail = ui.json(f"/api/runs/{run_id}/log?{key}&limit=1024")
    assert tail["end"] == whole["size"]
    assert tail["start"] > 0
    assert tail["text"].endswith("error: quota exceeded\n")
    # Pieces join without a gap or a split line.
    earlier = ui.json(f"/api/runs/{run_id}/log?{key}&before={tail['start']}&limit=1024")
    assert earlier["end"] == tail["start"]
    assert whole["text"].endswith(earlier["text"] + tail["text"])
    assert earlier["text"].startswith("line ")
    assert earlier["text"].endswith("\n")
    found = ui.json(f"/api/runs/{run_id}/search?{key}&q=LINE%2037")
    assert [m["line"] for m in found["matches"]][:2] == [38, 371]
    assert found["matches"][0]["text"] == "line 37 of the deploy log"
    piece = ui.json(f"/api/runs/{run_id}/log?{key}&offset={found['matches'][0]['offset']}")
    assert piece["text"].startswith("line 37 of the deploy log\n")


def test_no_secret_value_in_any_page_or_response(ui: Ui, recorded: tuple[Path, Path, str]) -> None:
    _, _, run_id = recorded
    paths = ["/", f"/runs/{run_id}", "/static/app.js", "/metrics", "/api/runs",
             f"/api/runs/{run_id}", f"/api/runs/{run_id}/timeline", "/api/trends?"
             + _q(plan=ui.json("/api/runs")["plans"][0]["key"], task="deploy")]  # fmt: skip
    for key in ("deploy@us", f"deploy@{HOSTILE}"):
        q = _q(key=key)
        paths += [f"/api/runs/{run_id}/attempt?{q}", f"/api/runs/{run_id}/log?{q}&offset=0",
                  f"/api/runs/{run_id}/search?{q}&q=deploying"]  # fmt: skip
    seen = b""
    for path in paths:
        status, body = ui.get(path)
        assert status == 200, (path, status, body[:200])
        assert SECRET.encode() not in body, path
        seen += body
    assert b"deploying us with ***" in seen  # the line is there, its secret masked


def test_logs_are_served_by_attempt_only(
    tmp_path: Path, ui: Ui, recorded: tuple[Path, Path, str]
) -> None:
    _, state, run_id = recorded
    for key in ("../../state.db", "/etc/passwd", "deploy@../../../etc/passwd"):
        status, body = ui.get(f"/api/runs/{run_id}/log?" + _q(key=key))
        assert status == 404, (key, body)
        assert b"root:" not in body
    for path in ("/static/../state.db", "/static/%2e%2e/%2e%2e/state.db", "/static//etc/passwd"):
        status, body = ui.get(path)
        assert status == 404, path
        assert b"SQLite" not in body
        assert b"root:" not in body
    # A journal whose log path was bent to a file outside the record, a log
    # replaced by a link to one, and a log deleted since: the page never reads
    # outside the run's folder, and says what is missing.
    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    conn = sqlite3.connect(copy / "state.db")
    conn.execute("UPDATE attempts SET log_path='/etc/passwd'")
    conn.commit()
    conn.close()
    logs = {p.name: p for p in (copy / "runs" / run_id / "logs").rglob("*.log")}
    logs["us.1.log"].unlink()
    linked = next(p for n, p in logs.items() if n != "us.1.log")
    linked.unlink()
    linked.symlink_to("/etc/passwd")
    with serving("--state-dir", str(copy)) as other:
        gone = other.json(f"/api/runs/{run_id}/log?" + _q(key="deploy@us"))
        assert gone["text"] == ""
        assert "gone (deleted or pruned)" in gone["gone"]
        assert "gone" in other.json(f"/api/runs/{run_id}/attempt?" + _q(key="deploy@us"))["gone"]
        status, body = other.get(f"/api/runs/{run_id}/log?" + _q(key=f"deploy@{HOSTILE}"))
        assert status == 200
        assert b"root:" not in body
        assert json.loads(body)["gone"].startswith("the log cannot be read")


def test_an_action_without_the_token_is_refused_and_changes_nothing(
    tmp_path: Path, recorded: tuple[Path, Path, str]
) -> None:
    _, state, run_id = recorded
    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    with serving("--state-dir", str(copy)) as ui:
        for token in (None, "", "not-the-token", ui.token[:-1]):
            status, body = ui.post(f"/api/runs/{run_id}/retry", token)
            assert status == 403, token
            assert "nothing was changed" in body["error"]
        # Cookie alone (what another site could make a browser send) is not enough.
        status, _ = request(
            f"{ui.base}/api/runs/{run_id}/retry",
            method="POST",
            headers={"Cookie": f"fleetrun_token_{ui.base.rsplit(':', 1)[1]}={ui.token}"},
        )
        assert status == 403
        assert journal_rows(copy, "SELECT count(*) FROM runs") == [(1,)]
        # With the token: a real `fleetrun retry` runs and is recorded as its child.
        status, body = ui.post(f"/api/runs/{run_id}/retry", ui.token)
        assert status == 200, body
        assert body["run"] is not None
        assert journal_rows(
            copy, "SELECT parent_id, kind FROM runs WHERE id=?", (body["run"],)
        ) == [(run_id, "retry")]
        wait_for(
            "the retry to end",
            lambda: journal_rows(copy, "SELECT ended_at FROM runs WHERE id=?", (body["run"],))[0][
                0
            ],
        )
        # Cancel and promote of a run that is not live: refused, in one line.
        status, body = ui.post(f"/api/runs/{run_id}/cancel", ui.token)
        assert status == 409
        assert body["error"] == f"run {run_id} is not live: it ended failed"


def test_another_address_needs_the_token_for_every_request(
    recorded: tuple[Path, Path, str],
) -> None:
    with serving("--state-dir", str(recorded[1]), "--host", "0.0.0.0") as ui:
        port = ui.base.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/runs", "/metrics", "/static/app.js"):
            status, body = request(base + path)
            assert status == 401, path
            assert b"token" in body
        status, _ = request(base + "/api/runs", headers={"Authorization": f"Bearer {ui.token}"})
        assert status == 200
        status, _ = request(base + "/api/runs", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _ = request(base + "/?token=wrong")
        assert status == 403


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_url(ui: Ui) -> None:
    host = ui.base.removeprefix("http://")
    name, port = host.split(":")
    with socket.create_connection((name, int(port))) as s:
        s.sendall(
            f"GET /?token={ui.token} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head = answer.decode().split("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 303")
    assert "location: /\r\n" in head
    cookie = f"fleetrun_token_{port}={ui.token}; path=/; samesite=strict"
    assert f"set-cookie: {cookie.lower()}" in head


def test_a_foreign_host_name_is_refused_on_loopback(ui: Ui) -> None:
    status, body = ui.get("/api/runs", headers={"Host": "attacker.example"})
    assert status == 403
    assert b"loopback" in body


def test_a_journal_from_a_newer_fleetrun_is_said(
    tmp_path: Path, recorded: tuple[Path, Path, str]
) -> None:
    copy = tmp_path / "state"
    shutil.copytree(recorded[1], copy)
    conn = sqlite3.connect(copy / "state.db")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    with serving("--state-dir", str(copy)) as ui:
        data = ui.json("/api/runs")
        assert data["runs"] == []
        assert len(data["problems"]) == 1
        assert "written by a newer fleetrun" in data["problems"][0]


def _metrics(ui: Ui) -> dict[str, Any]:
    status, body = ui.get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_metrics_parse_and_count_the_record(ui: Ui) -> None:
    families = _metrics(ui)
    runs = {
        (s.labels["plan"], s.labels["status"]): s.value for s in families["fleetrun_runs"].samples
    }
    assert runs == {("web", "failed"): 1.0}
    attempts = {s.labels["outcome"]: s.value for s in families["fleetrun_attempts"].samples}
    assert attempts == {"succeeded": 1.0, "failed": 1.0}
    hist = families["fleetrun_attempt_duration_seconds"]
    assert hist.type == "histogram"
    count = [s for s in hist.samples if s.name.endswith("_count")]
    assert [(s.labels["task"], s.value) for s in count] == [("deploy", 2.0)]


def test_pages_that_disconnect_leave_nothing_behind(ui: Ui) -> None:
    host, port = ui.base.removeprefix("http://").split(":")

    def clients() -> float:
        return float(_metrics(ui)["fleetrun_ui_clients"].samples[0].value)

    before = clients()
    socks = []
    for _ in range(5):
        s = socket.create_connection((host, int(port)))
        s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        s.settimeout(10)
        got = b""
        while b"event: hello" not in got:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        socks.append(s)
    assert clients() == before + 5
    for s in socks:
        s.close()
    wait_for("the streams to close", lambda: clients() == before)
    data = json.loads(ui.get("/api/runs")[1])
    assert data["runs"]  # still serving
