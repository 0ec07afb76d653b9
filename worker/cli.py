"""`scion-worker`: the worker pool that runs on every hub replica."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from scheduler.cli_base import (
    add_settings_flags,
    new_parser,
    run_command,
    user_error,
)
from scheduler.config import ConfigError, Settings
from worker.errors import WorkerError

if TYPE_CHECKING:
    from worker.run_options import RunOptions

DESCRIPTION = """\
Worker pool of scion-scheduler: pulls fires from the Pub/Sub subscription, claims each fire in
Firestore so that it runs exactly once across all replicas, runs its action, records the outcome.
"""


def _bounded(name: str, kind: type[int] | type[float], low: float, high: float = math.inf,
             unit: str = "") -> Callable[[str], float]:
    """A parser of a flag's number from `low` to `high`; its errors name the flag."""
    what, unit = (f"a number of {unit}", f" {unit}") if unit else ("a whole number", "")

    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what} (got {raw!r})") from None
        if not low <= value < math.inf:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low:g}{unit} (got {raw!r})")
        if value > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high:g}{unit} (got {raw!r})")
        return value
    return parse


def _seconds(name: str, low: float, high: float = math.inf) -> Callable[[str], timedelta]:
    """A parser of a flag's duration in seconds, from `low` to `high`."""
    number = _bounded(name, float, low, high, "seconds")
    return lambda raw: timedelta(seconds=number(raw))


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"--health-port must be a TCP port number (got {raw!r})")
    return int(raw)


# `scion-worker run`'s own flags: (flag, parser, metavar, help). Their defaults are those of
# `RunOptions`, written there only; the help shows them.
_SECONDS = "SECONDS"
_RUN_FLAGS: tuple[tuple[str, Callable[[str], object], str, str], ...] = (
    ("--max-messages", _bounded("--max-messages", int, 1), "N",
     "flow control: most messages held at once"),
    ("--max-bytes", _bounded("--max-bytes", int, 1), "N",
     "flow control: most message bytes held at once"),
    ("--processes", _bounded("--processes", int, 1, 64), "N",
     "worker processes in this replica, each with its own executors: one per core the "
     "replica has (a process runs its Python on one core at a time)"),
    ("--executors", _bounded("--executors", int, 1), "N", "threads running actions (per process)"),
    ("--grace-period", _seconds("--grace-period", 0), _SECONDS,
     "on SIGTERM, how long running actions may finish"),
    ("--lease", _seconds("--lease", 1), _SECONDS,
     "claim lease, renewed every third of it while an action runs; a dead worker's fire is "
     "taken over within it plus a quarter"),
    ("--max-lease-duration", _seconds("--max-lease-duration", 10),
     _SECONDS, "longest the client extends a message's ack deadline while its action runs"),
    ("--max-lease-extension", _seconds("--max-lease-extension", 10, 600), _SECONDS,
     "longest single ack-deadline extension: the messages of a worker that died return to "
     "other replicas within it (10..600)"),
)


def _attr(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from worker.run_options import RunOptions

    # Settings flags are accepted after `run` too; SUPPRESS keeps an absent one from hiding a
    # value given before `run`, and an absent worker flag from hiding RunOptions' default.
    p = sub.add_parser(
        "run", help="run the worker pool until SIGTERM or SIGINT",
        description="Pull fires from the subscription and run each once; serve /livez, /readyz "
                    "and /metrics on the health port.",
        argument_default=argparse.SUPPRESS,
    )
    add_settings_flags(p)
    group = p.add_argument_group("worker")
    group.add_argument("--health-port", type=_port, metavar="N",
                       help="port of /livez, /readyz and /metrics (default: $PORT, else 8080)")
    defaults = RunOptions()
    for flag, parse, metavar, text in _RUN_FLAGS:
        default = getattr(defaults, _attr(flag))
        shown = f"{default.total_seconds():g}" if isinstance(default, timedelta) else default
        group.add_argument(flag, type=parse, metavar=metavar, help=f"{text} (default {shown})")
    # Every executor logs each fire it runs: one writer thread writes their lines.
    p.set_defaults(handler=_run, background_logs=True)


def run_options(args: argparse.Namespace) -> RunOptions:
    """The `RunOptions` of parsed `run` flags: each flag given, else its default (the health
    port's from `PORT`)."""
    from worker.run_options import RunOptions, default_health_port

    given = {_attr(flag): getattr(args, _attr(flag)) for flag, *_ in _RUN_FLAGS
             if hasattr(args, _attr(flag))}
    try:
        port = args.health_port if hasattr(args, "health_port") else default_health_port()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return RunOptions(health_port=port, **given)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    options = run_options(args)
    if options.processes == 1:
        from worker.runner import run_worker

        return run_worker(settings, options)
    # The parent of several processes only supervises: it never loads their clients.
    from worker.supervisor import Supervisor

    return Supervisor(settings, options).run()


def build_parser() -> argparse.ArgumentParser:
    """The worker's parser."""
    parser = new_parser("scion-worker", DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_run(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scion-worker` console script: a missing setting or missing Google
    credentials is one line and exit 2, never a traceback."""
    return run_command(build_parser(), argv, worker_error)


def worker_error(args: argparse.Namespace, exc: Exception) -> int | None:
    """`user_error`, and this package's own refusals (`WorkerError`) in one line too."""
    return user_error(args, exc, (WorkerError,))


if __name__ == "__main__":
    sys.exit(main())
