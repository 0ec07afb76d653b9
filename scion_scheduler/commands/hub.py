"""`hub check` and `hub pull`: talk to a Scion hub through its own REST API.

`hub check` says whether a hub has the fire endpoint (docs/hub-fire-endpoint.md) and whether it
takes the token: exit 0 when workers can fire into it, 1 when the hub answered but cannot take
fires (no endpoint, token refused, an answer the contract does not name), 2 when it could not be
asked (no URL, unreachable). `hub pull` reads a grove's listings whole and writes the document
`sync --format scion` takes, or syncs it (`--sync`); a listing the hub cannot give whole is
refused with the hub's limit named (exit 1), so a prune never runs on it. The token is
`SCION_HUB_TOKEN`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scheduler.cli_base import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, emit, fail
from scheduler.config import Settings
from scheduler.validation import schedules_from_data
from scion_scheduler.commands.control import REQUIRED, add_strict_flag, sync_loaded
from scion_scheduler.hub_client import HubClient, HubError, ListingRefused

# Any IDs do for the probe: the endpoint loads nothing before it answers 405.
PROBE_ID = "scion-scheduler-probe"


def register(sub: Any) -> None:
    """Add `hub check` and `hub pull`."""
    hub = sub.add_parser("hub", help="talk to a Scion hub: check its fire endpoint, pull a grove")
    commands = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "check", help="does the hub have the fire endpoint, and does it take the token?",
        description="GET on a schedule's fire endpoint (the contract's probe: the hub checks the "
                    "credentials and answers 405, firing nothing). Exit 0: ready; 1: the hub "
                    "answered but cannot take fires; 2: it could not be asked.")
    _common(p)
    p.add_argument("--grove", default=PROBE_ID, help="grove ID to probe under (default: any)")
    p.set_defaults(handler=check)

    p = commands.add_parser(
        "pull", help="read a grove's schedules and events through the hub's API",
        description="Fetch every page of GET /api/v1/groves/{grove}/schedules and "
                    "/scheduled-events?status=pending and write the document `sync --format "
                    "scion` takes, or sync it with --sync. A listing the hub cannot give whole "
                    "(its cursor limits) is refused, exit 1, and nothing is written or synced.")
    _common(p)
    p.add_argument("--grove", required=True, help="the grove's ID (groveId)")
    p.add_argument("--out", metavar="FILE", help="write the document here (default: stdout, "
                   "unless --sync)")
    p.add_argument("--sync", action="store_true", help="sync the pulled document (as `sync "
                   "--format scion`); needs the Cloud Scheduler settings")
    p.add_argument("--prune", action="store_true", help="with --sync: delete the jobs of "
                   "schedules and events the grove no longer has")
    p.add_argument("--dry-run", action="store_true", help="with --sync: print the plan only")
    add_strict_flag(p)
    p.set_defaults(handler=pull)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hub-url", help="the hub's base URL (default: SCION_HUB_URL)")
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people, json for scripts (default text)")


def _client(args: argparse.Namespace, settings: Settings) -> HubClient | None:
    url = args.hub_url or settings.hub_url
    if not url or not url.startswith(("http://", "https://")):
        return None
    return HubClient(url, settings.hub_token)


def check(args: argparse.Namespace, settings: Settings) -> int:
    """Probe the fire endpoint; see the module docstring for the exit codes."""
    client = _client(args, settings)
    if client is None:
        return fail("--hub-url (or SCION_HUB_URL): an http(s) URL is required", EXIT_BAD_INPUT)
    try:
        with client:
            probe = client.probe(args.grove, PROBE_ID)
    except HubError as exc:
        emit({"ok": False, "error": str(exc)}, args.output, "")
        return fail(str(exc), EXIT_BAD_INPUT)
    token = "none given" if not settings.hub_token else probe.token.value
    emit({"ok": probe.ready, "fire_endpoint": probe.endpoint.value, "token": token,
          "status": probe.status, "detail": probe.detail}, args.output,
         f"{client.base_url}: fire endpoint {probe.endpoint.value}, token {token} "
         f"(HTTP {probe.status}: {probe.detail})")
    return EXIT_OK if probe.ready else EXIT_FAILED


def pull(args: argparse.Namespace, settings: Settings) -> int:
    """Pull a grove whole; write it or sync it."""
    client = _client(args, settings)
    if client is None:
        return fail("--hub-url (or SCION_HUB_URL): an http(s) URL is required", EXIT_BAD_INPUT)
    if args.sync:
        settings.require(*REQUIRED)
    elif args.prune or args.dry_run:
        return fail("--prune and --dry-run go with --sync", EXIT_BAD_INPUT)
    try:
        with client:
            document = client.pull(args.grove)
    except ListingRefused as exc:
        message = f"refused: {exc}. Nothing was written or synced, and nothing pruned."
        if args.output == "json":
            emit({"ok": False, "error": message}, "json", "")
        return fail(message, EXIT_FAILED)
    except HubError as exc:
        return fail(str(exc), EXIT_FAILED)
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    elif not args.sync:
        sys.stdout.write(text)
    if not args.sync:
        return EXIT_OK
    loaded = schedules_from_data(document, format="scion", strict=args.strict,
                                 egress=settings.allowed_targets)
    return sync_loaded(args, settings, loaded)
