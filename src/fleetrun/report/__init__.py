"""Seeing a run: the consoles (live and plain), task output, the events file, reports."""

from fleetrun.report._build import build_report
from fleetrun.report._events_file import EventsFile
from fleetrun.report._formats import render_json, render_junit, render_markdown, render_table
from fleetrun.report._html import render_html
from fleetrun.report._live import LiveConsole, use_live
from fleetrun.report._model import REPORT_FORMAT_VERSION, RunReport
from fleetrun.report._next import Failure, FailureNotes, first_error_line, next_steps
from fleetrun.report._output import OutputPrinter
from fleetrun.report._plain import PlainConsole, event_text, format_duration, summary_text

__all__ = [
    "REPORT_FORMAT_VERSION",
    "EventsFile",
    "Failure",
    "FailureNotes",
    "LiveConsole",
    "OutputPrinter",
    "PlainConsole",
    "RunReport",
    "build_report",
    "event_text",
    "first_error_line",
    "format_duration",
    "next_steps",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_table",
    "summary_text",
    "use_live",
]
