"""What both command-line tools share: settings flags, logging, version, exit codes, and the
stop event that SIGINT and SIGTERM set."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import Any

from google.auth.exceptions import DefaultCredentialsError

from scheduler import logs
from scheduler.config import SETTINGS, Settings
from scheduler.errors import SchedulerError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# What a command that needs Google's APIs says when it finds no credentials (google-auth's
# `DefaultCredentialsError`), instead of that error's traceback.
NO_CREDENTIALS = ("no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS (or run `gcloud "
                  "auth application-default login`), or point CLOUD_SCHEDULER_EMULATOR_HOST, "
                  "PUBSUB_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST at emulators")


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return version("scion-scheduler")
    except PackageNotFoundError:
        return "0+unknown"


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per entry of `SETTINGS`; a flag overrides its environment variable."""
    group = parser.add_argument_group("configuration (flags override environment variables)")
    for setting in SETTINGS:
        default = f" Default: {setting.default}." if setting.default else ""
        group.add_argument(
            setting.flag, dest=f"setting_{setting.attr}", metavar="VALUE",
            help=f"{setting.description} [{setting.env}]{default}",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment first, then every flag given."""
    overrides = {s.attr: getattr(args, f"setting_{s.attr}", None) for s in SETTINGS}
    return Settings.from_env(**overrides)


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A root parser with `--version` and the settings flags."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    add_settings_flags(parser)
    return parser


def setup_logging(settings: Settings, level: str = "INFO", *, background: bool = False) -> None:
    """Configure logs from the resolved settings (`background`: see `logs.configure`)."""
    logs.configure(settings.log_format, level, background=background)


def emit(payload: Any, output: str, text: str) -> None:
    """Print `payload` as JSON for `--output json`, else the human `text`."""
    if output == "json":
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Report an error on stderr and return the exit code to use."""
    sys.stderr.write(f"error: {message}\n")
    return code


# What a tool makes of an exception its command raised: the exit code after saying so in one
# line, or None to let it propagate (a bug's traceback).
Explain = Callable[[argparse.Namespace, Exception], int | None]


def user_error(_: argparse.Namespace, exc: Exception,
               bases: tuple[type[Exception], ...] = ()) -> int | None:
    """Exit 2 with one line for the mistakes every tool's user can make: a bad or missing
    setting (`ConfigError`) or any other refusal of `scheduler/` (`SchedulerError`) or of the
    tool's own package (`bases`), or no Google credentials."""
    if isinstance(exc, (SchedulerError, *bases)):
        return fail(str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, DefaultCredentialsError):
        return fail(NO_CREDENTIALS, EXIT_BAD_INPUT)
    return None


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                explain: Explain = user_error) -> int:
    """A console script's body: parse `argv`, resolve the settings, set up logging and run the
    chosen command's handler; an exception `explain` recognises becomes its exit code. A command
    whose parser sets the default `background_logs=True` has its lines written by one thread."""
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings, background=getattr(args, "background_logs", False))
        return int(args.handler(args, settings))
    except Exception as exc:
        code = explain(args, exc)
        if code is None:
            raise
        return code


class StopEvent(threading.Event):
    """Set by SIGINT or SIGTERM while `stop_on_signals` is in force; `signals` names them."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[str] = []


@contextmanager
def stop_on_signals(logger: Any = None) -> Iterator[StopEvent]:
    """While the block runs, SIGINT and SIGTERM set the event it is given (each logged as
    "stopping" on `logger`, when given) instead of interrupting; the previous handlers come
    back afterwards. Must be entered on the main thread."""
    stop = StopEvent()

    def on_signal(signum: int, _: FrameType | None) -> None:
        name = signal.Signals(signum).name
        stop.signals.append(name)
        if logger is not None:
            logger.info("stopping", signal=name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
