"""The leases a worker holds on the fires it runs: renewed by one heartbeat while their actions
run and their outcomes are recorded, and released when the worker stops.

A claim is a lease (`worker.ledger`): another worker may take the fire over once it lapses.
So while an action runs, `LeaseKeeper.holding` keeps its lease in this worker's held fires
(`worker.held_fires.HeldFires`, the ledger's kind of memory too), and a heartbeat thread
renews each held lease every third of the lease; a lease found lost is let go (the action runs
on, its outcome is then not recorded). When the shutdown grace period ends,
`LeaseKeeper.release_running` hands every held fire back at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from scheduler.logs import bound, get_logger
from worker.held_fires import HeldFires
from worker.ledger import Execution, Ledger

log = get_logger(__name__)


@dataclass
class Lease:
    """An execution this worker holds while its action runs and its outcome is recorded, with
    its log context. `active` turns False, under `lock`, when that is over, the lease is lost
    or it is released. `finishing` once the outcome is being recorded: a renewal that finds the
    execution no longer held then most likely raced the finish that landed."""

    execution_id: str
    log_context: Mapping[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: bool = True
    finishing: bool = False

    def end(self) -> None:
        """Stop renewing the lease. Under its lock: a renewal in flight completes first, and
        none follows."""
        with self.lock:
            self.active = False


class LeaseKeeper:
    """The leases one worker holds, and the heartbeat that renews them; thread-safe."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        worker_id: str,
        lease: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.worker_id = worker_id
        self.lease = lease
        self.clock = clock
        # Never bounded: a lease forgotten while its action runs would not be renewed.
        self.fires: HeldFires[Lease] = HeldFires(limit=None)
        # Guards the heartbeat's start and end against a fire held meanwhile.
        self._beat_lock = threading.Lock()
        self._heartbeat_thread: threading.Thread | None = None

    @contextmanager
    def holding(self, eid: str) -> Iterator[Lease]:
        """Hold an execution while its action runs; the heartbeat renews its lease meanwhile."""
        held = Lease(eid, structlog.contextvars.get_contextvars())
        with self._beat_lock:
            self.fires.hold(held)
            if self._heartbeat_thread is None:
                self._heartbeat_thread = threading.Thread(
                    target=self._heartbeat, name=f"lease-heartbeat-{self.worker_id}", daemon=True
                )
                self._heartbeat_thread.start()
        try:
            yield held
        finally:
            held.end()
            self.fires.take(eid)

    def _heartbeat(self) -> None:
        """One thread per pipeline renews every held lease each third of the lease, so a live
        worker never loses a long action to a takeover. A thread per action would cost a
        thread start for every fire; this one exits when nothing is held."""
        interval = self.lease.total_seconds() / 3
        while True:
            time.sleep(interval)
            with self._beat_lock:
                held = self.fires.held()
                if not held:
                    self._heartbeat_thread = None
                    return
            for item in held:
                self._renew(item)

    def _renew(self, held: Lease) -> None:
        with held.lock, bound(**held.log_context):
            if not held.active:
                return
            try:
                renewed = self.ledger.renew(
                    held.execution_id, self.worker_id, self.clock() + self.lease
                )
            except Exception:
                log.exception("lease renewal failed; trying again at the next beat")
                return
            if not renewed:
                # The action runs on; its outcome is then not recorded (finish says False).
                held.active = False
                if held.finishing:
                    log.debug("renewal found the execution finished or taken over")
                else:
                    log.warning("lease lost: another worker took the fire over")

    def fresh_lease(self, eid: str, execution: Execution) -> bool | None:
        """A claim that took long to land (a store that hung) can carry a lease that lapsed on
        the way, so another delivery could take the fire over while its action runs: renew
        such a lease before the action starts. False when another worker holds the fire now,
        None when the store failed."""
        if (
            execution.lease_until is None
            or execution.lease_until - self.clock() >= self.lease * 2 / 3
        ):
            return True
        try:
            return self.ledger.renew(eid, self.worker_id, self.clock() + self.lease)
        except Exception:
            log.exception("could not renew a claim that took long to land; retrying")
            return None

    def release_quietly(
        self,
        eid: str,
        reason: str,
        *,
        failed: str = "could not release the execution; its lease will lapse",
    ) -> None:
        """Release an execution this worker holds; a store that fails (logged as `failed`)
        leaves its lease to lapse."""
        try:
            self.ledger.release(eid, self.worker_id, now=self.clock(), error=reason)
        except Exception:
            log.exception(failed)

    def release_running(self, reason: str) -> list[str]:
        """Release every execution this worker still holds (the transport calls this when the
        shutdown grace period ends), so another replica takes them over at once instead of
        waiting for the lease to lapse. Returns the released execution IDs."""
        released: list[str] = []
        for item in self.fires.held():
            with item.lock, bound(**item.log_context):
                if not item.active:
                    continue
                # Inactive first, so that no heartbeat renews the lease just released.
                item.active = False
                try:
                    if self.ledger.release(
                        item.execution_id, self.worker_id, now=self.clock(), error=reason
                    ):
                        released.append(item.execution_id)
                        log.warning("execution released for another worker", reason=reason)
                except Exception:
                    log.exception("could not release the execution; its lease will lapse")
        return released
