"""One lock per schedule, so that the API's writes to a job run one at a time.

Cloud Scheduler has no conditional write: `If-Match` is checked by a GetJob before the write.
Holding the schedule's lock from that read to the end of the write makes the check and the write
one step for every request this process serves; requests served by another process are not
covered (the README's HTTP API section says so).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyedLocks:
    """Locks by key, each kept only while someone holds or waits for it (the keys are schedule
    IDs, an unbounded set)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock for the block, waiting for any other holder first."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def users(self, key: str) -> int:
        """How many callers hold or wait for `key`'s lock."""
        with self._guard:
            return self._locks.get(key, (None, 0))[1]
