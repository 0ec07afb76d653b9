"""Firestore's clock, as this process sees it: the time every lease is measured against.

A lease written as "this worker's clock + 12 s" and judged lapsed by another worker's clock is
only as good as the two clocks agree: a replica running 30 s ahead would steal every live fire,
one running 30 s behind would wait 30 s more to take over a dead one. So no worker's clock is
trusted. Every Firestore reply carries the server's time (a Commit's `commit_time`, a read's
`read_time`); `ServerClock` keeps the offset between the server's clock and this process's, as
measured by the last such reply, and `now()` is the local clock plus that offset. Leases
written, leases judged lapsed, and the reaper's query all read this clock, so they are all in
the server's time, whatever the local clock says.

The error of `now()` is half the round trip of the reply it was measured from (the server
stamped it somewhere between sending and receiving), so a reply that took longer than
`MAX_UNCERTAINTY` to come back (a store stalled for 30 s would put it 15 s off) never replaces
a better measurement, and a quicker reply replaces a slower one at once (any fair one after
`REFRESH`). A good one arrives with nearly every commit, and `now()` measures afresh
(one small read, on one thread) when none came for `MAX_AGE`, which also bounds how long a step
of the local clock (NTP) can go unnoticed.

The SQLite ledger (local mode) has one process and one clock, and needs none of this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from scheduler.logs import get_logger

log = get_logger(__name__)

MAX_UNCERTAINTY = timedelta(milliseconds=500)
MAX_AGE = timedelta(minutes=1)
SYNC_RETRY = timedelta(seconds=5)
REFRESH = timedelta(seconds=10)
SYNC_TRIES = 3


def local_now() -> datetime:
    """This machine's clock, as an aware UTC datetime."""
    return datetime.now(UTC)


class ServerClock:
    """The server's time, estimated from the replies of its calls; thread-safe."""

    def __init__(self, local: Callable[[], datetime] = local_now) -> None:
        self.local = local
        self._sync: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._offset: timedelta | None = None
        self._uncertainty = timedelta.max
        self._measured_at: datetime | None = None
        self._syncing = threading.Lock()
        self._sync_tried: datetime | None = None

    def syncs_with(self, sync: Callable[[], object]) -> None:
        """The call that measures the offset afresh (a read that reports its `read_time`)."""
        self._sync = sync

    def observe(self, server_time: datetime, sent: datetime, received: datetime) -> None:
        """A reply stamped `server_time` by the server, to a call sent and received at these
        local times."""
        half = (received - sent) / 2
        with self._lock:
            # The most precise recent measurement wins; a fair one replaces it after a while.
            if self._measured_at is not None and half > self._uncertainty and (
                    half > MAX_UNCERTAINTY or received - self._measured_at < REFRESH):
                return
            self._offset = server_time - (sent + half)
            self._uncertainty = half
            self._measured_at = received

    @property
    def offset(self) -> timedelta | None:
        """Server time minus local time, as last measured (None before the first reply)."""
        with self._lock:
            return self._offset

    def now(self) -> datetime:
        """The server's time now: the local clock plus the measured offset, measured afresh
        when the last measurement is older than MAX_AGE. Until a first measurement succeeds
        (the store unreachable since the start) it is the local clock, and says so in the log."""
        local = self.local()
        with self._lock:
            offset, measured_at = self._offset, self._measured_at
        if measured_at is None or local - measured_at > MAX_AGE:
            self._measure(local)
            local = self.local()
            with self._lock:
                offset = self._offset
        return local if offset is None else local + offset

    def _measure(self, local: datetime) -> None:
        """Measure the offset with the sync call: on one thread at a time (the others go on
        with the last offset) and at most once per SYNC_RETRY while it fails."""
        # The first measurement is waited for: until then there is only the local clock.
        if self._sync is None or not self._syncing.acquire(blocking=self.offset is None):
            return
        try:
            if self._measured_at is not None and local - self._measured_at <= MAX_AGE:
                return  # another thread measured meanwhile
            if self._sync_tried is not None and local - self._sync_tried < SYNC_RETRY:
                return
            self._sync_tried = local
            # Again while the reply was slow (the first call also opens the connection).
            for _ in range(SYNC_TRIES):
                self._sync()
                with self._lock:
                    if self._uncertainty <= MAX_UNCERTAINTY:
                        break
        except Exception as exc:  # the store is down: every claim fails meanwhile anyway
            log.warning("could not read the server's time; using the last offset",
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            self._syncing.release()
