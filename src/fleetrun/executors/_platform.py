"""Which process code runs on this system: the Linux fast path or the portable one.

The local executor, the liveness of recorded processes and the search for
orphans each exist twice (the way trio keeps ``_subprocess_platform/``):

- **linux**: ``_local``, ``_proc``, ``_spawner``, ``_exits``, ``_procfs``,
  ``_reaper``, ``_cspawn``: ``posix_spawn`` with the GIL released, pidfds in
  one epoll set, ``/proc``, fleetrun as the child subreaper of its attempts;
- **portable**: ``_posix_local`` and ``_posix_procs``: asyncio subprocesses,
  psutil, the attempt's tag in the environment; any POSIX system.

The Linux path is chosen where it works (Linux, ``os.pidfd_open`` working,
``select.epoll``, ``/proc``, ``prctl``); the portable one elsewhere.
``FLEETRUN_PLATFORM=portable`` forces the portable path, ``linux`` insists on
the fast one (an error where it cannot run), ``auto`` (or unset) chooses.

The choice is made on first use (``LocalExecutor()``, ``process_alive`` and
the rest below; not at import: ``fleetrun plan`` never makes it), and the
chosen modules are imported then; nothing else imports them, so nothing
Linux-specific is loaded on another system.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from fleetrun.errors import UsageError

if TYPE_CHECKING:
    from fleetrun.executors._contract import Executor
    from fleetrun.executors._orphans import OrphanFinderBase, TaggedProcess

ENV = "FLEETRUN_PLATFORM"
LINUX = "linux"
PORTABLE = "portable"

LINUX_MODULES = tuple(
    f"fleetrun.executors.{m}"
    for m in ("_local", "_proc", "_spawner", "_exits", "_procfs", "_reaper", "_cspawn")
)
"""The modules of the Linux path (pidfd, epoll, ``/proc``, prctl, ctypes spawn)."""

_MODULES = {
    LINUX: (
        "fleetrun.executors._local",
        "fleetrun.executors._procfs",
        "fleetrun.executors._reaper",
    ),
    PORTABLE: (
        "fleetrun.executors._posix_local",
        "fleetrun.executors._posix_procs",
        "fleetrun.executors._posix_procs",
    ),
}
"""Per path: the executor's module, the process table's, the tag search's."""

_CHOSEN: list[str] = []
_log = logging.getLogger(__name__)


def linux_missing() -> str | None:
    """Why the Linux path cannot run here, in words; None when it can."""
    if not sys.platform.startswith("linux"):
        return f"this system is {sys.platform}, not Linux"
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return "os.pidfd_open is missing"
    try:
        os.close(pidfd_open(os.getpid()))
    except OSError as e:
        return f"pidfd_open fails ({e.strerror}; Linux 5.3 or later is needed)"
    import select

    if not hasattr(select, "epoll"):
        return "select.epoll is missing"
    if not os.path.isdir("/proc/self"):
        return "/proc is not mounted"
    from fleetrun.executors import _reaper

    if not _reaper.can_subreap():
        return "prctl(PR_SET_CHILD_SUBREAPER) is not available"
    return None


def choose(setting: str | None) -> str:
    """The path for a ``FLEETRUN_PLATFORM`` value (None or empty: unset)."""
    value = (setting or "auto").strip().lower()
    if value == PORTABLE:
        _log.debug("process code: the portable path (%s=%s)", ENV, setting)
        return PORTABLE
    if value not in (LINUX, "auto"):
        raise UsageError(
            f"{ENV}={setting}: not a platform; use {LINUX}, {PORTABLE} or auto (or unset it)"
        )
    missing = linux_missing()
    if missing is None:
        _log.debug("process code: the Linux fast path")
        return LINUX
    if value == LINUX:
        raise UsageError(
            f"{ENV}=linux: the Linux process code cannot run here ({missing}); "
            f"unset {ENV} or set it to {PORTABLE}"
        )
    _log.debug("process code: the portable path (%s)", missing)
    return PORTABLE


def selected() -> str:
    """The path this process runs (chosen once, on first use): ``linux`` or ``portable``."""
    if not _CHOSEN:
        _CHOSEN.append(choose(os.environ.get(ENV)))
    return _CHOSEN[0]


_LOADED: dict[int, ModuleType] = {}


def _module(role: int) -> ModuleType:
    module = _LOADED.get(role)
    if module is None:
        module = _LOADED[role] = importlib.import_module(_MODULES[selected()][role])
    return module


def executor_module() -> ModuleType:
    """The module of the chosen ``LocalExecutor``."""
    return _module(0)


def procs_module() -> ModuleType:
    """The module that reads the process table on the chosen path."""
    return _LOADED.get(1) or _module(1)


def LocalExecutor(grace: float = 10.0, *, spawn_threads: int | None = None) -> Executor:
    """A local executor of the chosen path (``grace``: when an attempt gives none;
    ``spawn_threads``: the Linux path's spawner threads, None for its default)."""
    executor: Executor = executor_module().LocalExecutor(grace, spawn_threads=spawn_threads)
    return executor


def LocalOrphanFinder() -> OrphanFinderBase:
    """The finder of local orphans of the chosen path."""
    finder: OrphanFinderBase = procs_module().LocalOrphanFinder()
    return finder


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    result: int | None = procs_module().process_start_time(pid)
    return result


def process_alive(pid: int, start_time: int | None) -> bool:
    """True when ``pid`` runs and, if ``start_time`` is known, is the same process."""
    return bool(procs_module().process_alive(pid, start_time))


def kill_groups(pgids: Iterable[int], grace: float) -> None:
    """End process groups the trio way: SIGTERM, wait up to ``grace``, SIGKILL,
    then wait until they are gone."""
    procs_module().kill_groups(pgids, grace)


def tagged_processes(run_ids: Iterable[str]) -> list[TaggedProcess]:
    """Live processes of ``run_ids`` that carry an attempt tag (a full scan), for
    ``--kill-orphans``: the processes of a dead run, wherever they went."""
    found: list[TaggedProcess] = _module(2).tagged_processes(run_ids)
    return found
