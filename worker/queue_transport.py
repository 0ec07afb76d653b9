"""An in-process transport: the single-instance fallback's clock `put`s deliveries, a small pool
of threads hands them to the pipeline.

It mirrors the Pub/Sub adapter's semantics where they matter to the pipeline: a nack with a
delay comes back after that delay, a nack without one comes back with an exponential backoff
(like the subscription's retry policy), and `run` returns after a bounded grace period on stop.
Pending deliveries do not survive the process; the fallback's ledger and catch-up rules make up
for that on the next start.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from scheduler.logs import get_logger
from worker.transport import Delivery, Disposition, Handler, Outcome

log = get_logger(__name__)

DEFAULT_EXECUTORS = 4
# The Terraform subscription's retry policy defaults, so both transports back off alike.
DEFAULT_MIN_BACKOFF = timedelta(seconds=10)
DEFAULT_MAX_BACKOFF = timedelta(seconds=600)
_POLL_S = 0.1


class QueueTransport:
    """A `worker.transport.Transport` over an in-process queue. Thread-safe `put`."""

    def __init__(
        self,
        *,
        executors: int = DEFAULT_EXECUTORS,
        min_backoff: timedelta = DEFAULT_MIN_BACKOFF,
        max_backoff: timedelta = DEFAULT_MAX_BACKOFF,
        grace_period: timedelta = timedelta(seconds=30),
        before_abandon: Callable[[], object] | None = None,
    ) -> None:
        if executors < 1:
            raise ValueError(f"executors must be at least 1 (got {executors})")
        self._executors = executors
        self._min_backoff = min_backoff.total_seconds()
        self._max_backoff = max_backoff.total_seconds()
        self._grace_period = grace_period.total_seconds()
        self._before_abandon = before_abandon
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._lock = threading.Lock()
        self._timers: set[threading.Timer] = set()
        self._nacks: dict[str, int] = {}
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._running = False
        self.abandoned = 0

    @property
    def ready(self) -> bool:
        """True while `run` is taking deliveries."""
        return self._running

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery (from any thread)."""
        with self._lock:
            self._in_flight += 1
        self._queue.put(delivery)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every delivery put so far is disposed of (acked, or nacked and not yet
        due again counts as pending). True when idle within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def run(self, handle: Handler, stop: threading.Event) -> None:
        """Deliver until `stop` is set; then let running deliveries finish within the grace
        period. Deliveries still running after it are abandoned (`before_abandon` is called
        first, so the pipeline can release their claims); their threads are daemons."""
        threads = [
            threading.Thread(target=self._work, args=(handle, stop), name=f"scion-action-{i}",
                             daemon=True)
            for i in range(self._executors)
        ]
        self._running = True
        for thread in threads:
            thread.start()
        stop.wait()
        self._running = False
        with self._lock:
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()
        deadline = time.monotonic() + self._grace_period
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.abandoned = sum(thread.is_alive() for thread in threads)
        if self.abandoned:
            log.warning("grace period over; abandoning running deliveries", running=self.abandoned)
            if self._before_abandon is not None:
                self._before_abandon()

    def _work(self, handle: Handler, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delivery = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            try:
                disposition = handle(delivery)
            except Exception:  # a handler must not raise; if it does, the delivery is retried
                log.exception("handler raised; the delivery will be retried",
                              message_id=delivery.message_id)
                disposition = Disposition(ack=False, outcome=Outcome.ERROR)
            self._dispose(delivery, disposition, stop)

    def _dispose(self, delivery: Delivery, disposition: Disposition, stop: threading.Event) -> None:
        with self._lock:
            if disposition.ack:
                self._nacks.pop(delivery.message_id, None)
                self._done()
                return
            if stop.is_set():
                # Not coming back in this process; the ledger and catch-up rules cover it.
                self._nacks.pop(delivery.message_id, None)
                self._done()
                return
            nacks = self._nacks.get(delivery.message_id, 0) + 1
            self._nacks[delivery.message_id] = nacks
            if disposition.delay is not None:
                delay = disposition.delay.total_seconds()
            else:
                delay = min(self._max_backoff, self._min_backoff * 2 ** (nacks - 1))
            timer = threading.Timer(delay, self._redeliver, args=(delivery,))
            timer.daemon = True
            self._timers.add(timer)
        timer.start()

    def _redeliver(self, delivery: Delivery) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive()}
        self._queue.put(delivery)

    def _done(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.notify_all()
