"""`local`: the single-instance fallback, no cloud needed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scheduler.cli_base import EXIT_OK, stop_on_signals
from scheduler.config import Settings
from scion_scheduler.local import run_local


def register(sub: Any) -> None:
    """Add `local`."""
    p = sub.add_parser(
        "local", help="run the schedules of a file in process, with an embedded SQLite store"
    )
    p.add_argument(
        "--file", required=True, help="YAML or JSON schedule file (reloaded on change or SIGHUP)"
    )
    p.add_argument("--store", default=".local/scion.db",
                   help="SQLite file for execution history (default .local/scion.db); "
                        "read it with `runs ID --store sqlite:PATH`")
    p.set_defaults(handler=local)


def local(args: argparse.Namespace, settings: Settings) -> int:
    """Run until SIGINT/SIGTERM."""
    with stop_on_signals() as stop:
        run_local(Path(args.file), Path(args.store), settings, stop)
    return EXIT_OK
