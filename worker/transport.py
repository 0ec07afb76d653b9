"""The transport port: what brings deliveries to the pipeline and carries out its dispositions.

Adapters: `worker.pubsub_transport.PubSubTransport` (Pub/Sub streaming pull, the HA worker) and
`worker.queue_transport.QueueTransport` (an in-process queue fed by the local fallback's clock).
The pipeline never knows which one it runs under.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """One message as the transport received it. `delivery_attempt` is set only by a
    subscription with a dead-letter policy (Pub/Sub counts attempts only then)."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    published_at: datetime
    delivery_attempt: int | None = None


class Outcome(StrEnum):
    """Why a delivery was disposed of as it was, for logs and metrics (the `outcome` label of
    `scion_worker_executions`). The first five are the final states an execution is recorded
    in (`worker.ledger.State`), so a recorded fire's outcome is its state."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    MISSED = "missed"
    DUPLICATE = "duplicate"  # a redelivery of a fire already finished
    BUSY = "busy"  # running elsewhere (or here): redelivered later
    NOT_DUE = "not_due"  # a one-shot's job fired at a slot that is not its `at`
    RETRY = "retry"  # the action failed and is retried by a redelivery
    REJECTED = "rejected"  # the message can never run here
    INTERRUPTED = "interrupted"  # the worker began to stop first
    LOST = "lost"  # another worker took the fire over
    ERROR = "error"  # the ledger was unavailable


@dataclass(frozen=True)
class Disposition:
    """What the transport does with a delivery: ack it, or nack it (after `delay` if set, else
    with the subscription's backoff); `outcome` says why."""

    ack: bool
    outcome: Outcome
    delay: timedelta | None = None


Handler = Callable[[Delivery], Disposition]
"""What a transport calls for every delivery; `Pipeline.handle` with its stop event bound."""


class Transport(Protocol):
    """Receives deliveries and applies the handler's `Disposition` to each."""

    def run(self, handle: Handler, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then stop taking new deliveries, let running ones finish
        (within the adapter's grace period) and return. Must not raise for a bad delivery."""
        ...

    @property
    def ready(self) -> bool:
        """True while deliveries can arrive (for Pub/Sub: the stream is open); readiness probe."""
        ...
