"""`scion-worker`: the worker pool that runs on every hub replica."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from scheduler.cli_base import (
    add_settings_flags,
    new_parser,
    run_command,
)
from scheduler.config import ConfigError, Settings

DESCRIPTION = """\
Worker pool of scion-scheduler: pulls fires from the Pub/Sub subscription, claims each fire in
Firestore so that it runs exactly once across all replicas, runs its action, records the outcome.
"""


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a whole number (got {raw!r})"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1 (got {value})")
        return value
    return parse


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"--health-port must be a TCP port number (got {raw!r})")
    return int(raw)


def _seconds(name: str, minimum: float, maximum: float = float("inf")) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a number of seconds (got {raw!r})"
            ) from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(
                f"{name} must be at least {minimum:g} seconds (got {raw!r})"
            )
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"{name} must be at most {maximum:g} seconds (got {raw!r})"
            )
        return value
    return parse


def _register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from worker import pubsub_transport as defaults
    from worker.pipeline import DEFAULT_LEASE

    # Settings flags are accepted after `run` too; SUPPRESS keeps an absent one from hiding a
    # value given before `run`.
    p = sub.add_parser(
        "run", help="run the worker pool until SIGTERM or SIGINT",
        description="Pull fires from the subscription and run each once; serve /livez, /readyz "
                    "and /metrics on the health port.",
        argument_default=argparse.SUPPRESS,
    )
    add_settings_flags(p)
    group = p.add_argument_group("worker")
    group.add_argument("--health-port", type=_port, default=None, metavar="N",
                       help="port of /livez, /readyz and /metrics (default: $PORT, else 8080)")
    group.add_argument("--max-messages", type=_positive_int("--max-messages"), metavar="N",
                       default=defaults.DEFAULT_MAX_MESSAGES,
                       help="flow control: most messages held at once (default %(default)s)")
    group.add_argument("--max-bytes", type=_positive_int("--max-bytes"), metavar="N",
                       default=defaults.DEFAULT_MAX_BYTES,
                       help="flow control: most message bytes held at once (default %(default)s)")
    group.add_argument("--executors", type=_positive_int("--executors"), metavar="N",
                       default=defaults.DEFAULT_EXECUTORS,
                       help="threads running actions (default %(default)s)")
    group.add_argument("--grace-period", type=_seconds("--grace-period", 0), metavar="SECONDS",
                       default=defaults.DEFAULT_GRACE_PERIOD.total_seconds(),
                       help="on SIGTERM, how long running actions may finish (default %(default)s)")
    group.add_argument("--lease", type=_seconds("--lease", 1), metavar="SECONDS",
                       default=DEFAULT_LEASE.total_seconds(),
                       help="claim lease, renewed every third of it while an action runs; a dead "
                            "worker's fire is taken over within it plus a quarter "
                            "(default %(default)s)")
    group.add_argument(
        "--max-lease-duration",
        type=_seconds("--max-lease-duration", 10),
        metavar="SECONDS",
        default=defaults.DEFAULT_MAX_LEASE_DURATION.total_seconds(),
        help="longest the client extends a message's ack deadline while its action "
        "runs (default %(default)s)",
    )
    group.add_argument(
        "--max-lease-extension",
        type=_seconds("--max-lease-extension", 10, 600),
        metavar="SECONDS",
        default=defaults.DEFAULT_MAX_LEASE_EXTENSION.total_seconds(),
        help="longest single ack-deadline extension: the messages of a worker that "
        "died return to other replicas within it (10..600, default %(default)s)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from worker.runner import RunOptions, default_health_port, run_worker

    try:
        port = args.health_port if args.health_port is not None else default_health_port()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    options = RunOptions(
        health_port=port, max_messages=args.max_messages, max_bytes=args.max_bytes,
        executors=args.executors, grace_period=timedelta(seconds=args.grace_period),
        lease=timedelta(seconds=args.lease),
        max_lease_duration=timedelta(seconds=args.max_lease_duration),
        max_lease_extension=timedelta(seconds=args.max_lease_extension),
    )
    return run_worker(settings, options)


def build_parser() -> argparse.ArgumentParser:
    """The worker's parser."""
    parser = new_parser("scion-worker", DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_run(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scion-worker` console script: a missing setting or missing Google
    credentials is one line and exit 2, never a traceback."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
