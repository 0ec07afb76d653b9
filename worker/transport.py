"""The transport port: what brings deliveries to the pipeline and carries out its dispositions.

Adapters: `worker.pubsub_transport.PubSubTransport` (Pub/Sub streaming pull, the HA worker) and
`worker.queue_transport.QueueTransport` (an in-process queue fed by the local fallback's clock).
The pipeline never knows which one it runs under.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from worker.pipeline import Delivery, Disposition

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
