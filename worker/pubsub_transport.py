"""The Pub/Sub transport: streaming pull with the official client.

* Flow control bounds the messages (and bytes) held at once; a bounded thread pool runs the
  pipeline for them; the client extends each message's ack deadline while it is held, up to
  `max_lease_duration` (the longest an action may run before Pub/Sub may hand it to another
  replica; the ledger's own lease still keeps that replica from running it twice).
* Dispositions: ack -> `ack()`. Nack without a delay -> `nack()`: redelivered with the
  subscription's retry-policy backoff. Nack with a delay (a fire busy on another worker, a store
  outage) -> `modify_ack_deadline(delay)` then `drop()`: the client's lease manager renews the
  deadline of every message it manages, so the message is taken out of lease management, and
  Pub/Sub redelivers it when the requested deadline runs out. It frees its flow-control slot
  and executor at once instead of sleeping in the pool.
* Where nacked fires went (issue 15: 75 fires nacked twice on a 503 and not seen again for four
  minutes). Not in this process: with the client's DEBUG log on, after the nack no StreamingPull
  response arrives for minutes on an open, heartbeating stream, the client's leaser and on-hold
  queue are empty, and a unary Pull of the subscription returns nothing. They are in the
  emulator (0.8.20): with Terraform's retry policy it redelivers a first nack at once, then
  after 13-17 s, 16-20 s, 20-25 s... but intermittently (seen with 3-5 messages nacked a few
  milliseconds apart, through this transport and through a bare `subscribe` alike) it stops
  redelivering them for minutes; messages outstanding on the stream of a SIGKILLed subscriber
  (60 s stream deadline) stayed away for over four minutes, even from a new stream. And real
  Pub/Sub applies the retry policy per message, 10 s doubling to 600 s, so a fire retried by
  nacks waits minutes after a few failures anyway. Hence the pipeline does not hand a retry to
  the broker: it retries a failed action and waits out a store outage in the worker, within a
  budget (`worker.pipeline.IN_PROCESS_RETRY_BUDGET`), while the client keeps the message
  leased; only beyond it is the message handed back, with an explicit delay. (One more,
  harmless, race: the leaser may send its periodic extension for a message right after the
  `modify_ack_deadline(delay)` above, from a copy of its table taken before the `drop()`, so
  the message comes back after the lease extension instead of `delay`: a redelivery too early
  or too late, never a lost one.)
* Reconnect: the client retries transient stream errors itself; when the stream ends for good
  (e.g. the subscription vanished because the emulator restarted), `run` logs it, reports not
  ready, and subscribes again with exponential backoff, without restarting the process.
* Shutdown: when `stop` is set, the stream is cancelled (no new messages; those received but
  not started are nacked at once for other replicas), running actions get the grace period to
  finish and be acked, then `before_abandon` is called (the pipeline releases its claims) and
  the stragglers are nacked, so another replica takes them over right away.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
from google.cloud.pubsub_v1.types import FlowControl

from scheduler.logs import get_logger
from worker.run_options import (
    DEFAULT_EXECUTORS,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_LEASE_DURATION,
    DEFAULT_MAX_LEASE_EXTENSION,
    DEFAULT_MAX_MESSAGES,
)
from worker.transport import Delivery, Disposition, Handler, Outcome

log = get_logger(__name__)

# Pub/Sub accepts ack deadlines of 0..600 s.
MAX_ACK_DEADLINE_S = 600
_POLL_S = 0.2
# A stream that stayed up this long was healthy: the next failure starts the backoff afresh.
_HEALTHY_STREAM_S = 30.0


def _utc(value: datetime) -> datetime:
    """A plain aware UTC datetime (the client returns a nanosecond-carrying subclass)."""
    return datetime.fromtimestamp(value.timestamp(), UTC)


def to_delivery(message: Message) -> Delivery:
    """The transport-neutral view of a received Pub/Sub message."""
    return Delivery(
        message_id=message.message_id,
        data=message.data,
        attributes=dict(message.attributes),
        published_at=_utc(message.publish_time),
        delivery_attempt=message.delivery_attempt,
    )


@dataclass
class _Stream:
    """One streaming pull. `detached` once the client shut it down after a failure: its
    dispatcher is gone, so messages still running settle through unary RPCs."""

    number: int
    detached: bool = False


@dataclass
class _InFlight:
    message: Message
    stream: _Stream
    abandoned: bool = False


@dataclass
class _Registry:
    """Messages whose handler is running, across streams."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    items: dict[str, _InFlight] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _ActionScheduler(ThreadScheduler):  # type: ignore[misc]  # google.* is untyped here
    """The client's thread scheduler over a bounded pool of action executors, with the
    transport deciding what shutting it down means (drain on stop, detach on failure)."""

    def __init__(
        self, executors: int, on_shutdown: Callable[[list[Message]], list[Message]]
    ) -> None:
        super().__init__(
            ThreadPoolExecutor(max_workers=executors, thread_name_prefix="scion-action")
        )
        self._on_shutdown = on_shutdown

    def shutdown(self, await_msg_callbacks: bool = False) -> list[Message]:
        """Drop the queued callbacks without waiting for running ones; the transport waits
        (bounded by its grace period) where that is wanted."""
        dropped: list[Message] = super().shutdown(await_msg_callbacks=False)
        return self._on_shutdown(dropped)


class PubSubTransport:
    """A `worker.transport.Transport` over a Pub/Sub pull subscription."""

    def __init__(
        self,
        subscriber_client: Any,
        subscription_path: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        executors: int = DEFAULT_EXECUTORS,
        max_lease_duration: timedelta = DEFAULT_MAX_LEASE_DURATION,
        max_lease_extension: timedelta = DEFAULT_MAX_LEASE_EXTENSION,
        grace_period: timedelta = DEFAULT_GRACE_PERIOD,
        before_abandon: Callable[[], object] | None = None,
        min_backoff: timedelta = timedelta(seconds=0.5),
        max_backoff: timedelta = timedelta(seconds=30),
    ) -> None:
        for name, value in (
            ("max_messages", max_messages),
            ("max_bytes", max_bytes),
            ("executors", executors),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1 (got {value})")
        if max_lease_duration <= timedelta(0) or grace_period < timedelta(0):
            raise ValueError("max_lease_duration must be positive and grace_period not negative")
        if (
            not timedelta(seconds=10)
            <= max_lease_extension
            <= timedelta(seconds=MAX_ACK_DEADLINE_S)
        ):
            raise ValueError(
                f"max_lease_extension must be 10..{MAX_ACK_DEADLINE_S} s "
                f"(got {max_lease_extension})"
            )
        self._client = subscriber_client
        self._path = subscription_path
        self._flow_control = FlowControl(
            max_messages=max_messages,
            max_bytes=max_bytes,
            max_lease_duration=max_lease_duration.total_seconds(),
            # Whole seconds: the client copies it into the stream's int32 ack deadline, and a
            # float there makes every StreamingPull request fail without a word.
            max_duration_per_lease_extension=math.ceil(max_lease_extension.total_seconds()),
        )
        self._executors = executors
        self._grace_s = grace_period.total_seconds()
        self._before_abandon = before_abandon
        self._min_backoff_s = min_backoff.total_seconds()
        self._max_backoff_s = max_backoff.total_seconds()
        self._in_flight = _Registry()
        self._future: Any = None
        self._stopping = False
        self._deadline = math.inf
        self._abandon_lock = threading.Lock()
        self._abandoned_once = False
        self._channel_ready = True
        self.abandoned = 0
        """How many deliveries were still running when the grace period ended."""

    # Readiness.

    @property
    def ready(self) -> bool:
        """True while a streaming pull is open and its channel is connected."""
        future = self._future
        return (
            future is not None and not future.done() and not self._stopping and self._channel_ready
        )

    def _on_connectivity(self, state: Any) -> None:
        self._channel_ready = getattr(state, "name", "") == "READY"

    def _channel(self) -> Any:
        return getattr(getattr(self._client, "transport", None), "grpc_channel", None)

    # The supervisor.

    def run(self, handle: Handler, stop: threading.Event) -> None:
        """Pull and handle until `stop` is set; see the module docstring for the shutdown."""
        channel = self._channel()
        if channel is not None:
            self._channel_ready = False
            channel.subscribe(self._on_connectivity, try_to_connect=True)
        backoff = self._min_backoff_s
        number = 0
        try:
            while not stop.is_set():
                number += 1
                stream = _Stream(number)
                opened = time.monotonic()
                future = self._open(stream, handle)
                if future is not None:
                    while not future.done() and not stop.wait(_POLL_S):
                        pass
                    if not future.done():  # stop was set while the stream was healthy
                        self._drain(future)
                        break
                    self._future = None
                    if time.monotonic() - opened > _HEALTHY_STREAM_S:
                        backoff = self._min_backoff_s
                    if stop.is_set():
                        break
                    log.warning(
                        "streaming pull ended; subscribing again",
                        stream=number,
                        subscription=self._path,
                        error=_describe(future.exception()),
                        retry_in_s=round(backoff, 2),
                    )
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self._max_backoff_s)
            # Streams that failed earlier may still be running actions.
            self._begin_stop()
            self._await_in_flight()
        finally:
            self._future = None
            if channel is not None:
                channel.unsubscribe(self._on_connectivity)
        log.info("transport stopped", subscription=self._path, abandoned=self.abandoned)

    def _open(self, stream: _Stream, handle: Handler) -> Any:
        scheduler = _ActionScheduler(
            self._executors, functools.partial(self._on_scheduler_shutdown, stream)
        )
        try:
            future = self._client.subscribe(
                self._path,
                functools.partial(self._callback, stream, handle),
                flow_control=self._flow_control,
                scheduler=scheduler,
            )
        except Exception as exc:  # e.g. a malformed path: retried like a failed stream
            log.warning(
                "could not open the streaming pull", subscription=self._path, error=_describe(exc)
            )
            return None
        self._future = future
        log.info(
            "streaming pull open",
            stream=stream.number,
            subscription=self._path,
            max_messages=self._flow_control.max_messages,
            executors=self._executors,
        )
        return future

    def _drain(self, future: Any) -> None:
        self._begin_stop()
        log.info(
            "stopping: no new messages; running actions may finish",
            grace_period_s=self._grace_s,
            running=len(self._in_flight.items),
        )
        future.cancel()
        try:
            # The client's shutdown thread runs our scheduler hook, which waits for the actions.
            future.result(timeout=self._grace_s + 15)
        except Exception as exc:
            log.warning("streaming pull did not shut down cleanly", error=_describe(exc))

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._deadline = time.monotonic() + self._grace_s

    def _on_scheduler_shutdown(self, stream: _Stream, dropped: list[Message]) -> list[Message]:
        """Called on the client's shutdown thread, before its leaser and dispatcher stop."""
        if not self._stopping:
            # The stream failed: the client nacks the dropped messages; running ones go on.
            stream.detached = True
            return dropped
        if dropped:
            log.info(
                "stopping: queued deliveries handed back to Pub/Sub",
                count=len(dropped),
                message_ids=[message.message_id for message in dropped],
            )
        for message in dropped:
            message.nack()
        self._await_in_flight()
        return []

    def _await_in_flight(self) -> None:
        """Wait until every running delivery is settled or the grace period is over; then
        abandon the rest (once)."""
        registry = self._in_flight
        with registry.changed:
            while registry.items:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                registry.changed.wait(remaining)
            stragglers = [item for item in registry.items.values() if not item.abandoned]
        if stragglers:
            self._abandon(stragglers)

    def _abandon(self, stragglers: list[_InFlight]) -> None:
        with self._abandon_lock:
            if self._abandoned_once:
                return
            self._abandoned_once = True
        self.abandoned = len(stragglers)
        log.warning(
            "grace period over; handing running deliveries back to Pub/Sub",
            running=len(stragglers),
            message_ids=[s.message.message_id for s in stragglers],
        )
        if self._before_abandon is not None:
            try:
                self._before_abandon()
            except Exception:
                log.exception("releasing the running executions failed; their leases will lapse")
        for item in stragglers:
            with self._in_flight.lock:
                item.abandoned = True
            self._settle(item, Disposition(ack=False, outcome=Outcome.INTERRUPTED))

    # Per message.

    def _callback(self, stream: _Stream, handle: Handler, message: Message) -> None:
        item = _InFlight(message, stream)
        registry = self._in_flight
        with registry.lock:
            registry.items[message.ack_id] = item
        try:
            try:
                disposition = handle(to_delivery(message))
            except Exception:  # the pipeline never raises; if it does, keep the pool alive
                log.exception(
                    "handler raised; the message will be redelivered", message_id=message.message_id
                )
                disposition = Disposition(ack=False, outcome=Outcome.ERROR)
            with registry.lock:
                abandoned = item.abandoned
            if not abandoned:
                self._settle(item, disposition)
        finally:
            with registry.changed:
                registry.items.pop(message.ack_id, None)
                registry.changed.notify_all()

    def _settle(self, item: _InFlight, disposition: Disposition) -> None:
        message = item.message
        delay = disposition.delay.total_seconds() if disposition.delay is not None else 0.0
        if item.stream.detached:
            self._settle_unary(message, disposition.ack, delay)
        elif disposition.ack:
            message.ack()
        elif delay <= 0:
            message.nack()
        else:
            message.modify_ack_deadline(_ack_deadline(delay))
            message.drop()

    def _settle_unary(self, message: Message, ack: bool, delay: float) -> None:
        """Settle a message of a stream the client has shut down (its dispatcher is gone)."""
        try:
            if ack:
                self._client.acknowledge(subscription=self._path, ack_ids=[message.ack_id])
            else:
                self._client.modify_ack_deadline(
                    subscription=self._path,
                    ack_ids=[message.ack_id],
                    ack_deadline_seconds=_ack_deadline(delay) if delay > 0 else 0,
                )
        except Exception as exc:  # the message comes back when its deadline lapses
            log.warning(
                "could not settle a message of a closed stream; it will be redelivered",
                message_id=message.message_id,
                ack=ack,
                error=_describe(exc),
            )


def _ack_deadline(delay_s: float) -> int:
    return max(1, min(MAX_ACK_DEADLINE_S, math.ceil(delay_s)))


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"
