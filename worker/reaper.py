"""The reaper: takes over claims whose holder died, without waiting for Pub/Sub.

A worker that dies while it runs fires leaves them `running` in the ledger under a lease nobody
renews. Pub/Sub hands their messages to another replica once their ack deadline lapses, but
only as fast as the broker does (the emulator took from 6 s to more than two minutes), and a
message it lost is never seen again. The ledger knows every lapsed claim, so every replica runs
a reaper that asks it, each `interval`, for the running executions whose lease has lapsed
(`worker.ledger.LapsedClaims`), and hands each one's kept contract message back to the
pipeline as a delivery. The pipeline claims it the normal way: the takeover is a claim with
attempt + 1 under the ledger's preconditions, so exactly one reaper or delivery wins, and the
rest find it BUSY or DONE. The message is the original one, so its signature verifies and its
fire time derives the same.

Which lapsed executions are due is `worker.ledger_rules.reap_due`: a dead holder's at once, a
released one (a retryable failure, nacked for a retry) only after the retry backoff, so the
reaper never retries a failing target faster than Pub/Sub's backoff would.

A lease also lapses while its holder lives when the store was unreachable or frozen: nobody
could renew. So after a sweep fails, or its query answers later than a sweep interval, the
reaper takes nothing over for `grace` (the lease: three renewals) once the store answers
promptly again; live holders renew (or finish) first, and only the dead stay lapsed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.logs import bound, get_logger
from scheduler.model import format_instant
from worker.ledger import Execution, LapsedClaims
from worker.ledger_rules import reap_due
from worker.transport import Delivery, Disposition

log = get_logger(__name__)

# Lapsed claims read per sweep; more wait for the next sweep.
MAX_PER_SWEEP = 200
# Takeovers this reaper runs at once (each holds a thread while its action runs).
DEFAULT_THREADS = 8


class Reaper:
    """Sweeps the ledger for lapsed claims every `interval` and runs each through `handle`."""

    def __init__(self, claims: LapsedClaims, handle: Callable[[Delivery], Disposition], *,
                 clock: Callable[[], datetime], interval: timedelta, grace: timedelta,
                 worker_id: str | None = None, threads: int = DEFAULT_THREADS) -> None:
        if interval <= timedelta(0) or threads < 1:
            raise ValueError(f"interval must be positive and threads at least 1 "
                             f"(got {interval}, {threads})")
        self._claims = claims
        self._handle = handle
        self._clock = clock
        # This worker's own claims are never its reaper's: it is alive, and still renewing or
        # finishing them (a lapse seen from here is a renewal that is late, not a death).
        self._worker_id = worker_id
        self._interval = interval.total_seconds()
        self._grace = grace.total_seconds()
        self._quiet_until = 0.0
        self._slots = threading.BoundedSemaphore(threads)
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._idle = threading.Condition(self._lock)
        self._warned: set[str] = set()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Sweep on a daemon thread until `stop` is set."""
        thread = threading.Thread(target=self.run, args=(stop,), name="reaper", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Sweep every interval until `stop` is set. A random first wait spreads the replicas'
        sweeps over the interval."""
        if stop.wait(random.uniform(0, self._interval)):
            return
        while not stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("reaper sweep failed; trying again at the next one")
                self._hold_off()
            stop.wait(self._interval)

    def sweep(self) -> int:
        """One sweep: start a takeover of every due lapsed claim that this reaper is not
        already running. Returns how many it started."""
        asked = time.monotonic()
        now = self._clock()
        lapsed = self._claims.lapsed(now, limit=MAX_PER_SWEEP)
        if time.monotonic() - asked > self._interval:
            self._hold_off()
        if time.monotonic() < self._quiet_until:
            return 0
        due = [execution for execution in lapsed
               if reap_due(execution, now) and execution.worker_id != self._worker_id]
        # In another order on every replica, so that they race for different claims first.
        random.shuffle(due)
        started = 0
        for execution in due:
            if execution.message is None:
                self._warn_once(execution)
                continue
            with self._lock:
                if execution.execution_id in self._running:
                    continue
            if not self._slots.acquire(blocking=False):
                break  # all threads busy: the rest at the next sweep
            with self._lock:
                self._running.add(execution.execution_id)
            threading.Thread(target=self._take_over, args=(execution,), daemon=True,
                             name=f"reaper-{execution.execution_id[:40]}").start()
            started += 1
        return started

    def _take_over(self, execution: Execution) -> None:
        assert execution.message is not None
        message = execution.message
        try:
            with bound(**_context(execution), holder=execution.worker_id):
                log.info("lapsed claim found; taking it over",
                         lease_until=format_instant(execution.lease_until)
                         if execution.lease_until else None)
                disposition = self._handle(Delivery(message.message_id, message.data,
                                                    message.attributes, message.published_at))
                log.info("reaper takeover ended", outcome=disposition.outcome)
        finally:
            with self._lock:
                self._running.discard(execution.execution_id)
                self._idle.notify_all()
            self._slots.release()

    def _hold_off(self) -> None:
        """The store was unreachable or stalled: leave the leases that lapsed meanwhile to their
        holders for a grace period."""
        if time.monotonic() >= self._quiet_until:
            log.warning("the store was unreachable or slow; no takeovers until live holders "
                        "have renewed", grace_s=self._grace)
        self._quiet_until = time.monotonic() + self._grace

    def _warn_once(self, execution: Execution) -> None:
        if execution.execution_id in self._warned:
            return
        if len(self._warned) > MAX_PER_SWEEP * 10:
            self._warned.clear()
        self._warned.add(execution.execution_id)
        log.warning("lapsed claim keeps no message (too large, or claimed by an older version); "
                    "Pub/Sub's redelivery must take it over", **_context(execution))

    @property
    def busy(self) -> int:
        """Takeovers running now."""
        with self._lock:
            return len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the running takeovers to end; True when none runs."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)


def _context(execution: Execution) -> dict[str, str]:
    return {"schedule_id": execution.schedule_id,
            "fire_time": format_instant(execution.fire_time),
            "execution_id": execution.execution_id}
