"""`scion-worker run`'s own knobs (`RunOptions`) and their defaults: the ones that are not
deployment settings (`scheduler.config`). A module of its own, light to import: a replica's
parent process (`worker.supervisor`) parses them and never loads the clients its processes use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from worker.pipeline import DEFAULT_LEASE

DEFAULT_HEALTH_PORT = 8080
DEFAULT_MAX_MESSAGES = 200
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# Actions are mostly waits on the hub, and fires handled at the same moment share their store
# round trips (`worker.coalescer`), so more fires in flight cost little: 64 measured about
# twice the throughput of 16 in `bench/bench_worker.py`.
DEFAULT_EXECUTORS = 64
# The http action allows timeouts up to 30 minutes; leave room for the claim and the record.
DEFAULT_MAX_LEASE_DURATION = timedelta(hours=1)
DEFAULT_GRACE_PERIOD = timedelta(seconds=30)
# Each ack-deadline extension (and the stream's deadline for messages not yet leased) is at most
# this long: a message held by a worker that died returns to another replica within it. 10 s,
# Pub/Sub's minimum, as the subscription's ack deadline: part of the takeover budget (README).
DEFAULT_MAX_LEASE_EXTENSION = timedelta(seconds=10)


@dataclass(frozen=True)
class RunOptions:
    """The `scion-worker run` knobs that are not deployment settings."""

    health_port: int = DEFAULT_HEALTH_PORT
    # Probes come from outside the container; a replica's processes serve theirs on loopback.
    health_host: str = "0.0.0.0"
    processes: int = 1
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES
    executors: int = DEFAULT_EXECUTORS
    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    lease: timedelta = DEFAULT_LEASE
    max_lease_duration: timedelta = DEFAULT_MAX_LEASE_DURATION
    max_lease_extension: timedelta = DEFAULT_MAX_LEASE_EXTENSION


def default_health_port(environ: dict[str, str] | None = None) -> int:
    """`PORT` (the Cloud Run convention) when set, else 8080."""
    raw = (os.environ if environ is None else environ).get("PORT", "")
    if not raw:
        return DEFAULT_HEALTH_PORT
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"PORT must be a TCP port number (got {raw!r})")
    return int(raw)
