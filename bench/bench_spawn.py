"""End-to-end spawn throughput: ``fleetrun apply`` of N ``true`` tasks at -j 8, as a user runs it.

Every contender is a command started the way a shell would start it, timed
from its start to its exit (wall clock), in the same run:

- ``fleetrun apply PLAN -j 8 --plain --state-dir DIR``, stdout and the plain
  console to /dev/null: a plan of one task (``run: 'true'``) fanned over N
  targets (``for_each: all``), so the timed span includes starting Python,
  importing fleetrun, loading and expanding the plan, the journal (SQLite,
  written as the run goes), one log file per attempt, the console, the
  spawns and the summary. One contender per fleetrun tree (``--fleetrun-src``):
  before/after comparisons of two trees run in the same rounds;
- ``seq N | xargs -P 8 -I{} true``: bare process creation, no log;
- ``seq N | xargs -P 8 -I{} sh -c 'true > DIR/{}.log'``: one process per
  command (``true`` is a builtin of sh) and one log file per command;
- ``seq N | parallel -j 8 'true > DIR/{}.log'`` (GNU parallel; installed with
  apt when missing, skipped with a note otherwise). It is slow, so
  it runs ``--parallel-n`` commands (1,000) and rates are compared.

The host may be busy with other work, so contenders are interleaved over
``--rounds`` rounds (the order reverses every round). Each round gives its
own ratios; the median of the per-round ratios is the headline. Every run
writes into a directory of its own and nothing is deleted until the end
(``_common.fresh_dir``); the disk is synced before every run.

fleetrun runs with its bytecode cached (``PYTHONPYCACHEPREFIX`` under the
benchmark's directory, filled by a warm-up run), as an installed fleetrun
has it, whatever ``PYTHONDONTWRITEBYTECODE`` says.

Each contender's CPU per task is printed too: its own process (all threads;
read from ``/proc`` while it is a zombie) and with the children it reaped.
Before the rounds, each fleetrun tree runs a 1-target plan three times: its
median is the fixed cost of one ``apply`` (start, imports, journal, summary).

    python bench/bench_spawn.py [--n 5000] [-j 8] [--rounds 5] [--parallel-n 1000]
                                [--fleetrun-src [LABEL=]DIR ...] [--python PY] [--quick]

``bench/compare.sh`` compares a commit (a git worktree) with the working tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import fresh_dir, load, median, settle_deletions, verdict

HERE = Path(__file__).resolve().parent.parent / "src"


@dataclass(frozen=True)
class Sample:
    """One contender's run: wall seconds and CPU seconds per task."""

    tasks: int
    secs: float
    own_cpu: float
    """CPU of the contender's own process (all its threads), per task."""
    all_cpu: float
    """The same plus every child it reaped, per task."""

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.tasks / self.secs


@dataclass(frozen=True)
class Tree:
    """A fleetrun source tree run by an interpreter."""

    label: str
    src: Path
    python: str
    pycache: Path
    """Where its bytecode is cached, as an installed fleetrun has it cached
    (``PYTHONDONTWRITEBYTECODE`` in the caller's environment would otherwise
    make every run compile every module: 0.2-0.5 s more per ``apply``)."""

    def env(self) -> dict[str, str]:
        """The environment that makes ``python -m fleetrun`` import this tree."""
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.src)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        return env

    def argv(self, plan: Path, j: int, state: Path) -> list[str]:
        """``fleetrun apply`` as a user types it (``python -m fleetrun`` is the same entry)."""
        return [self.python, "-m", "fleetrun", "apply", str(plan), "-j", str(j), "--plain",
                "--state-dir", str(state)]  # fmt: skip

    def where(self) -> str:
        """The file this tree's ``fleetrun`` is imported from (checked, not assumed)."""
        out = subprocess.run(
            [self.python, "-c", "import fleetrun; print(fleetrun.__file__)"],
            env=self.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()


def _times() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_command(
    cmd: list[str],
    tasks: int,
    *,
    stdin_lines: int = 0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stderr: Path | None = None,
) -> Sample:
    """Run ``cmd`` (stdout to /dev/null; with ``stdin_lines``, the numbers
    0..n-1 on stdin), timed from its start to its exit.

    The command's own CPU is read from ``/proc`` while it is a zombie (waited
    for with ``WNOWAIT``), before it is reaped; its children's CPU reaches
    this process's ``RUSAGE_CHILDREN`` once it is reaped.
    """
    data = ("\n".join(map(str, range(stdin_lines))) + "\n").encode() if stdin_lines else b""
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if stderr else null
    actions = [(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
               (os.POSIX_SPAWN_DUP2, err, 2)]  # fmt: skip
    home = os.getcwd()
    kids0 = _times()
    if cwd is not None:
        os.chdir(cwd)
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawnp(cmd[0], cmd, env or os.environ, file_actions=actions)
    finally:
        os.chdir(home)
    os.close(r)
    with os.fdopen(w, "wb") as f:
        f.write(data)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    secs = time.perf_counter() - t0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    _, status = os.waitpid(pid, 0)
    kids1 = _times()
    os.close(null)
    if stderr:
        os.close(err)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = stderr.read_text()[-2000:] if stderr else ""
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed: status {status}\n{tail}")
    return Sample(tasks, secs, own / tasks, (kids1 - kids0) / tasks)


def write_plan(work: Path, n: int) -> Path:
    """A plan of one task, ``true``, fanned over ``n`` targets."""
    plan = work / f"plan-{n}.yaml"
    targets = "".join(f"  n{i}: {{}}\n" for i in range(n))
    plan.write_text(
        f"name: spawn-bench\ntargets:\n{targets}tasks:\n  t:\n    for_each: all\n    run: 'true'\n"
    )
    return plan


def run_fleetrun(tree: Tree, work: Path, plan: Path, n: int, j: int) -> Sample:
    """``fleetrun apply`` of ``plan``; checks the exit code and that every attempt has its log."""
    state = fresh_dir(work, f"state-{tree.label}")
    s = run_command(
        tree.argv(plan, j, state), n, env=tree.env(), cwd=plan.parent,
        stderr=state / "stderr.txt",
    )  # fmt: skip
    (run,) = (state / "runs").iterdir()
    logs = sum(1 for _ in (run / "logs" / "t").iterdir())
    assert logs == n, (tree.label, logs)
    assert (state / "state.db").stat().st_size > 0
    return s


def run_xargs_bare(n: int, j: int) -> Sample:
    return run_command(["xargs", "-P", str(j), "-I{}", "true"], n, stdin_lines=n)


def run_xargs_logs(work: Path, n: int, j: int) -> Sample:
    d = fresh_dir(work, "xargs")
    s = run_command(
        ["xargs", "-P", str(j), "-I{}", "sh", "-c", f"true > {d}/{{}}.log"], n, stdin_lines=n
    )
    assert len(os.listdir(d)) == n
    return s


def have_parallel() -> bool:
    """GNU parallel is on PATH, installed with apt if it was not (needs root)."""
    if shutil.which("parallel") is None and shutil.which("apt-get") is not None:
        subprocess.run(["apt-get", "install", "-y", "parallel"], capture_output=True)
    return shutil.which("parallel") is not None


def run_parallel(work: Path, n: int, j: int) -> Sample:
    d = fresh_dir(work, "parallel")
    s = run_command(
        ["parallel", "--will-cite", "-j", str(j), f"true > {d}/{{}}.log"], n, stdin_lines=n
    )
    assert len(os.listdir(d)) == n
    return s


def parse_tree(spec: str, python: str, pycache: Path) -> Tree:
    """``[LABEL=]DIR``: DIR is a checkout's root or its ``src``."""
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = "", spec
    src = Path(path).resolve()
    if (src / "src" / "fleetrun").is_dir():
        src = src / "src"
    if not (src / "fleetrun").is_dir():
        raise SystemExit(f"--fleetrun-src {spec}: no fleetrun package in {src}; give a checkout")
    return Tree(label or src.parent.name, src, python, pycache)


def row(name: str, value: str, note: str = "") -> None:
    """Print one aligned result line (names here are longer than ``_common.row`` allows)."""
    print(f"  {name:<46} {value:>9}  {note}")


def _us(x: float) -> str:
    return f"{x * 1e6:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="commands per contender (default 5000)")
    ap.add_argument("-j", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--parallel-n", type=int, default=1000, help="GNU parallel's commands (default 1000)"
    )
    ap.add_argument(
        "--fleetrun-src", action="append", default=[], metavar="[LABEL=]DIR",
        help="a fleetrun checkout (or its src) to run; repeat to compare trees "
        "(default: the tree holding this file)",
    )  # fmt: skip
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs fleetrun")
    ap.add_argument("--quick", action="store_true", help="smoke test: 300 commands, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.n, args.rounds = min(args.n, 300), min(args.rounds, 2)
    n, j = args.n, args.j
    pn = min(args.parallel_n, n)
    work = Path(tempfile.mkdtemp(prefix="fleetrun-bench-spawn-")).resolve()
    try:
        pycache = work / "pycache"
        trees = [parse_tree(s, args.python, pycache) for s in args.fleetrun_src] or [
            Tree("fleetrun", HERE, args.python, pycache)
        ]
        if len({t.label for t in trees}) != len(trees):
            raise SystemExit("--fleetrun-src: give each tree its own LABEL= (two share a name)")
        print(
            f"end-to-end spawn: {n:,} `true` commands at -j {j}, one log file each; "
            f"{args.rounds} interleaved rounds (python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cpu(s))"
        )
        plan, plan1 = write_plan(work, n), write_plan(work, 1)
        named = bool(args.fleetrun_src)
        fr_names = [f"fleetrun[{t.label}]" if named else "fleetrun apply" for t in trees]
        contenders: list[tuple[str, Callable[[], Sample]]] = []
        for name, tree in zip(fr_names, trees, strict=True):
            print(f"  {name}: {tree.python} -m fleetrun, imports {tree.where()}")
            contenders.append((name, lambda t=tree: run_fleetrun(t, work, plan, n, j)))
        contenders.append(("xargs true", lambda: run_xargs_bare(n, j)))
        contenders.append(("xargs sh -c 'true > log'", lambda: run_xargs_logs(work, n, j)))
        if have_parallel():
            contenders.append(("GNU parallel", lambda: run_parallel(work, pn, j)))
            if pn != n:
                print(f"  GNU parallel runs {pn:,} commands; rates are compared")
        else:
            print("  GNU parallel: not installed and not installable here; skipped")
        names = [c[0] for c in contenders]

        # The warm-up that caches each tree's bytecode, then its fixed cost.
        for t in trees:
            run_fleetrun(t, work, plan1, 1, j)
        fixed = {
            name: median([run_fleetrun(t, work, plan1, 1, j).secs for _ in range(3)])
            for name, t in zip(fr_names, trees, strict=True)
        }
        if not args.quick:
            settle_deletions()
        print(f"  load at start {load()}")
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for name, fn in order:
                os.sync()  # no run pays for the writeback of the one before
                samples[name].append(fn())
            cells = "  ".join(f"{name} {samples[name][-1].secs:.2f}s" for name in names)
            print(f"  round {r + 1}: {cells}  (load {load()})")
        print(f"  load at end {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'medians':<49}{'wall s':>9}  {'tasks/s':>9}")
    for name in names:
        xs = samples[name]
        row(name, f"{median([s.secs for s in xs]):.3f}", f"{median([s.rate for s in xs]):>9,.0f}")
    for name in fr_names:
        row(f"{name}, 1-target plan", f"{fixed[name]:.3f}", "fixed cost of one apply (median of 3)")
    print("throughput ratios (median of per-round ratios; > 1: the first is faster)")

    def ratio(a: str, b: str, target: float | None = None) -> None:
        per = [x.rate / y.rate for x, y in zip(samples[a], samples[b], strict=True)]
        med = median(per)
        note = " ".join(f"{x:.2f}" for x in per)
        if target is not None:
            note += f"  target >= {target:g}: {verdict(med >= target)}"
        row(f"{a} / {b}", f"{med:.2f}x", note)

    for fr in fr_names:
        ratio(fr, "xargs true", 1.0)
        ratio(fr, "xargs sh -c 'true > log'")
        if "GNU parallel" in samples:
            ratio(fr, "GNU parallel", 5.0)
    for other in fr_names[1:]:
        ratio(other, fr_names[0])
    print(f"{'CPU per task, us (median of rounds)':<49}{'own':>9}  {'with children':>13}")
    for name in names:
        own = median([s.own_cpu for s in samples[name]])
        everything = median([s.all_cpu for s in samples[name]])
        row(name, _us(own), f"{_us(everything):>13}")


if __name__ == "__main__":
    main()
