"""`reference-hub`: run the reference Scion hub (its grove routes and the fire endpoints) until
SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.cli_base import EXIT_OK, fail, stop_on_signals
from scheduler.config import Settings
from scheduler.logs import get_logger
from scion_scheduler.reference_hub import ReferenceHub
from scion_scheduler.reference_hub_groves import ListingLimits

log = get_logger(__name__)


def register(sub: Any) -> None:
    """Add `reference-hub`."""
    p = sub.add_parser(
        "reference-hub",
        help="run a reference Scion hub: the real hub's grove routes plus the fire endpoints",
        description="Serve the real hub's /api/v1/groves/{groveId}/schedules and "
                    "/scheduled-events routes (its JSON, errors and listing limits) and POST "
                    ".../schedules/{id}/fire and .../scheduled-events/{id}/fire as "
                    "docs/hub-fire-endpoint.md specifies, for the local demo and tests (point "
                    "SCION_HUB_URL at it). Fire calls are logged and "
                    "listed at GET /_reference/calls; POST /_reference/behaviour switches answers "
                    "(409, 404, 500, slow), /_reference/gone marks an item deleted, "
                    "/_reference/hold and /_reference/release keep an item's requests unanswered "
                    "until released, /_reference/reset starts over. Runs until SIGINT or SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8087, help="port (0: any free port; default 8087)")
    p.add_argument(
        "--token", help="require this bearer token (default: none; SCION_HUB_TOKEN if set)"
    )
    p.add_argument("--no-fire-endpoint", action="store_true",
                   help="be today's hub, which has no fire endpoint (its routers answer 404/405)")
    p.add_argument("--mended-cursors", action="store_true",
                   help="page the listings correctly (the real hub's store does not)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until a signal asks to stop."""
    if not 0 <= args.port <= 65535:
        return fail(f"--port: must be from 0 to 65535, got {args.port}")
    with stop_on_signals(log) as stop:
        try:
            hub = ReferenceHub(args.host, args.port, token=args.token or settings.hub_token,
                               fire_endpoint=not args.no_fire_endpoint,
                               limits=ListingLimits(real_cursors=not args.mended_cursors)).start()
        except OSError as exc:
            return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        try:
            log.info("ready", url=hub.url, hint=f"export SCION_HUB_URL={hub.url}")
            stop.wait()
        finally:
            hub.stop()
    return EXIT_OK
