"""`scion-scheduler`: the control side (sync schedules into Cloud Scheduler, inspect them, run the
emulator, the local fallback and the HTTP API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from google.auth.exceptions import DefaultCredentialsError

from scheduler.cli_base import (
    EXIT_BAD_INPUT,
    NO_CREDENTIALS,
    emit,
    fail,
    new_parser,
    run_command,
)
from scheduler.config import SETTINGS, ConfigError
from scheduler.errors import SchedulerError
from scheduler.model import ValidationError
from scion_scheduler.commands import (
    control,
    emulator,
    history,
    hub,
    local,
    migrate,
    reference_hub,
    schedules,
    serve,
    up,
)
from scion_scheduler.errors import ScionSchedulerError

COMMAND_MODULES: tuple[ModuleType, ...] = (
    schedules, emulator, control, serve, reference_hub, history, local, up, hub, migrate,
)

DESCRIPTION = """\
Control module of scion-scheduler: reconciles Scion schedules into Cloud Scheduler jobs whose
fires the workers (scion-worker) execute once each.

Exit status: 0 success, 1 some step failed, 2 bad input or configuration (nothing applied)."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every command module registered."""
    parser = new_parser("scion-scheduler", DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _error(schedule_id: str | None, field: str, reason: str) -> dict[str, str | None]:
    return {"schedule_id": schedule_id, "field": field, "reason": reason}


def _settings_named(message: str) -> str:
    """The variables a configuration error names, in the order it names them."""
    named = sorted((message.find(s.env), s.env) for s in SETTINGS if s.env in message)
    return ", ".join(env for _, env in named) or "configuration"


def bad_input(args: argparse.Namespace, message: str, errors: list[dict[str, str | None]]) -> int:
    """Exit 2 with `message` on stderr; with `--output json`, also every error as JSON on stdout,
    so a script sees why nothing was applied without parsing the text."""
    if getattr(args, "output", "text") == "json":
        emit({"ok": False, "errors": errors}, "json", "")
    return fail(message, EXIT_BAD_INPUT)


def _explain(args: argparse.Namespace, exc: Exception) -> int | None:
    """Bad input or configuration: exit 2, naming every problem (as JSON too with --output
    json); anything else propagates."""
    if isinstance(exc, ValidationError):
        return bad_input(args, str(exc),
                         [_error(e.schedule_id, e.field, e.reason) for e in exc.errors])
    if isinstance(exc, ConfigError):
        return bad_input(args, str(exc), [_error(None, _settings_named(str(exc)), str(exc))])
    if isinstance(exc, DefaultCredentialsError):
        # Raised when a client is built, before any call: nothing was applied.
        return bad_input(args, NO_CREDENTIALS,
                         [_error(None, "GOOGLE_APPLICATION_CREDENTIALS", NO_CREDENTIALS)])
    if isinstance(exc, OSError):
        reason = str(exc.strerror or exc)
        message = f"{exc.filename or ''}: {reason}".strip(": ")
        return bad_input(args, message, [_error("(file)", str(exc.filename or "file"), reason)])
    if isinstance(exc, SchedulerError | ScionSchedulerError):
        # Any other refusal of either package: its message, never a traceback.
        return bad_input(args, str(exc), [_error(None, type(exc).__name__, str(exc))])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scion-scheduler` console script."""
    return run_command(build_parser(), argv, _explain)


if __name__ == "__main__":
    sys.exit(main())
