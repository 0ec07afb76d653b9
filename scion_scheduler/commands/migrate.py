"""`scion-scheduler migrate --to ticks|jobs`: move the deployment between modes (issue 17) without
a missed or a doubled fire (`scheduler.migrate`: the cut-over rule). Exit 1 when a step failed:
nothing was removed then, and running the command again continues."""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.cli_base import EXIT_FAILED, EXIT_OK, emit
from scheduler.config import Settings
from scheduler.control import with_registry
from scheduler.migrate import migrate
from scheduler.tick_control import TickControl
from scion_scheduler.commands.control import REQUIRED, guarded


def register(sub: Any) -> None:
    """Add the `migrate` command."""
    p = sub.add_parser("migrate", help="move the deployment between jobs and ticks mode without "
                                       "a missed or doubled fire")
    p.add_argument("--to", required=True, choices=("ticks", "jobs"), help="the mode to move to")
    p.add_argument("--output", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate, print every step's outcome; exit 1 when one failed."""
    settings.require(*REQUIRED)

    def act() -> int:
        # A tick-mode control writes both documents and jobs, whichever way the move goes.
        with with_registry(settings.with_overrides(mode="ticks")) as control:
            assert isinstance(control, TickControl)
            result = migrate(control, args.to)
        emit({"to": args.to, **result.to_dict()}, args.output,
             f"{result.describe()}\nset SCION_SCHEDULER_MODE={args.to} on the control module "
             "and the workers" if result.ok else result.describe())
        return EXIT_OK if result.ok else EXIT_FAILED

    return guarded(args, act)
