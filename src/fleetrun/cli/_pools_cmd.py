"""``fleetrun pools``: the shared pools of this user on this machine, their limits and users."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import click

from fleetrun.engine import SharedPoolInfo, SharedPoolUser, read_shared_pools
from fleetrun.layout import POOLS_DIR_ENV, shared_pools_dir


@click.command("pools")
@click.option(
    "--pools-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Where the shared pools' file is (default: ${POOLS_DIR_ENV}, else "
    "$XDG_STATE_HOME/fleetrun, else ~/.local/state/fleetrun).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def pools_cmd(pools_dir: str | None, fmt: str) -> None:
    """Show the shared pools (`shared: NAME` on a plan's pool): the limits in
    effect now (concurrency and slots in use, rate, Retry-After pause), whose
    settings hold, the last change, and the runs using each (pid, slots held).
    Every run of this user on this machine that names a shared pool uses the
    same one, whatever its plan and state directory. Read-only."""
    where = Path(pools_dir) if pools_dir else shared_pools_dir(create=False)
    found = read_shared_pools(where)
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(p) for p in found], indent=2))
        return
    if not found:
        click.echo(f"no shared pools in {where} (a plan's pool with `shared: NAME` makes one)")
        return
    click.echo(f"shared pools in {where}")
    for p in found:
        click.echo(_pool_text(p))


def _pool_text(p: SharedPoolInfo) -> str:
    limits = []
    in_use = f"{p.in_use} in use"
    if p.gone_slots:
        held = "held by a run that is gone" if _gone_runs(p) == 1 else "held by runs that are gone"
        in_use += f", {p.gone_slots} more {held}: they come back at the pool's next start"
    if p.concurrency is not None:
        limits.append(f"concurrency {p.concurrency} ({in_use})")
    else:
        limits.append(in_use)
    if p.rate is not None:
        limits.append(f"rate {p.rate:.4g}/s")
    if p.paused_for > 0:
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + p.paused_for))
        limits.append(f"paused {p.paused_for:.1f}s more (until {until})")
    lines = [f"{p.name}: {', '.join(limits)}"]
    lines.append(f"  settings: {p.settings} (opened by run {p.opened_by})")
    if p.last_change and p.last_change != "opened":
        at = time.strftime("%H:%M:%S", time.localtime(p.changed_at))
        lines.append(f"  last change: {p.last_change} (run {p.changed_by}, {at})")
    if not p.users:
        lines.append("  no run uses it")
    lines.extend(_user_text(u) for u in p.users)
    return "\n".join(lines)


def _gone_runs(p: SharedPoolInfo) -> int:
    return sum(1 for u in p.users if not u.alive and u.slots)


def _user_text(u: SharedPoolUser) -> str:
    slots = f"{u.slots} slot{'' if u.slots == 1 else 's'}"
    since = time.strftime("%H:%M:%S", time.localtime(u.since))
    text = f"  run {u.run_id}  pid {u.pid}  {slots}  since {since}"
    if not u.alive:
        text += "  (gone: its slots come back at the pool's next start)" if u.slots else "  (gone)"
    return text
