"""`runs`: a schedule's execution history, newest first, from Firestore or the local SQLite
store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scheduler.cli_base import EXIT_OK, add_settings_flags, emit
from scheduler.config import ConfigError, Settings
from scion_scheduler.api.views import execution_out
from worker.history import MAX_LIMIT, list_runs, run_to_dict
from worker.ledger import Execution, Ledger

SQLITE_SCHEME = "sqlite:"


def register(sub: Any) -> None:
    """Add `runs`."""
    # Settings flags are accepted after `runs` too; SUPPRESS keeps an absent one from hiding a
    # value given before the command.
    p = sub.add_parser(
        "runs", help="list a schedule's executions, newest first",
        description="List a schedule's executions (state, times, attempts, error), newest fire "
                    "time first, from the Firestore ledger the workers write (default) or from "
                    "the single-instance fallback's SQLite store (--store sqlite:PATH).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("schedule_id", metavar="ID", help="the schedule's ID")
    p.add_argument("--limit", type=_limit, default=20, metavar="N",
                   help=f"at most N executions (1..{MAX_LIMIT}, default %(default)s)")
    p.add_argument("--store", default="firestore", metavar="STORE",
                   help="`firestore` (default) or `sqlite:PATH`")
    p.add_argument("--output", choices=("text", "json"), default="text")
    add_settings_flags(p)
    p.set_defaults(handler=show_runs)


def _limit(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number (got {raw!r})") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"--limit must be between 1 and {MAX_LIMIT} (got {value})")
    return value


def open_ledger(store: str, settings: Settings) -> Ledger:
    """The ledger a `--store` value names; `ConfigError` naming `--store` when it names none."""
    if store == "firestore":
        from worker.firestore_ledger import FirestoreLedger

        settings.require("project")
        return FirestoreLedger.from_settings(settings)
    if store.startswith(SQLITE_SCHEME) and store[len(SQLITE_SCHEME):]:
        from worker.sqlite_ledger import SqliteLedger

        path = Path(store[len(SQLITE_SCHEME):])
        if not path.is_file():
            # Opening would create an empty store; a typo should say so instead.
            raise ConfigError(f"--store: no SQLite store at {str(path)!r}")
        return SqliteLedger(path)
    raise ConfigError(f"--store must be `firestore` or `sqlite:PATH` (got {store!r})")


def show_runs(args: argparse.Namespace, settings: Settings) -> int:
    """Print the history as a table, or as JSON with `--output json`."""
    ledger = open_ledger(args.store, settings)
    runs = list_runs(ledger, args.schedule_id, args.limit)
    # The API's documents (`ExecutionOut`), so that both print the same keys in the same order.
    shown = [execution_out(run).model_dump() for run in runs]
    emit({"schedule_id": args.schedule_id, "executions": shown}, args.output,
         _table(args.schedule_id, runs))
    return EXIT_OK


def _table(schedule_id: str, runs: list[Execution]) -> str:
    if not runs:
        return f"{schedule_id}: no executions recorded"
    rows = [("FIRE TIME", "STATE", "ATTEMPT", "STARTED", "FINISHED", "DURATION", "WORKER", "ERROR")]
    for run in runs:
        data = run_to_dict(run)
        rows.append((
            data["fire_time"] + ("" if run.trigger == "scheduled" else f" ({run.trigger})"),
            data["state"], str(run.attempt), data["started_at"] or "-", data["finished_at"] or "-",
            "-" if run.duration_s is None else f"{run.duration_s:.3f}s",
            run.worker_id or "-", (run.error or "").replace("\n", " ")[:80] or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    )
