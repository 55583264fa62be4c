"""Seeing a run: the consoles (live and plain), task output, the events file, reports,
and the text views of the record (``history``, ``show``, ``outputs``).

Each name loads its module on first use: a plain ``apply`` never imports the
HTML and file reports or rich (the live view), which cost a noticeable part of
fleetrun's start-up; ``fleetrun report`` and a terminal's live view do."""

from typing import TYPE_CHECKING

from fleetrun._lazy import lazy_names

if TYPE_CHECKING:
    from fleetrun.report._build import build_report, load_run_graph, load_run_plan
    from fleetrun.report._events_file import EventsFile
    from fleetrun.report._exec_view import (
        TargetOutcome,
        exec_exit_code,
        render_exec_json,
        render_exec_text,
    )
    from fleetrun.report._formats import render_json, render_junit, render_markdown, render_table
    from fleetrun.report._html import render_html
    from fleetrun.report._live import LiveConsole
    from fleetrun.report._model import REPORT_FORMAT_VERSION, RunReport
    from fleetrun.report._next import Failure, FailureNotes, first_error_line, next_steps
    from fleetrun.report._output import OutputPrinter
    from fleetrun.report._plain import (
        PlainConsole,
        event_text,
        printable,
        stamp,
        summary_text,
        use_live,
    )
    from fleetrun.report._text import STATE_ORDER, format_duration
    from fleetrun.report._views import (
        history_text,
        outputs_data,
        outputs_env,
        outputs_text,
        run_summary,
        show_data,
        show_text,
    )

_LAZY = {
    "build_report": "_build",
    "load_run_graph": "_build",
    "load_run_plan": "_build",
    "EventsFile": "_events_file",
    "TargetOutcome": "_exec_view",
    "exec_exit_code": "_exec_view",
    "render_exec_json": "_exec_view",
    "render_exec_text": "_exec_view",
    "render_json": "_formats",
    "render_junit": "_formats",
    "render_markdown": "_formats",
    "render_table": "_formats",
    "render_html": "_html",
    "LiveConsole": "_live",
    "REPORT_FORMAT_VERSION": "_model",
    "RunReport": "_model",
    "Failure": "_next",
    "FailureNotes": "_next",
    "first_error_line": "_next",
    "next_steps": "_next",
    "OutputPrinter": "_output",
    "PlainConsole": "_plain",
    "event_text": "_plain",
    "printable": "_plain",
    "stamp": "_plain",
    "summary_text": "_plain",
    "use_live": "_plain",
    "STATE_ORDER": "_text",
    "format_duration": "_text",
    "history_text": "_views",
    "outputs_data": "_views",
    "outputs_env": "_views",
    "outputs_text": "_views",
    "run_summary": "_views",
    "show_data": "_views",
    "show_text": "_views",
}
"""Each public name -> the module that defines it."""


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "REPORT_FORMAT_VERSION",
    "STATE_ORDER",
    "EventsFile",
    "Failure",
    "FailureNotes",
    "LiveConsole",
    "OutputPrinter",
    "PlainConsole",
    "RunReport",
    "TargetOutcome",
    "build_report",
    "event_text",
    "exec_exit_code",
    "first_error_line",
    "format_duration",
    "history_text",
    "load_run_graph",
    "load_run_plan",
    "next_steps",
    "outputs_data",
    "outputs_env",
    "outputs_text",
    "printable",
    "render_exec_json",
    "render_exec_text",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_table",
    "run_summary",
    "show_data",
    "show_text",
    "stamp",
    "summary_text",
    "use_live",
]
