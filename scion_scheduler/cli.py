"""`scion-scheduler`: the control side (sync schedules into Cloud Scheduler, inspect them, run the
emulator, the local fallback and the HTTP API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from scheduler.cli_base import EXIT_BAD_INPUT, fail, new_parser, settings_from_args, setup_logging
from scheduler.config import ConfigError
from scheduler.model import ValidationError
from scion_scheduler.commands import (
    control,
    emulator,
    history,
    local,
    reference_hub,
    schedules,
    serve,
    up,
)

COMMAND_MODULES: tuple[ModuleType, ...] = (
    schedules, emulator, control, serve, reference_hub, history, local, up,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scion-scheduler` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings)
        code: int = args.handler(args, settings)
    except ValidationError as exc:
        return fail(str(exc))
    except ConfigError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".strip(": "), EXIT_BAD_INPUT)
    return code


if __name__ == "__main__":
    sys.exit(main())
