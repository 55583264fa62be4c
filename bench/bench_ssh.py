"""SSH fan-out: ``true`` on 200 targets over a loopback sshd, ``fleetrun exec`` vs Ansible, pssh.

One throwaway OpenSSH server on 127.0.0.1 (``fleetrun.executors.testing``,
sshd's defaults: ``MaxStartups 10:30:100``, ``MaxSessions 10``) stands in for
the fleet; its client config maps every host name to it, so ``h-000`` ...
``h-199`` are 200 distinct hosts - 200 connections, 200 handshakes - for every
contender. Host keys are checked strictly by all three (one known_hosts file).

Contenders, each started cold as its own process, as a user runs it
(interpreter start-up, imports, every handshake included; Ansible's
ControlPersist sockets removed before each run), at the same parallelism
(``-j``, default 50):

- fleetrun: ``fleetrun exec FLEET -j 50 -- true``, end to end: the CLI, the
  plan built from the fleet file, the engine, the journal (a new state
  directory each run), the console (its progress on stderr, each target's
  block and the table on stdout, both read through pipes). Its modules run
  byte-compiled, as a pip install leaves them (and as Ansible's are): a
  first run on 2 hosts, not timed, fills a bytecode cache of the bench's own
  (``PYTHONPYCACHEPREFIX`` under /tmp; the source tree is left alone);
- Ansible ad hoc: ``ansible all -m command -a true -f 50`` (ansible-core in
  its own virtual environment under /tmp, installed with pip on first use;
  pipelining on, Python interpreter given, as a tuned setup has it);
- ``parallel-ssh -p 50 true`` (Debian's pssh, one ``ssh`` process per host).

Goals: fleetrun >= 10x Ansible and >= 2x pssh in throughput (hosts served per
second). The same run then measures ``fleetrun exec`` alone on ``--big``
(1,000) targets: wall clock, peak RSS and the most descriptors open at once.

    python bench/bench_ssh.py [--n 200] [-j 50] [--rounds 1] [--big 1000]
                              [--skip-ansible] [--skip-pssh] [--user U]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

WORK = Path("/tmp/fleetrun-bench-ssh")
VENV = Path("/tmp/fleetrun-bench-ansible")


def hosts(n: int) -> list[str]:
    """The fleet's host names."""
    return [f"h-{i:04d}" for i in range(n)]


# -- fleetrun exec, end to end -------------------------------------------------------


def fleet_file(n: int, config: Path) -> Path:
    """A fleet file of ``n`` SSH targets reached through the server's client config."""
    path = WORK / f"fleet-{n}.yaml"
    # A generous connect timeout: the point is that nothing is dropped, not the
    # handshake speed of a loaded machine (the other contenders wait as long).
    path.write_text(
        "".join(
            f"{h}: {{ssh: {{host: {h}, config_file: {config}, connect_timeout: 120}}}}\n"
            for h in hosts(n)
        )
    )
    return path


class _Peak:
    """Samples a process's open descriptors until it ends; keeps the most seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.fds


_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_fleetrun(n: int, j: int, config: Path, tag: str) -> tuple[float, dict[str, float]]:
    """``fleetrun exec FLEET -j J -- true``; its wall clock, hosts served, peak RSS
    (MiB) and the most descriptors it had open."""
    fleet = fleet_file(n, config)
    state = WORK / "state" / f"{tag}-{time.monotonic_ns()}"
    fleetrun = [sys.executable, "-m", "fleetrun"]
    cmd = [*fleetrun, "exec", str(fleet), "-j", str(j), "--state-dir", str(state), "--", "true"]
    env = fleetrun_env()
    # A small parent that reports its child's peak RSS (its own is not counted:
    # it waits, then reads RUSAGE_CHILDREN).
    wrapper = [sys.executable, "-c", _RSS, *cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(
        wrapper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    peak: _Peak | None = None
    # The wrapper's child is fleetrun: sample its descriptors while it runs.
    for _ in range(200):
        kids = _children(p.pid)
        if kids:
            peak = _Peak(kids[0])
            break
        if p.poll() is not None:
            break
        time.sleep(0.005)
    out, err = p.communicate(timeout=3600)
    wall = time.perf_counter() - t0
    fds = peak.stop() if peak is not None else 0
    m = re.search(r"^(\d+) succeeded, (\d+) failed$", out, re.M)
    if m is None:
        raise RuntimeError(f"fleetrun exec failed (exit {p.returncode}): {err[-2000:]}")
    rss_kib = int(err.strip().splitlines()[-1])
    if "Traceback" in err or "Warning" in err:
        print(f"# note: fleetrun printed on stderr: {err.strip()[-500:]}")
    return wall, {"ok": int(m.group(1)), "failed": int(m.group(2)), "rss_mb": rss_kib / 1024,
                  "fds": fds}  # fmt: skip


def fleetrun_env() -> dict[str, str]:
    """fleetrun's environment: its source importable, its bytecode cached under WORK."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return env


def warm_up(config: Path) -> None:
    """One untimed ``fleetrun exec`` on 2 hosts: every module it imports is
    byte-compiled into the bench's cache, as an install would have it."""
    run_fleetrun(2, 2, config, "warm-up")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


# -- contenders ------------------------------------------------------------------------


def ensure_ansible() -> Path | None:
    ansible = VENV / "bin" / "ansible"
    if ansible.exists():
        return ansible
    print("installing ansible-core into", VENV, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    p = subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "-q", "ansible-core"],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0 or not ansible.exists():
        print("  cannot install ansible-core:", p.stderr.strip()[-500:])
        return None
    return ansible


def run_ansible(ansible: Path, n: int, j: int, config: Path) -> tuple[float, int]:
    inv = WORK / f"inventory-{n}.ini"
    inv.write_text(
        "[fleet]\n"
        + "".join(f"{h}\n" for h in hosts(n))
        + "[fleet:vars]\n"
        + f"ansible_ssh_common_args='-F {config}'\n"
        + "ansible_python_interpreter=/usr/bin/python3\n"
    )
    cp = WORK / "ansible-cp"
    shutil.rmtree(cp, ignore_errors=True)  # cold: no ControlPersist master left over
    env = {
        **os.environ,
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp),
        "ANSIBLE_LOCAL_TEMP": str(WORK / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    cmd = [str(ansible), "all", "-i", str(inv), "-m", "command", "-a", "true", "-f", str(j)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=3600)
    wall = time.perf_counter() - t0
    ok = p.stdout.count("| CHANGED") + p.stdout.count("| SUCCESS")
    # Close the persistent masters it left, so they do not load the next runs.
    subprocess.run(["pkill", "-f", str(cp)], check=False)
    return wall, ok


def run_pssh(n: int, j: int, config: Path) -> tuple[float, int]:
    hf = WORK / f"hosts-{n}.txt"
    hf.write_text("".join(f"{h}\n" for h in hosts(n)))
    exe = shutil.which("parallel-ssh") or shutil.which("pssh")
    assert exe is not None
    cmd = [exe, "-h", str(hf), "-p", str(j), "-t", "600", "-x", f"-F {config}", "true"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    wall = time.perf_counter() - t0
    return wall, p.stdout.count("[SUCCESS]")


BENCH_USER = "fleetrun-bench"


def bench_user(wanted: str | None) -> str | None:
    """The remote user: one whose login shell is /bin/sh with no start-up files.

    Every contender opens at least one session per host, and sshd starts each
    through the user's login shell, which for bash includes ~/.bashrc (on a
    developer's root account, ``pyenv init`` alone costs 200 ms). The benchmark
    measures the fan-out tool, not that, so as root it logs in as a system
    user made for it (``useradd -r -s /bin/sh``); ``--user`` chooses another.
    """
    if wanted is not None:
        return wanted or None
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        print("# note: logging in as the current user; its shell start-up files are measured too")
        return None
    probe = subprocess.run(["id", BENCH_USER], capture_output=True, check=False)
    if probe.returncode != 0:
        home = WORK / "home"
        subprocess.run(
            ["useradd", "-r", "-M", "-d", str(home), "-s", "/bin/sh", BENCH_USER], check=True
        )
        # "!" (locked) makes sshd refuse even key logins without PAM; "*": no password.
        subprocess.run(["usermod", "-p", "*", BENCH_USER], check=True)
    home = WORK / "home"
    if not home.exists():
        home.mkdir(parents=True)
        shutil.chown(home, BENCH_USER)
    return BENCH_USER


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("-j", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--skip-ansible", action="store_true")
    ap.add_argument("--skip-pssh", action="store_true")
    ap.add_argument("--user", default=None, help="remote user ('' = the current one)")
    args = ap.parse_args()

    from _common import load, machine

    from fleetrun.executors.testing import LoopbackSshd, available

    if not available():
        sys.exit("sshd and ssh-keygen are needed (apt-get install openssh-server)")
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"# bench_ssh: true on {args.n} hosts over loopback sshd, -j {args.j}, fleetrun exec")
    print(f"# {machine()}")
    server = LoopbackSshd.start(WORK / f"sshd-{os.getpid()}", user=bench_user(args.user))
    config = server.client_config
    ansible = None if args.skip_ansible else ensure_ansible()
    has_pssh = bool(shutil.which("parallel-ssh") or shutil.which("pssh"))
    walls: dict[str, list[float]] = {"fleetrun": [], "ansible": [], "pssh": []}
    oks: dict[str, list[int]] = {"fleetrun": [], "ansible": [], "pssh": []}
    try:
        warm_up(config)
        for r in range(args.rounds):
            wall, info = run_fleetrun(args.n, args.j, config, f"r{r}")
            walls["fleetrun"].append(wall)
            oks["fleetrun"].append(int(info["ok"]))
            print(f"round {r + 1}: fleetrun {wall:7.2f}s  ok {info['ok']}/{args.n}", flush=True)
            if has_pssh and not args.skip_pssh:
                wall, ok = run_pssh(args.n, args.j, config)
                walls["pssh"].append(wall)
                oks["pssh"].append(ok)
                print(f"round {r + 1}: pssh     {wall:7.2f}s  ok {ok}/{args.n}", flush=True)
            if ansible is not None:
                wall, ok = run_ansible(ansible, args.n, args.j, config)
                walls["ansible"].append(wall)
                oks["ansible"].append(ok)
                print(f"round {r + 1}: ansible  {wall:7.2f}s  ok {ok}/{args.n}", flush=True)
        print()
        # Throughput counts the hosts that succeeded: a host dropped by sshd's
        # MaxStartups (which pssh does not retry) was not served.
        print(f"{'contender':<10} {'wall (median)':>14} {'ok (median)':>12} {'ok hosts/s':>11}")
        med = {k: statistics.median(v) for k, v in walls.items() if v}
        rate = {k: statistics.median(oks[k]) / med[k] for k in med}
        for k, v in med.items():
            ok_med = statistics.median(oks[k])
            print(f"{k:<10} {v:>13.2f}s {ok_med:>12.0f} {rate[k]:>11.1f}")
        for other, goal in (("ansible", 10.0), ("pssh", 2.0)):
            if other in med:
                ratio = rate["fleetrun"] / rate[other] if rate[other] else float("inf")
                wall_ratio = med[other] / med["fleetrun"]
                verdict = "PASS" if ratio >= goal else "MISS"
                print(
                    f"fleetrun vs {other}: {ratio:.1f}x throughput, {wall_ratio:.1f}x wall "
                    f"(goal >= {goal:g}x) {verdict}"
                )
        if args.big:
            wall, info = run_fleetrun(args.big, args.j, config, "big")
            print(
                f"\nfleetrun, {args.big} hosts: {wall:.2f}s, ok {info['ok']}/{args.big}, "
                f"peak RSS {info['rss_mb']:.0f} MiB, most descriptors open {info['fds']}"
            )
        print(f"# load {load()}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
