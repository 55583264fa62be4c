"""A compute cluster made of local processes: one Dask scheduler and N worker processes.

Two uses: the embedded cluster that ``ClusterExecutor`` starts for one run
when no scheduler is named, and (through ``fleetrun.cluster``) the long-lived
cluster of ``fleetrun cluster up --local``, recorded in the state directory
(``<state>/cluster/local/cluster.json``, owner-only) so that later commands
find it. It lives here, at the bottom of the package order, because the
executor needs it and executors import no other fleetrun package.

Every worker advertises ``MACHINE=1`` and has one thread, so one job runs per
worker at a time. The scheduler is started with ``allowed-failures`` 0: a
job whose worker dies errs at once (``KilledWorker``), and fleetrun's own
retry policy decides whether it runs again, so a job's outputs come from
exactly one successful run.

The ``distributed`` library logs to stderr from the moment it is imported;
``quiet_dask_logs`` takes its handlers off, so that what it logs in fleetrun's
process (a lost scheduler's tracebacks, reconnection attempts) never reaches
the console: its records go to the handlers of the application that embeds
fleetrun, if it set any, and are dropped otherwise (fleetrun keeps no log file
of its own; the processes of a local cluster write theirs in its directory).

Processes are started with ``python -m distributed.cli.dask_scheduler`` and
``... dask_worker`` (``--no-nanny``: the pid recorded is the worker's own).
They run in their own sessions; stopping one is SIGTERM, a grace period,
SIGKILL. Invariant: a pid is signalled only while its start time (from
``/proc``) is the one recorded, so a reused pid is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetrun.errors import ExecutorError

MACHINE = "MACHINE"
"""The resource every worker advertises once: one job per machine."""

RECORD = "cluster.json"


_DASK_LOGGERS = ("distributed", "tornado", "bokeh")


def quiet_dask_logs() -> None:
    """Keep the log records of ``distributed`` (and of the libraries it configures)
    off the console: take off the stderr handlers it installed at import, and let
    records go up to the root logger with a ``NullHandler`` in the way, so that
    Python's last-resort handler does not print them either. Idempotent."""
    import distributed  # noqa: F401  (it configures its loggers when imported)

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] not in _DASK_LOGGERS:
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        logger.propagate = True


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


@dataclass(frozen=True, slots=True)
class LocalProcess:
    """A process of a local cluster: its name, pid and start time."""

    name: str
    pid: int
    start_time: int | None

    def alive(self) -> bool:
        """True while this very process (not a reuse of its pid) runs."""
        now = proc_start_time(self.pid)
        return now is not None and (self.start_time is None or now == self.start_time)


@dataclass(slots=True)
class LocalCluster:
    """A scheduler and worker processes on this machine, in ``directory``.

    ``resources`` are what each worker advertises (``MACHINE=1`` always).
    """

    directory: Path
    port: int = 0
    host: str = "127.0.0.1"
    resources: Mapping[str, float] = field(default_factory=dict)
    address: str = ""
    scheduler: LocalProcess | None = None
    workers: list[LocalProcess] = field(default_factory=list)
    _children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _next: int = 0

    # -- starting -------------------------------------------------------------------

    def start(self, workers: int, *, timeout: float = 120.0) -> str:
        """Start the scheduler and ``workers`` workers; return the scheduler address
        once every worker has joined."""
        _private_dir(self.directory)
        sfile = self.directory / "scheduler.json"
        sfile.unlink(missing_ok=True)
        env = dict(os.environ)
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", self.host]
        argv += ["--port", str(self.port), "--no-dashboard", "--no-show"]
        argv += ["--scheduler-file", str(sfile)]
        self.scheduler = self._spawn("scheduler", argv, env)
        deadline = time.monotonic() + timeout
        while not sfile.exists() or not sfile.read_text().strip():
            if not self.scheduler.alive():
                raise ExecutorError(f"the scheduler did not start; see {self._log('scheduler')}")
            if time.monotonic() > deadline:
                self.stop()
                raise ExecutorError("the scheduler did not start in time")
            time.sleep(0.05)
        self.address = json.loads(sfile.read_text())["address"]
        self.add_workers(workers, timeout=max(deadline - time.monotonic(), 1.0))
        return self.address

    def add_workers(self, n: int, *, timeout: float = 120.0) -> list[LocalProcess]:
        """Start ``n`` more workers and wait until they have joined the scheduler."""
        res = {MACHINE: 1.0, **dict(self.resources)}
        spec = ",".join(f"{k}={v:g}" for k, v in res.items())
        started = []
        for _ in range(n):
            name = f"local-{self._next}"
            self._next += 1
            argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address]
            argv += ["--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
            argv += ["--host", "127.0.0.1", "--resources", spec]
            started.append(self._spawn(name, argv, dict(os.environ)))
        self.workers.extend(started)
        if started:
            self._wait_for({p.name for p in started}, timeout)
        return started

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> LocalProcess:
        log = os.open(self._log(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(log)
        self._children[child.pid] = child
        return LocalProcess(name, child.pid, proc_start_time(child.pid))

    def _log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def _wait_for(self, names: set[str], timeout: float) -> None:
        from distributed import Client

        quiet_dask_logs()
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            while True:
                info = client.scheduler_info(n_workers=-1)["workers"].values()
                if names <= {str(w.get("name")) for w in info}:
                    return
                dead = [p.name for p in self.workers if p.name in names and not p.alive()]
                if dead:
                    raise ExecutorError(f"worker {dead[0]} exited; see {self._log(dead[0])}")
                if time.monotonic() > deadline:
                    raise ExecutorError(f"{len(names)} workers did not join in {timeout:g}s")
                time.sleep(0.1)

    # -- stopping -------------------------------------------------------------------

    def forget(self, names: set[str]) -> None:
        """Drop workers that have exited from the record (reaping them if ours)."""
        for p in [p for p in self.workers if p.name in names]:
            child = self._children.pop(p.pid, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
            self.workers.remove(p)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every worker, then the scheduler: SIGTERM, ``grace``, SIGKILL; reap ours."""
        stop_processes(self.workers, grace, self._children)
        if self.scheduler is not None:
            stop_processes([self.scheduler], grace, self._children)
        self.workers = []
        self.scheduler = None

    # -- the record -----------------------------------------------------------------

    def save(self) -> Path:
        """Write the owner-only record of this cluster; return its path."""
        data = {
            "address": self.address,
            "port": self.port,
            "host": self.host,
            "resources": dict(self.resources),
            "next": self._next,
            "scheduler": asdict(self.scheduler) if self.scheduler else None,
            "workers": [asdict(w) for w in self.workers],
        }
        path = self.directory / RECORD
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
        return path

    @staticmethod
    def recorded(directory: Path) -> bool:
        """True when a cluster is recorded in ``directory``."""
        return (directory / RECORD).exists()

    @classmethod
    def load(cls, directory: Path) -> LocalCluster:
        """The cluster recorded in ``directory`` (``ExecutorError`` when it cannot be read)."""
        path = directory / RECORD
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ExecutorError(f"cannot read the local cluster record {path}: {e}") from None
        sched = data.get("scheduler")
        return cls(
            directory=directory,
            port=int(data.get("port", 0)),
            host=str(data.get("host", "127.0.0.1")),
            resources=data.get("resources", {}),
            address=str(data["address"]),
            scheduler=LocalProcess(**sched) if sched else None,
            workers=[LocalProcess(**w) for w in data.get("workers", [])],
            _next=int(data.get("next", 0)),
        )

    def remove_files(self) -> list[Path]:
        """Delete the record, scheduler file and logs; return what is still there."""
        for p in self.directory.glob("*"):
            if p.is_file():
                p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return list(self.directory.glob("*")) if self.directory.exists() else []


def _private_dir(directory: Path) -> None:
    """Make ``directory`` owner-only, and each folder above it that this makes too
    (``<state>/cluster`` as well as ``<state>/cluster/local``)."""
    missing = []
    at = directory
    while not at.exists():
        missing.append(at)
        at = at.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        os.chmod(d, 0o700)
    os.chmod(directory, 0o700)


def stop_processes(
    procs: list[LocalProcess],
    grace: float,
    children: dict[int, subprocess.Popen[bytes]] | None = None,
) -> None:
    """SIGTERM each live process, wait up to ``grace``, SIGKILL what is left; reap children."""
    children = children if children is not None else {}
    live = [p for p in procs if p.alive()]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        for p in live:
            child = children.get(p.pid)
            if child is not None:
                child.poll()
        live = [p for p in live if p.alive()]
        if not live or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    for p in procs:
        child = children.pop(p.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        # Not our child: wait until the kernel has ended it (SIGKILL is not instant).
        while p.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
