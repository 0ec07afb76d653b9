"""Locks by key, kept only while in use: for sets of keys without bound (schedule IDs,
execution IDs).

The API holds a schedule's lock from its `If-Match` read to the end of the write, since Cloud
Scheduler has no conditional write (requests served by another process are not covered; the
README's HTTP API section says so). The Firestore ledger holds an execution's lock for a claim
and for a change (finish, renew, release), so that two deliveries of one fire in one process
never race each other, or the fire's own finish, for its documents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyedLocks:
    """Locks by key, each kept only while someone holds or waits for it."""

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
