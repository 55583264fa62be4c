"""Every shell command of the README, of the documentation pages (``docs/``) and
of each example's README, run as written.

The commands are read from the fenced code blocks: ```sh / ```bash / ```shell
(every line), ```console (the ``$ `` lines) and bare ``` blocks (the lines that
start with ``$ `` or ``fleetrun ``). A line ending in ``\\`` goes on on the next.
A trailing comment that says ``exit N`` is the exit code the command must
return; without one it is 0.

Each block runs as a reader would type it: its commands in order, in one bash
with job control (``cmd &`` and ``kill %1`` work as in a terminal), from the
root of a fresh copy of ``examples/`` in a temporary directory that is a git
checkout (``git rev-parse`` answers), with ``fleetrun`` and ``python`` on
``PATH``. ``export`` lines of earlier blocks of the same page carry over, as
in the reader's terminal. The chain138 and prover stand-ins run with short
sleeps (``CHAIN138_SCALE``, ``PROVER_SCALE``; a command that sets its own
value wins).

A command that cannot run here is in ``NOT_RUN`` with the reason, one line
each. Every other command runs: a command added to a page that is neither
listed nor runnable here fails this test, and so does a listed command that no
page has any more.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*.md")),
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("examples/*/README.md")),
)

PIP = "installs packages (pip): the environment under test is already installed"
K8S = "needs a Kubernetes cluster and kubectl"
PLACEHOLDER = "holds a placeholder (PLAN, RUN, PORT, NODE, ...) for the reader's own value"
NO_JOURNAL = "reads the journal in .fleetrun/ of the reader's working directory"
LOCAL_CLUSTER = "a long-lived local cluster: tests/cluster/test_cli_local.py runs up, status, scale and down with real processes"  # noqa: E501

NOT_RUN: dict[str, str] = {
    # README.md and docs/
    "pip install . && fleetrun apply examples/chain138/plan.yaml": PIP,
    "pip install -e '.[test]' && python3 -m pytest -q": PIP,
    "fleetrun exec FILE [-t SELECTION] [--runs-on local|ssh] [-j N] [--timeout D] [--format text|json] -- COMMAND [ARGS...]": "the command's synopsis, not a command",  # noqa: E501
    "fleetrun exec examples/hosts/fleet.yaml -t web -- systemctl restart nginx": "needs real web hosts running nginx under systemd (examples/hosts/README.md runs the same fleet file over the loopback sshd; test_hosts_fleet_file_resolves checks this one's selection)",  # noqa: E501
    "fleetrun apply plan.yaml --events run.jsonl &": "plan.yaml stands for the reader's plan; it feeds the tail -f beside it",  # noqa: E501
    'tail -f run.jsonl | jq -r \'select(.type == "InstanceSettled") | "\\(.key) \\(.state)"\'': "tail -f follows the file until interrupted",  # noqa: E501
    "fleetrun report --plan plan.yaml": PLACEHOLDER,
    "fleetrun report 20261123T1414 --format markdown": PLACEHOLDER,
    "fleetrun report --format json -o report.json": NO_JOURNAL,
    "fleetrun report --format junit -o fleetrun.xml": NO_JOURNAL,
    "fleetrun report --format html -o report.html": NO_JOURNAL,
    "python3 -m pytest -q": "the whole test suite, of which this test is one",
    "ruff check src tests && mypy": "the lint and type checks, run by .ci/run over the repository",
    "python3 bench/bench_expand.py": "a benchmark (bench/ is not part of the examples' copy)",
    'python3 -m mkdocs build --strict --site-dir "$(mktemp -d)"': "builds the site from the repository (mkdocs.yml is not part of the examples' copy); tests/test_docs_site.py runs the same build",  # noqa: E501
    "python3 -m mkdocs serve": "a web server that runs until interrupted",
    # examples/prover/README.md
    "pip install -e '.[cluster]'": PIP,
    "fleetrun cluster up --local --workers 3": LOCAL_CLUSTER,
    "fleetrun cluster status": LOCAL_CLUSTER,
    "fleetrun cluster scale 1": LOCAL_CLUSTER,
    "fleetrun cluster down": LOCAL_CLUSTER,
    "PROVER_SCALE=0.2 fleetrun apply examples/prover/plan.yaml": "the apply before it again, with longer jobs (tests/cluster/test_prover_example.py runs fleetrun apply of this plan)",  # noqa: E501
    "FLEETRUN_CLUSTER=tcp://127.0.0.1:PORT fleetrun apply examples/prover/plan.yaml": PLACEHOLDER,
    "kubectl label node NODE fluidexnode=computation": K8S,
    "kubectl taint node NODE dedicated=computation:NoSchedule": K8S,
    "fleetrun cluster build --config examples/prover/cluster.yaml --dockerfile examples/prover/Dockerfile": "needs docker and an image registry",  # noqa: E501
    "fleetrun cluster up --local --workers 0 --host 10.0.0.5 --port 50055": "binds the coordinator's address 10.0.0.5, another machine",  # noqa: E501
    "fleetrun cluster up     --config examples/prover/cluster.yaml": K8S,
    "fleetrun cluster status --config examples/prover/cluster.yaml --kubernetes": K8S,
    "FLEETRUN_CLUSTER=tcp://10.0.0.5:50055 fleetrun apply examples/prover/plan.yaml": "needs the coordinator at 10.0.0.5 (step 4, another machine)",  # noqa: E501
    "fleetrun cluster scale 8 --config examples/prover/cluster.yaml --kubernetes": K8S,
    "fleetrun cluster endpoint 10.0.0.6:50055 --config examples/prover/cluster.yaml": K8S,
    "fleetrun cluster down --config examples/prover/cluster.yaml --kubernetes": K8S,
}

# The stand-ins' sleep factors for every block (a command's own VAR=value wins).
ENV = {"CHAIN138_SCALE": "0.02", "PROVER_SCALE": "0.02"}
# Variables of the caller that would change what the examples do.
DROPPED_ENV = ("CHAIN138_", "FAIL_", "THROTTLE_", "PROVER_", "FLEETRUN_", "IMAGE_",
               "COORDINATOR_", "CLUSTER_NS", "CLIENT_REPLICAS", "STAGE", "DASK_")  # fmt: skip
# After a background command, the file it writes once it is ready; the next
# command waits for it (a reader types slower than a script).
READY = {"python3 -m fleetrun.executors.testing examples/hosts &": "examples/hosts/ssh_config"}
# Run after the block whatever happened, when the command ran: what it left up.
TEARDOWN = {"fleetrun cluster up --local --workers 3": "fleetrun cluster down --local"}
# The demo service keeps its pid files in one fixed directory of the host; the
# copy keeps them in its own, so that runs of this test never share one.
COPY_EDITS = {"examples/hosts/*.yaml": ("/tmp/fleetrun-demo", "{tmp}/fleetrun-demo")}

_FENCE = re.compile(r"^(?P<indent>\s*)```\s*(?P<lang>[\w-]*)\s*$")
_SHELL = frozenset({"sh", "bash", "shell"})


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a page: where it is, its text and the exit code it says."""

    doc: str
    block: int  # line of the block's opening fence
    line: int  # line of the command's first line
    text: str  # continuation lines joined, the comment removed
    expected: int

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def _split_comment(line: str) -> tuple[str, str]:
    """A shell line's code and its trailing comment (a ``#`` after a blank, unquoted)."""
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def _is_command(lang: str, line: str) -> bool:
    if line.startswith("$ "):
        return True
    if lang in _SHELL:
        return bool(line.strip()) and not line.lstrip().startswith("#")
    return lang == "" and line.startswith("fleetrun ")


def extract(doc: str) -> list[Command]:
    """Every command of the fenced blocks of ``doc`` (a path under the repository)."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    out: list[Command] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        i += 1
        if m is None:
            continue
        block, lang, cut = i, m["lang"].lower(), len(m["indent"])
        body: list[tuple[int, str]] = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append((i + 1, lines[i][cut:] if lines[i][:cut].isspace() else lines[i]))
            i += 1
        i += 1  # the closing fence
        if lang not in _SHELL | {"console", ""}:
            continue
        j = 0
        while j < len(body):
            number, line = body[j]
            j += 1
            if not _is_command(lang, line):
                continue
            text = line.removeprefix("$ ")
            while text.rstrip().endswith("\\") and j < len(body):
                text = text.rstrip()[:-1].rstrip() + " " + body[j][1].strip()
                j += 1
            code, comment = _split_comment(text)
            said = re.search(r"\bexit (\d+)\b", comment)
            out.append(Command(doc, block, number, code, int(said[1]) if said else 0))
    return out


ALL = [c for doc in DOCS for c in extract(doc)]


def _exports(cmds: list[Command]) -> list[str]:
    """The ``export`` lines of the blocks before ``cmds`` on its page."""
    earlier = [c for c in ALL if c.doc == cmds[0].doc and c.block < cmds[0].block]
    return [c.text for c in earlier if c.text.startswith("export ") and c.text not in NOT_RUN]


def _blocks() -> list[list[Command]]:
    """The blocks that have a command to run, each as its commands in order.

    A block that repeats one met before word for word (the README's tour is
    the getting-started page's), with the same exports before it, runs once.
    """
    by_block: dict[tuple[str, int], list[Command]] = {}
    for c in ALL:
        by_block.setdefault((c.doc, c.block), []).append(c)
    seen: set[tuple[tuple[str, ...], tuple[tuple[str, int], ...]]] = set()
    out = []
    for cmds in by_block.values():
        if all(c.text in NOT_RUN for c in cmds):
            continue
        same = (tuple(_exports(cmds)), tuple((c.text, c.expected) for c in cmds))
        if same not in seen:
            seen.add(same)
            out.append(cmds)
    return out


def test_every_command_is_run_or_listed_with_a_reason() -> None:
    texts = {c.text for c in ALL}
    stale = sorted(set(NOT_RUN) - texts)
    assert not stale, f"NOT_RUN lists commands no page has any more: {stale}"
    # The extraction finds the tours and the walkthroughs (it cannot pass on nothing).
    assert {c.doc for c in ALL} >= {"README.md", "docs/getting-started.md", "docs/running.md",
                                    "examples/hosts/README.md",
                                    "examples/prover/README.md"}  # fmt: skip
    assert sum(c.text not in NOT_RUN for c in ALL) >= 25
    assert all(reason.strip() for reason in NOT_RUN.values())


def test_a_repeated_block_is_run_once() -> None:
    blocks = _blocks()
    keys = [tuple(c.text for c in cmds) for cmds in blocks]
    assert len(keys) == len(set(keys))
    tours = [
        cmds[0].doc for cmds in blocks if cmds[0].text == "fleetrun plan examples/quickstart.yaml"
    ]
    assert tours == ["README.md"]  # the getting-started page's tour is the same block


def test_the_extraction_reads_comments_and_continuations() -> None:
    assert _split_comment("a 'b # c' # exit 3") == ("a 'b # c'", "exit 3")
    assert _split_comment("echo a#b") == ("echo a#b", "")
    failing = "FAIL_REGIONS=ukwest,japaneast fleetrun apply examples/chain138/plan.yaml"
    for doc in ("README.md", "docs/getting-started.md"):
        tour = {c.text: c for c in ALL if c.doc == doc}
        assert tour["fleetrun retry --plan examples/chain138/plan.yaml"].expected == 0
        assert tour[failing].expected == 1
    texts = {c.text for c in ALL if c.doc == "docs/running.md"}
    joined = [t for t in texts if t.startswith("fleetrun exec examples/chain138/plan.yaml")]
    assert joined == [
        "fleetrun exec examples/chain138/plan.yaml -t validators -- "
        "./scripts/service.sh status {{ target.name }} {{ target.role }}"
    ]


def _missing(cmds: list[Command]) -> str | None:
    """What this machine lacks for the block, or None."""
    run = [c.text for c in cmds if c.text not in NOT_RUN]
    if any("fleetrun.executors.testing" in t for t in run):
        from fleetrun.executors.testing import available

        if not available():
            return "OpenSSH's sshd and ssh-keygen (apt-get install openssh-server)"
    if any("prover" in t or "fleetrun cluster" in t for t in run):
        try:
            import distributed  # noqa: F401
        except ImportError:
            return "the cluster extra (pip install -e '.[cluster]')"
    return None


def _copy(tmp: Path) -> Path:
    root = tmp / "repo"
    shutil.copytree(
        ROOT / "examples",
        root / "examples",
        ignore=shutil.ignore_patterns(".fleetrun", "ssh_config", ".sshd", "__pycache__"),
    )
    for pattern, (old, new) in COPY_EDITS.items():
        for f in root.glob(pattern):
            f.write_text(f.read_text().replace(old, new.format(tmp=tmp)))
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "docs"],
                   cwd=root, check=True, timeout=60)  # fmt: skip
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, line in (
        ("fleetrun", f'exec {shlex.quote(sys.executable)} -m fleetrun "$@"'),
        ("python", f'exec {shlex.quote(sys.executable)} "$@"'),
        ("python3", f'exec {shlex.quote(sys.executable)} "$@"'),
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    return root


def _script(cmds: list[Command], exports: list[str], logs: Path, rcs: Path) -> str:
    """The block as a bash script: each command's output to its log, its code to ``rcs``."""
    out = ["set -m", *exports]
    for n, c in enumerate(cmds):
        if c.text in NOT_RUN:
            out.append(f"# not run: {c.text}")
            continue
        out += [
            f"{{ {c.text}\n}} >{shlex.quote(str(logs / f'{n}.log'))} 2>&1 </dev/null",
            f"echo {n} $? >>{shlex.quote(str(rcs))}",
        ]
        if c.text in READY:
            path = shlex.quote(READY[c.text])
            out.append(f"for _ in $(seq 600); do [ -e {path} ] && break; sleep 0.1; done")
    out.append("for j in $(jobs -p); do kill -- -$j 2>/dev/null; done; wait")
    return "\n".join(out) + "\n"


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End the block's shell and whatever of its process group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(10)
            break
        except subprocess.TimeoutExpired:
            continue


def _run_block(cmds: list[Command], tmp: Path) -> None:
    root = _copy(tmp)
    logs, rcs = tmp / "logs", tmp / "rcs"
    logs.mkdir()
    script = tmp / "block.sh"
    script.write_text(_script(cmds, _exports(cmds), logs, rcs))
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV)}
    env.update(ENV, PATH=f"{tmp / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen(["bash", str(script)], cwd=root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        proc.wait(300)
    finally:
        _end(proc)
        ran = {c.text for c in cmds if c.text not in NOT_RUN}
        for text, undo in TEARDOWN.items():
            if text in ran:
                subprocess.run(["bash", "-c", undo], cwd=root, env=env, capture_output=True,
                               timeout=120, check=False)  # fmt: skip
    lines = rcs.read_text().splitlines() if rcs.exists() else []
    got = {int(n): int(rc) for n, rc in (line.split() for line in lines)}
    wrong = []
    for n, c in enumerate(cmds):
        if c.text in NOT_RUN:
            continue
        if got.get(n) != c.expected:
            log = logs / f"{n}.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no output)"
            wrong.append(f"{c.where}: {c.text}\n  exit {got.get(n)}, the page says "
                         f"{c.expected}; its output ends:\n{tail}")  # fmt: skip
    assert not wrong, "\n\n".join(wrong)


@pytest.mark.slow
@pytest.mark.parametrize("cmds", _blocks(), ids=lambda cmds: f"{cmds[0].doc}:{cmds[0].block}")
def test_block_runs_as_the_page_says(cmds: list[Command], tmp_path: Path) -> None:
    lacking = _missing(cmds)
    if lacking is not None:
        pytest.skip(f"{cmds[0].doc}:{cmds[0].block} needs {lacking}")
    _run_block(cmds, tmp_path)


def test_hosts_fleet_file_resolves() -> None:
    """``exec`` on the hosts fleet file (docs/running.md) selects the web group over SSH."""
    from fleetrun.plan import ExecRequest, exec_plan

    fleet = ROOT / "examples" / "hosts" / "fleet.yaml"
    plan = exec_plan(ExecRequest(str(fleet), ("systemctl", "restart", "nginx"), ("web",)))
    task = plan.tasks["exec"]
    assert (task.targets, task.runs_on) == (("web1", "web2", "web3"), "ssh")
    ssh = plan.targets["web1"].ssh or {}
    assert (ssh.get("host"), ssh.get("config_file")) == ("web1", str(fleet.parent / "ssh_config"))


def test_prover_render_without_the_password_names_where_the_user_came_from(
    tmp_path: Path,
) -> None:
    """Step 5 in a shell without step 2's password: one line naming cluster.yaml and the fix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV)}
    env["STAGE"] = "docs"
    proc = subprocess.run(
        [sys.executable, "-m", "fleetrun", "cluster", "render",
         "--config", str(ROOT / "examples" / "prover" / "cluster.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "image.user in " in line, line
    assert "cluster.yaml" in line, line
    assert "export IMAGE_AUTH_PASSWORD" in line, line
    assert "IMAGE_AUTH_USER is set" not in line, line


def test_the_diagnostics_example_shows_fleetruns_lines(tmp_path: Path) -> None:
    """docs/diagnostics.md's ``-v`` example prints the retry it promises on stderr."""
    (cmd,) = [c for c in extract("docs/diagnostics.md") if c.text.startswith("fleetrun -v ")]
    root = _copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV)}
    env.update(ENV, PATH=f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", cmd.text], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if " fleetrun." in line]
    assert any(" INFO " in line and "retrying in" in line for line in lines), proc.stderr
