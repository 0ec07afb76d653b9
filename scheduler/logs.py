"""Structured logging, configured in one place.

Production output is one JSON object per line that Cloud Logging parses: `severity`,
`message`, `timestamp`, and `logging.googleapis.com/trace` when a trace is bound. On a
terminal it is readable key=value. Context (schedule_id, fire_time, execution_id, ...) is bound
with `bound` (structlog's context variables) so every line about a fire carries it.
Fields that may quote a target's answer (`error`, `detail`, `url`, ...) are redacted
(`scheduler.redaction`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import structlog

from scheduler.redaction import redact_log_fields

_SEVERITY = {
    "debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING",
    "error": "ERROR", "exception": "ERROR", "critical": "CRITICAL",
}
TRACE_KEY = "logging.googleapis.com/trace"


class LogFormat(StrEnum):
    """How log lines are written: `json` (Cloud Logging), `console` (key=value), or `auto` (json
    unless the stream is a terminal)."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


def add_severity(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Cloud Logging reads the level from `severity`."""
    event["severity"] = _SEVERITY.get(method, method.upper())
    return event


def rename_event_to_message(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Cloud Logging shows `message` as the entry's summary."""
    event["message"] = event.pop("event", "")
    return event


def move_trace(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A bound `trace` becomes the field Cloud Logging links to Cloud Trace."""
    trace = event.pop("trace", None)
    if trace:
        event[TRACE_KEY] = trace
    return event


def _current_stderr(*_: Any) -> structlog.WriteLogger:
    """A logger on `sys.stderr` as it is when the line is written, not when logging was
    configured: a replaced and since closed stream (a test's captured stderr) is never kept."""
    return structlog.WriteLogger(sys.stderr)


def configure(fmt: str | None = "auto", level: str = "INFO", stream: Any = None) -> None:
    """Configure structlog once for the process: `json`, `console`, or `auto` (json unless the
    stream is a terminal). Without a `stream`, lines go to the current `sys.stderr`."""
    factory: Any = structlog.WriteLoggerFactory(stream) if stream is not None else _current_stderr
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt in (None, "auto") and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        redact_log_fields,
    ]
    renderer: list[Any]
    if use_json:
        renderer = [add_severity, move_trace, rename_event_to_message,
                    structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind `values` to every log line of this thread (or task) inside the block, and restore
    what was bound before on the way out. What `structlog.contextvars.bound_contextvars` does,
    at half the cost (it first reads every bound variable): a fire binds a few times."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(logger_name=name)
