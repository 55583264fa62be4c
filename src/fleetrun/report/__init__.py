"""Seeing a run: the consoles (live and plain), task output, the events file, reports,
and the text views of the record (``history``, ``show``, ``outputs``)."""

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
from fleetrun.report._live import LiveConsole, use_live
from fleetrun.report._model import REPORT_FORMAT_VERSION, RunReport
from fleetrun.report._next import Failure, FailureNotes, first_error_line, next_steps
from fleetrun.report._output import OutputPrinter
from fleetrun.report._plain import PlainConsole, event_text, printable, stamp, summary_text
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
