"""`scion-worker`: the worker pool that runs on every hub replica."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scheduler.cli_base import fail, new_parser, settings_from_args, setup_logging
from scheduler.config import ConfigError

DESCRIPTION = """\
Worker pool of scion-scheduler: pulls fires from the Pub/Sub subscription, claims each fire in
Firestore so that it runs exactly once across all replicas, runs its action, records the outcome.
"""


def build_parser() -> argparse.ArgumentParser:
    """The worker's parser."""
    parser = new_parser("scion-worker", DESCRIPTION)
    parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scion-worker` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings)
        code: int = args.handler(args, settings)
    except ConfigError as exc:
        return fail(str(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
