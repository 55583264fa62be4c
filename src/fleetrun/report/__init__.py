"""Terminal output and reports: subscribers to engine events."""

from fleetrun.report._plain import PlainConsole, format_duration, summary_text

__all__ = ["PlainConsole", "format_duration", "summary_text"]
