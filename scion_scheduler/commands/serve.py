"""`serve`: the HTTP control API the Scion hub calls instead of spawning this CLI."""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.cli_base import EXIT_OK, stop_on_signals
from scheduler.config import ConfigError, Settings
from scheduler.logs import get_logger
from scion_scheduler.api.app import DEFAULT_MAX_BODY_BYTES, ApiContext, create_app
from scion_scheduler.api.auth import Authenticator, check_exposure
from scion_scheduler.commands.history import open_ledger

log = get_logger(__name__)


def register(sub: Any) -> None:
    """Add `serve`."""
    p = sub.add_parser(
        "serve",
        help="serve the HTTP control API (schedules, runs, history) with uvicorn",
        description="Serve the HTTP control API. Callers authenticate with "
        "SCION_SCHEDULER_API_TOKEN "
        "or Google ID tokens (SCION_SCHEDULER_API_AUDIENCE + _API_ALLOWED_SA); without "
        "either it serves only on a loopback address.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    p.add_argument("--store", default="firestore", metavar="firestore|sqlite:PATH",
                   help="where execution history is read: the Firestore ledger (default) or the "
                        "SQLite store of the single-instance fallback (as for `runs`)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES})")
    p.set_defaults(handler=serve)


def build_context(settings: Settings, store: str, authenticator: Authenticator) -> ApiContext:
    """Everything the app needs; fails with `ConfigError` before anything listens."""
    from scheduler.control import with_registry

    return ApiContext(control=with_registry(settings), history=open_ledger(store, settings),
                      authenticator=authenticator)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run uvicorn until interrupted (SIGINT/SIGTERM end it gracefully)."""
    import uvicorn

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535 (got {args.port})")
    if args.max_body_bytes < 1:
        raise ConfigError("--max-body-bytes must be positive")
    authenticator = Authenticator.from_settings(settings)
    check_exposure(authenticator, args.host)
    context = build_context(settings, args.store, authenticator)
    if not authenticator.enabled:
        log.warning("serving without authentication on loopback", host=args.host, port=args.port)
    app = create_app(context, max_body_bytes=args.max_body_bytes)
    log.info("serving the HTTP API", host=args.host, port=args.port, store=args.store,
             token=bool(authenticator.token), oidc=authenticator.oidc is not None)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to whatever
    # handler was installed before it. This one only notes it, so that the clients are closed
    # and the command exits 0 after a graceful stop, as `scion-worker run` does.
    try:
        with stop_on_signals() as stopped:
            # Our own structlog setup stays in charge of logging; uvicorn's access log would
            # repeat what the metrics already count.
            uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        context.control.close()
    log.info("HTTP API stopped", signals=stopped.signals)
    return EXIT_OK
