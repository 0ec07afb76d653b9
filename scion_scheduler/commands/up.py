"""`up`: the whole HA stack locally (emulators, two worker replicas, a recording target)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from scheduler.cli_base import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail, stop_on_signals
from scheduler.config import Settings
from scheduler.logs import configure
from scion_scheduler.google_emulators import EmulatorError
from scion_scheduler.stack import PROJECT, PROJECT_ID, StackError, run_stack


def register(sub: Any) -> None:
    """Add `up`."""
    p = sub.add_parser(
        "up",
        help="run the whole HA stack locally: emulators, two worker replicas, a recording target",
        description="Start the Pub/Sub and Firestore emulators and the Cloud Scheduler emulator on "
                    "free ports, create the topic and subscriptions as Terraform does, sync the "
                    "schedule file (plus a one-shot a minute from now), run two scion-worker "
                    "replicas and the reference hub on 127.0.0.1:8087 (a free port when 8087 is "
                    "taken) as the actions' target, and narrate every fire. Ctrl-C, SIGTERM or "
                    "--duration prints a summary and stops everything it started. Needs gcloud "
                    "with the emulators, and Java. The environment's emulator hosts and "
                    "SCION_* settings are ignored: it always runs its own.",
    )
    p.add_argument("--file", default="examples/schedules.yaml",
                   help="YAML or JSON schedule file (default examples/schedules.yaml)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument(
        "--workdir",
        help="directory for the emulator and replica logs (default: a new temporary one)",
    )
    # Its own dest: the root parser's --project sets the hub's settings, which `up` ignores.
    p.add_argument("--project", dest="up_project", default=PROJECT, metavar="ID",
                   help=f"project ID inside the emulators (default {PROJECT})")
    p.set_defaults(handler=up)


def up(args: argparse.Namespace, settings: Settings) -> int:
    """Run the stack until SIGINT, SIGTERM or --duration; print the summary."""
    if args.duration is not None and args.duration <= 0:
        return fail(
            f"--duration: must be a positive number of seconds, got {args.duration:g}",
            EXIT_BAD_INPUT,
        )
    if not PROJECT_ID.match(args.up_project):
        return fail(
            f"--project: {args.up_project!r} is not a project ID (6-30 lowercase letters, digits "
            "and hyphens, starting with a letter)",
            EXIT_BAD_INPUT,
        )
    # The in-process parts log only trouble: the account on stdout is what a person reads.
    configure("console", "WARNING")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="scion-up-"))
    # Installed explicitly, not left to KeyboardInterrupt: a shell's background job starts with
    # SIGINT ignored, and the shutdown must run in order rather than wherever the signal lands.
    with stop_on_signals() as stop:
        try:
            account = run_stack(Path(args.file), workdir, stop, sys.stdout, args.duration,
                                args.up_project)
        except EmulatorError as exc:
            return fail(str(exc), EXIT_BAD_INPUT)
        except StackError as exc:
            return fail(str(exc), EXIT_FAILED)
        print(account.summary(), flush=True)
    return EXIT_OK
