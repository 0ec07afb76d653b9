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


@dataclass(frozen=True)
class Disposition:
    """What the transport does with a delivery: ack it, or nack it (after `delay` if set, else
    with the subscription's backoff). `outcome` names why, for logs and metrics: succeeded,
    failed, cancelled, duplicate, busy, skipped, missed, not_due, retry, rejected, interrupted,
    lost (another worker took the fire over), error (the ledger was unavailable)."""

    ack: bool
    outcome: str
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
