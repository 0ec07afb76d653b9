"""Helpers for the transport tests: a recording stub handler (no ledger), a transport running
on a thread, and deliveries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from worker.transport import Delivery, Disposition, Outcome

WAIT_S = 30.0  # an upper bound for something to happen; no test depends on its size


ACK = Disposition(ack=True, outcome=Outcome.SUCCEEDED)


def wait_for(
    predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Recorder:
    """A handler stub: records deliveries, answers with `respond(delivery, n)` where n counts
    the deliveries of that message ID so far (1 on first sight)."""

    respond: Callable[[Delivery, int], Disposition] = lambda _d, _n: ACK
    deliveries: list[tuple[float, Delivery]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, delivery: Delivery) -> Disposition:
        with self.lock:
            self.deliveries.append((time.monotonic(), delivery))
            seen = sum(1 for _, d in self.deliveries if d.message_id == delivery.message_id)
        return self.respond(delivery, seen)

    def times(self, message_id: str) -> list[float]:
        with self.lock:
            return [t for t, d in self.deliveries if d.message_id == message_id]

    def ids(self) -> set[str]:
        with self.lock:
            return {d.message_id for _, d in self.deliveries}


class Running:
    """A transport's `run` on a thread, stopped (and joined) at the end of the test."""

    def __init__(self, transport: Any, handler: Callable[[Delivery], Disposition]) -> None:
        self.transport = transport
        self.stop = threading.Event()
        self.thread = threading.Thread(target=transport.run, args=(handler, self.stop), daemon=True)
        self.thread.start()

    def shutdown(self, timeout: float = WAIT_S) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop"


@contextmanager
def serving(transport: Any, handler: Callable[[Delivery], Disposition]) -> Iterator[None]:
    """`transport` running `handler` on a thread, ready for deliveries; stopped at the end."""
    running = Running(transport, handler)
    try:
        wait_for(lambda: transport.ready, what="the transport to be ready")
        yield
    finally:
        running.shutdown()


def delivery(message_id: str = "m1") -> Delivery:
    from datetime import datetime

    return Delivery(
        message_id=message_id, data=b"{}", attributes={}, published_at=datetime.now(UTC)
    )
