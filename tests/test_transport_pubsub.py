"""The Pub/Sub transport against the real emulator with a stub handler (no ledger): these tests pin
what the transport itself promises. The whole worker is in `test_worker_e2e.py` (helpers:
`transport_harness`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from transport_harness import ACK, WAIT_S, Recorder, Running, serving, wait_for

from worker.pubsub_transport import PubSubTransport
from worker.transport import Delivery, Disposition, Outcome

# The Pub/Sub transport, against the emulator.


@dataclass
class Subscription:
    publisher: Any
    subscriber: Any
    topic: str
    path: str
    dead_letter: str

    def publish(self, data: bytes = b"{}", **attributes: str) -> str:
        return str(self.publisher.publish(self.topic, data, **attributes).result(timeout=WAIT_S))

    def create(self) -> None:
        self.subscriber.create_subscription(
            request={
                "name": self.path,
                "topic": self.topic,
                "ack_deadline_seconds": 10,
                "dead_letter_policy": {
                    "dead_letter_topic": self.dead_letter,
                    "max_delivery_attempts": 5,
                },
            }
        )

    def transport(self, **overrides: Any) -> PubSubTransport:
        options: dict[str, Any] = {"max_messages": 10, "max_bytes": 1 << 20, "executors": 4,
                                   "max_lease_duration": timedelta(minutes=5),
                                   "max_lease_extension": timedelta(seconds=10),
                                   "min_backoff": timedelta(seconds=0.2),
                                   "max_backoff": timedelta(seconds=1)}
        options.update(overrides)
        return PubSubTransport(self.subscriber, self.path, **options)

    def pending(self) -> int:
        """How many messages a synchronous pull gets now (they are nacked right back)."""
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(subscription=self.path, max_messages=100, timeout=3)
        except exceptions.DeadlineExceeded:
            return 0
        ids = [m.ack_id for m in response.received_messages]
        if ids:
            self.subscriber.modify_ack_deadline(
                subscription=self.path, ack_ids=ids, ack_deadline_seconds=0
            )
        return len(ids)

    def next_delivery(self) -> tuple[float, int]:
        """Pull until a message comes (acking it): when (`time.monotonic()`), and its delivery
        attempt (the dead-letter policy makes Pub/Sub count them)."""
        from google.api_core import exceptions

        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                response = self.subscriber.pull(
                    subscription=self.path, max_messages=10, timeout=0.5
                )
            except exceptions.DeadlineExceeded:
                continue
            if response.received_messages:
                self.subscriber.acknowledge(
                    subscription=self.path,
                    ack_ids=[m.ack_id for m in response.received_messages],
                )
                return time.monotonic(), response.received_messages[0].delivery_attempt
        raise AssertionError(f"no message within {WAIT_S} s")


@pytest.fixture
def subscription(pubsub_emulator: str, project_id: str) -> Iterator[Subscription]:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project_id, "fires")
    dead_letter = publisher.topic_path(project_id, "fires-dead-letter")
    publisher.create_topic(name=topic)
    publisher.create_topic(name=dead_letter)
    sub = Subscription(publisher, subscriber, topic,
                       subscriber.subscription_path(project_id, "workers"), dead_letter)
    sub.create()
    yield sub
    subscriber.close()


@pytest.mark.emulator
def test_pubsub_transport_hands_over_deliveries_and_acks(subscription: Subscription) -> None:
    recorder = Recorder()
    transport = subscription.transport()
    with serving(transport, recorder):
        ids = {subscription.publish(b'{"n": %d}' % i, kind="test", n=str(i)) for i in range(20)}
        wait_for(lambda: recorder.ids() >= ids, what="every message")
        with recorder.lock:
            one = recorder.deliveries[0][1]
        assert one.attributes["kind"] == "test" and one.data.startswith(b'{"n": ')
        assert one.published_at.tzinfo is not None and one.published_at.utcoffset() == timedelta(0)
        assert one.delivery_attempt == 1  # the dead-letter policy makes Pub/Sub count attempts
    assert subscription.pending() == 0
    assert len(recorder.deliveries) == 20


@pytest.mark.emulator
def test_pubsub_transport_nack_with_delay_redelivers_after_the_delay(
    subscription: Subscription,
) -> None:
    recorder = Recorder(lambda _d, n: ACK if n > 1 else Disposition(
        ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=3)))
    transport = subscription.transport()
    with serving(transport, recorder):
        message_id = subscription.publish()
        wait_for(lambda: len(recorder.times(message_id)) == 2, what="the redelivery")
        first, second = recorder.times(message_id)
        # The client keeps no lease on it, and Pub/Sub holds it for the requested deadline.
        assert second - first >= 2.0


@pytest.mark.emulator
def test_pubsub_transport_nack_and_raising_handler_redeliver_at_once(
    subscription: Subscription,
) -> None:
    def respond(d: Delivery, n: int) -> Disposition:
        if n == 1 and d.attributes.get("kind") == "raise":
            raise RuntimeError("handler bug")
        if n == 1:
            return Disposition(ack=False, outcome=Outcome.RETRY)
        return ACK

    recorder = Recorder(respond)
    transport = subscription.transport()
    with serving(transport, recorder):
        nacked = subscription.publish(kind="nack")
        raised = subscription.publish(kind="raise")
        wait_for(lambda: len(recorder.times(nacked)) == 2 and len(recorder.times(raised)) == 2,
                 what="both redeliveries")
        with recorder.lock:
            attempts = [
                d.delivery_attempt for _, d in recorder.deliveries if d.message_id == nacked
            ]
        assert attempts == [1, 2]


@pytest.mark.emulator
def test_pubsub_transport_resubscribes_when_the_stream_ends(subscription: Subscription) -> None:
    recorder = Recorder()
    transport = subscription.transport()
    with serving(transport, recorder):
        thread_count = threading.active_count()
        # What an emulator restart looks like to the client: the subscription is gone.
        subscription.subscriber.delete_subscription(subscription=subscription.path)
        wait_for(lambda: not transport.ready, what="not ready while the subscription is gone")
        subscription.create()
        wait_for(lambda: transport.ready, what="ready again")
        message_id = subscription.publish()
        wait_for(lambda: message_id in recorder.ids(), what="a message after the new subscription")
        assert threading.active_count() < thread_count + 20  # no pile-up of streams


@pytest.mark.emulator
def test_pubsub_transport_stop_lets_running_actions_finish_and_acks_them(
    subscription: Subscription,
) -> None:
    started = threading.Event()

    def respond(_d: Delivery, _n: int) -> Disposition:
        started.set()
        time.sleep(1.5)
        return ACK

    recorder = Recorder(respond)
    transport = subscription.transport(grace_period=timedelta(seconds=20))
    running = Running(transport, recorder)
    wait_for(lambda: transport.ready, what="ready")
    subscription.publish()
    assert started.wait(WAIT_S)
    running.shutdown()
    assert transport.abandoned == 0 and not transport.ready
    assert subscription.pending() == 0, (
        "the finished action's message was acked before run returned"
    )


@pytest.mark.emulator
def test_pubsub_transport_abandons_after_the_grace_period(subscription: Subscription) -> None:
    started: list[float] = []
    release = threading.Event()
    released: list[str] = []

    def respond(_d: Delivery, _n: int) -> Disposition:
        started.append(time.monotonic())
        release.wait(WAIT_S)
        return ACK

    transport = subscription.transport(grace_period=timedelta(seconds=0.5),
                                       before_abandon=lambda: released.append("released"))
    running = Running(transport, Recorder(respond))
    wait_for(lambda: transport.ready, what="ready")
    subscription.publish()
    wait_for(lambda: bool(started), what="the delivery")
    running.shutdown()
    release.set()
    assert transport.abandoned == 1 and released == ["released"]
    # Nacked back: available to another replica at once, well before its 10 s ack deadline
    # runs out; never nacked, it would come back after it. Except that the emulator (0.8.20)
    # now and then hands a message nacked after its stream was cancelled to that dead stream,
    # where it stays for the stream's 10 s deadline (a bare client does the same: cancel the
    # stream, ModifyAckDeadline(0); about 1 run in 10 on a loaded machine). Each such delivery
    # is counted, so: back sooner than one deadline per delivery after the first, with room.
    back_at, attempt = subscription.next_delivery()
    assert back_at - started[0] < 10 * (attempt - 1) - 2, (back_at - started[0], attempt)


@pytest.mark.emulator
@pytest.mark.slow
def test_a_60_s_lease_extension_drains_a_backlog_longer_than_ten_seconds_without_redeliveries(
    subscription: Subscription,
) -> None:
    # A tick mode minute publishes thousands of fires at once: more than flow control lets the
    # client take, so the rest wait in the stream, already sent, under the stream's ack deadline.
    # At the default 10 s they ran out while they waited and Pub/Sub sent every one again, and
    # again (38,130 deliveries too many for a 20,000-slot minute, bench/README.md); with
    # `--max-lease-extension 60` none did. 1,500 messages at about 100 a second wait up to 15 s.
    def respond(_d: Delivery, _n: int) -> Disposition:
        time.sleep(0.04)
        return ACK

    recorder = Recorder(respond)
    options = {"max_messages": 10, "executors": 4, "max_backoff": timedelta(seconds=1),
               "max_lease_extension": timedelta(seconds=60)}
    transport = PubSubTransport(subscription.subscriber, subscription.path, **options)
    futures = [subscription.publisher.publish(subscription.topic, b"{}") for _ in range(1500)]
    ids = {str(f.result(timeout=WAIT_S)) for f in futures}
    with serving(transport, recorder):
        wait_for(lambda: recorder.ids() >= ids, timeout=120, what="every message")
        time.sleep(3)
    with recorder.lock:
        deliveries = len(recorder.deliveries)
    assert deliveries == len(ids), f"{deliveries - len(ids)} redeliveries of acked messages"
