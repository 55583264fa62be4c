"""``SSHOrphanFinder``: finds and ends the remote process groups a dead run left.

Given the journal's SSH handles (host and process group), it connects to each
host once (through the same connection pool as the executor, so the same
keys, known_hosts and config apply), lists the members of each group still
alive with ``pgrep -g``, and keeps only groups that still carry the dead
run's ``FLEETRUN_RUN_ID`` in some member's environment (a group id reused by
an unrelated program since is never touched; where ``/proc`` is missing the
check is skipped). ``end`` sends ``kill -TERM``, waits on the host until the
groups are gone or ``grace`` has passed, then sends ``kill -KILL`` to what is
left. A group whose members are only shells (no program the command exec'd
carries the variable) is not found.

Each call (``find``, ``end``) opens its connections and closes them before it
returns, so the finder holds nothing bound to an event loop between calls:
finding in one ``asyncio.run`` and ending in another works.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Sequence

from fleetrun.executors._contract import Orphan, RecordedAttempt
from fleetrun.executors._ssh import SSHExecutor
from fleetrun.executors._ssh_conn import SSHFailure
from fleetrun.executors._ssh_lib import asyncssh
from fleetrun.executors._ssh_remote import BOOTSTRAP, end_command
from fleetrun.executors._ssh_spec import SSHSpec, parse_destination
from fleetrun.names import RUN_ID_ENV

# ``f PGID RUN``: print "PGID PIDS" when the group still has members and (where
# /proc shows environments) one of them carries FLEETRUN_RUN_ID=RUN, so a group
# id reused by an unrelated process since is never reported.
_FIND = (
    'f() { p=$(pgrep -g "$1" 2>/dev/null | tr "\\n" " "); [ -n "$p" ] || return 0; '
    "if [ -d /proc/self ]; then for q in $p; do "
    f"if tr '\\0' '\\n' <\"/proc/$q/environ\" 2>/dev/null | grep -qxF \"{RUN_ID_ENV}=$2\"; "
    'then echo "$1 $p"; return 0; fi; done; return 0; fi; echo "$1 $p"; }; '
)


class SSHOrphanFinder:
    """Finds and ends the remote process groups that dead runs' SSH attempts left.

    ``targets`` maps target names to their ``ssh`` attribute (from the plan),
    so a handle is reached the way its attempt was; a handle whose target is
    not there is reached at its recorded ``user@host:port`` with the agent's
    keys and ``~/.ssh/config``.
    """

    kind = "ssh"

    def __init__(self, targets: dict[str, object] | None = None) -> None:
        self.targets = dict(targets or {})
        self._executor = SSHExecutor()

    def _spec(self, rec: RecordedAttempt) -> SSHSpec | None:
        target = rec.key.partition("@")[2]
        if target in self.targets:
            with contextlib.suppress(ValueError):
                return SSHSpec.from_attribute(self.targets[target], target)
        dest = parse_destination(rec.handle.host)
        if dest is None:
            return None
        return SSHSpec(host=dest[1], port=dest[2], user=dest[0])

    async def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """The recorded SSH attempts whose remote process group still has members."""
        by_spec: dict[SSHSpec, list[RecordedAttempt]] = {}
        for rec in attempts:
            if rec.handle.kind == self.kind and rec.handle.pgid is not None:
                spec = self._spec(rec)
                if spec is not None:
                    by_spec.setdefault(spec, []).append(rec)
        found: list[Orphan] = []
        if not by_spec:
            return found
        pool = self._executor.pool

        async def one(spec: SSHSpec, recs: list[RecordedAttempt]) -> None:
            calls = "; ".join(f"f {int(r.handle.pgid or 0)} {shlex.quote(r.run_id)}" for r in recs)
            try:
                conn = await pool.connection(pool.entry(spec))
                async with asyncio.timeout(spec.connect_timeout):
                    res = await conn.run(BOOTSTRAP, input=_FIND + calls + "; true\n", check=False)
            except (SSHFailure, asyncssh.Error, OSError, TimeoutError):
                return  # unreachable: nothing can be said (or done) about it now
            alive: dict[int, tuple[int, ...]] = {}
            for line in str(res.stdout or "").splitlines():
                g, *pids = line.split()
                alive[int(g)] = tuple(int(p) for p in pids)
            for r in recs:
                if r.handle.pgid in alive:
                    found.append(Orphan(r.run_id, r.key, r.attempt, r.handle, alive[r.handle.pgid]))

        try:
            async with asyncio.TaskGroup() as tg:
                for spec, recs in by_spec.items():
                    tg.create_task(one(spec, recs))
        finally:
            await self._executor.aclose()
        return found

    async def end(self, orphans: Sequence[Orphan], grace: float) -> None:
        """SIGTERM each orphan's remote group, ``grace`` seconds, SIGKILL."""
        groups: dict[SSHSpec, list[int]] = {}
        for o in orphans:
            spec = self._spec(RecordedAttempt(o.run_id, o.key, o.attempt, o.handle))
            if spec is not None and o.handle.pgid is not None:
                groups.setdefault(spec, []).append(o.handle.pgid)
        if not groups:
            return
        pool = self._executor.pool

        async def one(spec: SSHSpec, pgids: list[int]) -> None:
            # TERM, then on the host: wait until the groups are gone or the grace
            # is over, then KILL whatever is left (a no-op for groups gone).
            script = end_command(pgids, "TERM", max(grace, 0.0), then_kill=True).decode()
            with contextlib.suppress(SSHFailure, asyncssh.Error, OSError, TimeoutError):
                conn = await pool.connection(pool.entry(spec))
                async with asyncio.timeout(spec.connect_timeout + grace + 5):
                    await conn.run(BOOTSTRAP, input=script, check=False)

        try:
            async with asyncio.TaskGroup() as tg:
                for spec, pgids in groups.items():
                    tg.create_task(one(spec, pgids))
        finally:
            await self._executor.aclose()

    async def aclose(self) -> None:
        """Close the finder's connections."""
        await self._executor.aclose()
