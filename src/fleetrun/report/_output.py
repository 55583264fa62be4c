"""``OutputPrinter``: task output on the console, grouped, ordered or streamed.

A subscriber to engine events (called on the event loop thread). It never
holds a task's output in memory beyond one chunk: blocks are read back from
the attempt's log file (already redacted on disk by the executor), and
streamed lines are passed on as they arrive.

Modes (``--output``):

- ``none``: prints nothing.
- ``grouped``: when an attempt ends, its whole log as one block, headed by a
  line such as ``── deploy@uksouth (attempt 2, exit 1, 3.2s) ──``. An attempt
  that printed nothing gets no block (the status lines already say it ran).
- ``ordered``: the same blocks, but in plan order (node id order among the
  run's nodes): an instance's block (all its attempts, in order) is printed once
  it and every earlier instance has settled. Instances that never ran
  (skipped, not started, reused, or failed before spawning) print nothing and
  do not hold up the order. Only log paths are kept until then.
- ``stream``: ``AttemptOutput`` lines as they arrive, each prefixed
  ``task@target | `` (like GNU parallel ``--tag``). A line longer than 64 KiB
  comes in pieces of at most 64 KiB, each with its prefix, in order.

Names in headers and prefixes are shown with control characters escaped
(``printable``). With ``safe`` (the console is a terminal and raw output was
not asked for), task output keeps its colours but every other control
character is escaped (``terminal_safe``): it cannot move the cursor or rewrite
fleetrun's lines.

Invariants: ``write`` is only ever given whole lines (text ending in
``"\\n"``), so output from different attempts never mixes within a line; a
block is written by consecutive ``write`` calls from one ``__call__``, so
nothing else this printer writes lands inside it.

Large logs (the trade-off): a block shows at most ``max_block_bytes`` (1 MiB
by default) of a log: its *tail*, starting at a line boundary, under a line
saying how many bytes before it were left out and where the full log is.
The end of a log is where failures explain themselves, and a console is no
place for gigabytes. The block is read and written in ``_CHUNK`` pieces on the
loop thread: from the page cache that is well under a millisecond per chunk,
so the loop stalls at most for reading ``max_block_bytes`` (plus however long
``write`` itself blocks, as for any console output). Memory stays bounded by
``max_block_bytes`` whatever a task prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fleetrun.engine import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    OutputMode,
    ending_text,
)
from fleetrun.plan import Graph
from fleetrun.report._plain import format_duration, printable, terminal_safe
from fleetrun.textwidth import display_width, ljust

DEFAULT_MAX_BLOCK_BYTES = 1 << 20
"""Most bytes of one log shown in a grouped/ordered block (its tail)."""

_CHUNK = 1 << 16
"""Bytes read from a log per ``read`` (and at most per ``write``, plus one line)."""

RULE = "──"
"""Drawn around a block header."""


@dataclass(slots=True)
class _Done:
    """What is needed to print one finished attempt: never its output."""

    key: str
    attempt: int
    log_path: str | None
    how: str
    took: float


def header(key: str, attempt: int, how: str, took: float) -> str:
    """``── deploy@uksouth (attempt 2, exit 1, 3.2s) ──``."""
    return f"{RULE} {printable(key)} (attempt {attempt}, {how}, {format_duration(took)}) {RULE}"


def describe(ev: AttemptEnded) -> str:
    """How an attempt ended, in a few words: ``exit 1``, ``timed out``, ``cancelled``
    (``engine.ending_text``)."""
    if ev.outcome == "cancelled":
        return "cancelled"
    how = ending_text(ev.exit_code, ev.signal, ev.timed_out, ev.reason)
    if ev.outcome == "retrying":
        how += ", retrying"
    return how


def log_chunks(path: str, max_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> Iterator[str]:
    """The text of the log at ``path`` as whole-line chunks, each ending in ``"\\n"``.

    At most the last ``max_bytes`` bytes are read (from a line boundary when
    there is one); when bytes were left out, the first chunk says how many and
    names the log. Yields nothing for an empty log; a missing log yields one
    line saying so.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        yield f"(no log: {e.strerror or e})\n"
        return
    try:
        # A finished attempt's log no longer grows: its size now is its size.
        size = os.fstat(fd).st_size
        pos = _line_start(fd, max(0, size - max_bytes), size)
        if pos:
            yield f"... {pos} byte(s) before this not shown; the whole log: {path}\n"
        rest = b""
        while pos < size:
            data = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not data:
                break
            pos += len(data)
            data = rest + data
            cut = data.rfind(b"\n")
            # Invariant: rest is the start of one line, shorter than the window.
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield data[: cut + 1].decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace") + "\n"
    finally:
        os.close(fd)


def _line_start(fd: int, start: int, size: int) -> int:
    """The first line start at or after ``start``; ``start`` itself when the window
    holds no line start (its only line began before it: that line's end is shown)."""
    if start == 0:
        return 0
    pos = start - 1
    while pos < size:
        data = os.pread(fd, _CHUNK, pos)
        if not data:
            break
        cut = data.find(b"\n")
        if cut >= 0:
            found = pos + cut + 1
            return found if found < size else start
        pos += len(data)
    return start


class OutputPrinter:
    """Prints task output to ``write`` as ``mode`` asks (see the module docstring).

    ``graph`` gives the plan order; ``only`` (the node ids this run may start)
    narrows the order to the run's nodes. ``write`` receives whole lines only.
    Call ``close()`` when the run is over: in ``ordered`` mode it prints what
    is still held (after an interrupted run), in plan order.
    """

    def __init__(
        self,
        mode: OutputMode,
        graph: Graph,
        write: Callable[[str], None],
        *,
        only: frozenset[int] | None = None,
        max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
        safe: bool = False,
        tabular: bool = False,
    ) -> None:
        self.mode = mode
        self.safe = safe
        # ``--quiet``: no block headers; each line starts with its target (or
        # instance), padded, so a status check across the fleet reads as a table.
        self.tabular = tabular
        names = [self._label(graph.nodes[i].key, graph.nodes[i].target) for i in
                 (range(len(graph.nodes)) if only is None else only)]  # fmt: skip
        self._width = min(40, max((display_width(n) for n in names), default=0))
        self.graph = graph
        self.write = write
        self.max_block_bytes = max_block_bytes
        self._logs: dict[tuple[int, int], tuple[str, float]] = {}
        # ordered mode: the run's nodes in plan order, a cursor into them,
        # the finished attempts of nodes not yet printed, and who has settled.
        order = range(len(graph.nodes)) if only is None else sorted(only)
        self._order: list[int] = list(order) if mode == "ordered" else []
        self._in_order: set[int] = set(self._order)
        self._next = 0
        self._held: dict[int, list[_Done]] = {}
        self._settled: set[int] = set()
        self._closed = False

    def __call__(self, ev: Event) -> None:
        """Handle one engine event (the others are ignored)."""
        mode = self.mode
        if mode == "none" or self._closed:
            return
        if mode == "stream":
            if isinstance(ev, AttemptOutput):
                self._stream(ev)
            return
        if isinstance(ev, AttemptStarted):
            self._logs[(ev.node, ev.attempt)] = (ev.log_path, ev.at)
        elif isinstance(ev, AttemptEnded):
            path, began = self._logs.pop((ev.node, ev.attempt), (None, ev.started_at))
            done = _Done(ev.key, ev.attempt, path, describe(ev), max(0.0, ev.at - began))
            if mode == "grouped":
                self._block(done)
            elif ev.node in self._in_order:
                self._held.setdefault(ev.node, []).append(done)
            else:
                self._block(done)  # not a node of this run's order: nothing to wait for
        elif mode == "ordered" and isinstance(ev, (InstanceSettled, InstanceReused)):
            self._settled.add(ev.node)
            self._advance()

    def close(self) -> None:
        """Print what is still held (``ordered``), in plan order; then ignore events."""
        if self._closed:
            return
        if self.mode == "ordered":
            self._settled.update(self._order[self._next :])
            self._advance()
        self._closed = True

    # -- stream --------------------------------------------------------------

    def _stream(self, ev: AttemptOutput) -> None:
        # The text is lines joined by "\n", the last one's newline left off (""
        # is one empty line). One write for all of them: they stay together.
        prefix = printable(ev.key) + " | "
        text = terminal_safe(ev.text) if self.safe else ev.text
        self.write(prefix + text.replace("\n", "\n" + prefix) + "\n")

    # -- blocks --------------------------------------------------------------

    def _rows(self, done: _Done) -> None:
        """The block as table rows: ``TARGET  line`` for each line."""
        target = done.key.partition("@")[2]
        label = ljust(self._label(done.key, target or None), self._width)
        for chunk in log_chunks(done.log_path or "", self.max_block_bytes):
            if chunk.startswith("... "):
                continue  # the "N bytes before this not shown" line of a long log
            if self.safe:
                chunk = terminal_safe(chunk)
            lines = chunk.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            self.write("".join(f"{label}  {line}\n" for line in lines))

    def _advance(self) -> None:
        order = self._order
        while self._next < len(order) and order[self._next] in self._settled:
            node = order[self._next]
            self._next += 1
            for done in self._held.pop(node, ()):
                self._block(done)

    @staticmethod
    def _label(key: str, target: str | None) -> str:
        return printable(target if target is not None else key)

    def _block(self, done: _Done) -> None:
        if done.log_path is None:
            return  # never spawned: no log, nothing printed
        if self.tabular:
            self._rows(done)
            return
        first = True
        for chunk in log_chunks(done.log_path, self.max_block_bytes):
            if self.safe:
                chunk = terminal_safe(chunk)
            if first:
                chunk = header(done.key, done.attempt, done.how, done.took) + "\n" + chunk
                first = False
            self.write(chunk)
