"""`emulator`: run the Cloud Scheduler emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import time
from typing import Any

from scheduler.cli_base import EXIT_OK, fail, stop_on_signals
from scheduler.config import Settings
from scheduler.emulator import CloudSchedulerEmulator, EmulatorError
from scheduler.emulator.service import FAULT_CODES, METHODS
from scheduler.logs import configure, get_logger

log = get_logger(__name__)


def register(sub: Any) -> None:
    """Add `emulator`."""
    p = sub.add_parser(
        "emulator",
        help="run a local Cloud Scheduler emulator (gRPC, and REST for gcloud) that fires jobs",
        description="Serve google.cloud.scheduler.v1.CloudScheduler on 127.0.0.1 for the official "
                    "client (point CLOUD_SCHEDULER_EMULATOR_HOST at it) and, with --rest-port, its "
                    "REST API for gcloud and REST clients; publish every ENABLED Pub/Sub job's "
                    "message and call every HTTP job's URI at each cron slot. Runs until SIGINT "
                    "or SIGTERM.",
    )
    p.add_argument(
        "--port", type=int, default=8086, help="port on 127.0.0.1 (0: any free port; default 8086)"
    )
    p.add_argument("--rest-port", type=int, metavar="PORT",
                   help="also serve the REST API (and the OIDC keys, /oauth2/v3/certs) on this "
                        "port of 127.0.0.1 (0: any free port; default: no REST)")
    p.add_argument("--pubsub-host", metavar="HOST:PORT",
                   help="Pub/Sub emulator to publish to (default: PUBSUB_EMULATOR_HOST)")
    p.add_argument(
        "--state-file", metavar="FILE", help="keep the jobs in this JSON file across restarts"
    )
    p.add_argument("--fail-rate", type=float, default=0.0, metavar="R",
                   help="fail this share (0..1) of API calls, for testing clients' retries")
    p.add_argument(
        "--fail-code",
        action="append",
        choices=FAULT_CODES,
        metavar="CODE",
        help=(
            f"status of injected failures: {', '.join(FAULT_CODES)} (repeatable; default "
            "UNAVAILABLE)"
        ),
    )
    p.add_argument("--fail-method", action="append", choices=METHODS, metavar="METHOD",
                   help="inject failures only into this RPC (repeatable; default all)")
    p.add_argument("--fail-seed", type=int, help="seed of the failure draws, for repeatable runs")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="DEBUG also logs every API call (default INFO: fires and failures)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start the emulator and serve until a signal asks to stop."""
    configure(settings.log_format, args.log_level)
    if not 0.0 <= args.fail_rate <= 1.0:
        return fail(f"--fail-rate: must be from 0 to 1, got {args.fail_rate}")
    for flag, port in (("--port", args.port), ("--rest-port", args.rest_port)):
        if port is not None and not 0 <= port <= 65535:
            return fail(f"{flag}: must be from 0 to 65535, got {port}")
    with stop_on_signals(log) as stop:
        started = time.monotonic()
        emulator = CloudSchedulerEmulator(
            port=args.port, pubsub_host=args.pubsub_host or settings.pubsub_emulator_host,
            state_file=args.state_file, rest_port=args.rest_port)
        try:
            emulator.start()
        except EmulatorError as exc:
            return fail(str(exc))
        try:
            _announce(emulator, args, started)
            stop.wait()
        finally:
            emulator.stop()
    return EXIT_OK



def _announce(emulator: CloudSchedulerEmulator, args: argparse.Namespace, started: float) -> None:
    """Turn on the faults asked for, then log where the emulator answers."""
    if args.fail_rate > 0:
        codes = tuple(args.fail_code or ("UNAVAILABLE",))
        emulator.set_faults(args.fail_rate, codes, args.fail_method, args.fail_seed)
        log.info("fault injection on", rate=args.fail_rate, codes=list(codes),
                 methods=args.fail_method or "all")
    log.info("ready", host=emulator.host, rest_url=emulator.rest_url,
             jwks_url=emulator.jwks_url, startup_seconds=round(time.monotonic() - started, 3),
             hint=f"export CLOUD_SCHEDULER_EMULATOR_HOST={emulator.host}")
    for command in emulator.gcloud_config():
        log.info("for gcloud", command=command)
