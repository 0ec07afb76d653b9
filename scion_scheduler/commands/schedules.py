"""`validate` and `next`: offline checks of a schedule file (no cloud needed)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from scheduler.cli_base import EXIT_OK, emit
from scheduler.config import Settings
from scheduler.cron import next_fires
from scheduler.model import format_instant, parse_instant
from scheduler.scion_format import FORMATS
from scheduler.validation import load_schedule_set, load_schedules


def add_format_flag(parser: argparse.ArgumentParser) -> None:
    """`--format`: this project's schedule files, the Scion hub's JSON, or detect which."""
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="native (this project's schedule file), scion (the hub's JSON, as its "
                             "REST API returns it), or auto: detect (default)")


def register(sub: Any) -> None:
    """Add `validate` and `next`."""
    p = sub.add_parser("validate", help="check a schedule file; list every error (exit 2) or none")
    p.add_argument("--file", required=True, help="YAML or JSON schedule file")
    p.add_argument("--output", choices=("text", "json"), default="text")
    add_format_flag(p)
    p.set_defaults(handler=validate)

    p = sub.add_parser("next", help="show the next fire times of every schedule in a file "
                                    "(a hub schedule's as the hub's own cron computes them)")
    p.add_argument("--file", required=True, help="YAML or JSON schedule file")
    p.add_argument("-n", "--count", dest="n", type=int, default=3,
                   help="how many fire times per schedule (default 3)")
    p.add_argument("--after", type=_instant, default=None, metavar="INSTANT",
                   help="list fire times after this RFC 3339 instant (default: now)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    add_format_flag(p)
    p.set_defaults(handler=show_next)


def validate(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the file; errors surface as `ValidationError` (exit 2) in `main`."""
    loaded = load_schedule_set(args.file, format=args.format, egress=settings.allowed_targets)
    gone = f"; {len(loaded.absent)} gone at the hub" if loaded.absent else ""
    emit(
        {
            "valid": True,
            "schedules": len(loaded.schedules),
            "format": loaded.format,
            "absent": list(loaded.absent),
        },
        args.output,
        (
            f"{args.file}: {len(loaded.schedules)} schedule(s), all valid "
            f"({loaded.format} format){gone}"
        ),
    )
    return EXIT_OK


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def show_next(args: argparse.Namespace, settings: Settings) -> int:
    """Print upcoming fire times (UTC), each schedule's in its cron dialect: a schedule from the
    hub's JSON fires when the hub's robfig/cron would fire it."""
    after = args.after or datetime.now(UTC)
    result: dict[str, list[str]] = {}
    lines = []
    for schedule in load_schedules(args.file, format=args.format, egress=settings.allowed_targets):
        if schedule.paused:
            fires = []
        elif schedule.at is not None:
            # Its minute cron repeats yearly: the one fire is `at`, however far ahead.
            fires = [schedule.at] if schedule.at > after and args.n > 0 else []
        else:
            fires = next_fires(schedule, after, args.n)
        result[schedule.id] = [format_instant(f) for f in fires]
        shown = ", ".join(result[schedule.id]) or ("(paused)" if schedule.paused else "(none)")
        lines.append(f"{schedule.id}: {shown}")
    emit(result, args.output, "\n".join(lines))
    return EXIT_OK
