"""Coalescing: concurrent calls of one kind leave as one batched call.

The worker runs many fires at once, and each needs a few small store round trips. Sending
each on its own makes the per-call overhead (a gRPC call, its retry wrapper, protobuf
conversion) the bottleneck long before the store is. A `Coalescer` queues the calls and a
sender thread (or a few) takes whatever has queued up while it was busy and sends it as one
batch: group commit, as databases do it for their logs. There is no added delay: an idle
coalescer sends a lone call at once, and batches grow only with the load.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")

# How long a sender waits for work before it leaves.
IDLE_SECONDS = 2.0

BatchRunner = Callable[[Sequence[Item]], Sequence[Result | BaseException]]


class _Slot(Generic[Result]):
    """Where one call's result arrives: a lock held until the sender fills the slot. Cheaper
    than a `concurrent.futures.Future` (a Condition, its lock and its waiter lock per call),
    which was a measurable share of a fire's CPU with three store calls per fire."""

    __slots__ = ("_error", "_filled", "_result")

    def __init__(self) -> None:
        self._filled = threading.Lock()
        self._filled.acquire()
        self._result: Result | None = None
        self._error: BaseException | None = None

    def fill(self, result: Result | None, error: BaseException | None) -> None:
        """Set the outcome (once) and wake the caller."""
        self._result, self._error = result, error
        self._filled.release()

    def wait(self) -> Result:
        """The result once filled, or the call's exception raised."""
        self._filled.acquire()
        if self._error is not None:
            raise self._error
        return cast(Result, self._result)


class Coalescer(Generic[Item, Result]):
    """Runs `call(item)` through `run_batch(items)`, which must return one result (or the
    exception for that item) per item, in order. An exception raised by `run_batch` itself
    fails every call of the batch."""

    def __init__(self, name: str, run_batch: BatchRunner[Item, Result], *, max_batch: int,
                 senders: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: must be at least 1 (got {max_batch})")
        if senders < 1:
            raise ValueError(f"senders: must be at least 1 (got {senders})")
        self._name = name
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._senders = senders
        self._queue: queue.SimpleQueue[tuple[Item, _Slot[Result]]] = queue.SimpleQueue()
        self._running = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Calls queued and not yet taken into a batch."""
        return self._queue.qsize()

    @property
    def senders_running(self) -> int:
        """Sender threads alive now (they start on demand and leave when idle)."""
        with self._lock:
            return self._running

    def call(self, item: Item) -> Result:
        """Queue `item`, wait for its batch, and return its result (or raise its exception)."""
        slot: _Slot[Result] = _Slot()
        self._queue.put((item, slot))
        self._ensure_senders()
        return slot.wait()

    def _ensure_senders(self) -> None:
        # Senders start on demand and leave when idle, so that an unused coalescer holds no
        # threads. Checked after the put, under the lock a leaving sender takes: either that
        # sender sees the item, or this call sees it gone and starts another.
        with self._lock:
            while self._running < self._senders:
                self._running += 1
                threading.Thread(target=self._send_until_idle, name=f"{self._name}-{self._running}",
                                 daemon=True).start()

    def _send_until_idle(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running -= 1
                        return
                continue
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._send(batch)

    def _send(self, batch: list[tuple[Item, _Slot[Result]]]) -> None:
        try:
            results = self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
        except BaseException as exc:
            for _, slot in batch:
                slot.fill(None, exc)
            return
        for (_, slot), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                slot.fill(None, result)
            else:
                slot.fill(result, None)
