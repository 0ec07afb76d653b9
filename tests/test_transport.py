"""The transports, the health server and `scion-worker run`'s flags.

The Pub/Sub transport runs against the real emulator with a stub handler (no ledger): these
tests pin what the transport itself promises. The whole worker is in `test_worker_e2e.py`.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import pytest

from scheduler.config import Settings
from worker import cli
from worker.health import HealthServer
from worker.ledger import FINAL_STATES
from worker.metrics import WorkerMetrics
from worker.pubsub_transport import PubSubTransport
from worker.queue_transport import QueueTransport
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


# The queue transport (the local fallback's).


def test_queue_transport_acks_and_redelivers_after_the_nack_delay() -> None:
    recorder = Recorder(lambda _d, n: ACK if n > 1 else Disposition(
        ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=0.2)))
    transport = QueueTransport(executors=2)
    with serving(transport, recorder):
        transport.put(delivery("a"))
        transport.put(delivery("b"))
        assert transport.wait_idle(WAIT_S)
        assert len(recorder.times("a")) == 2 and len(recorder.times("b")) == 2
        first, second = recorder.times("a")
        assert second - first >= 0.15
    assert not transport.ready and transport.abandoned == 0


def test_queue_transport_backs_off_exponentially_without_a_delay() -> None:
    retry = Disposition(ack=False, outcome=Outcome.RETRY)
    recorder = Recorder(lambda _d, n: ACK if n > 3 else retry)
    transport = QueueTransport(
        min_backoff=timedelta(seconds=0.1), max_backoff=timedelta(seconds=0.2)
    )
    with serving(transport, recorder):
        transport.put(delivery("a"))
        assert transport.wait_idle(WAIT_S)
        times = recorder.times("a")
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.08 and gaps[1] >= 0.15 and gaps[2] >= 0.15  # 0.1, 0.2, capped 0.2


def test_queue_transport_survives_a_raising_handler() -> None:
    def respond(_d: Delivery, n: int) -> Disposition:
        if n == 1:
            raise RuntimeError("boom")
        return ACK

    transport = QueueTransport(min_backoff=timedelta(seconds=0.05))
    with serving(transport, Recorder(respond)):
        transport.put(delivery("a"))
        assert transport.wait_idle(WAIT_S)


def test_queue_transport_stop_waits_for_running_work_then_abandons_after_grace() -> None:
    release = threading.Event()
    started = threading.Event()
    abandoned: list[bool] = []

    def respond(d: Delivery, _n: int) -> Disposition:
        started.set()
        if d.message_id == "slow":
            release.wait(WAIT_S)
        return ACK

    transport = QueueTransport(grace_period=timedelta(seconds=0.3),
                               before_abandon=lambda: abandoned.append(True))
    running = Running(transport, Recorder(respond))
    transport.put(delivery("slow"))
    assert started.wait(WAIT_S)
    running.shutdown()
    release.set()
    assert transport.abandoned == 1 and abandoned == [True]


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


# The health server.


def test_health_server_endpoints() -> None:
    metrics = WorkerMetrics()
    metrics.executions.labels("succeeded").inc()
    ready = [False]
    server = HealthServer(
        0, ready=lambda: ready[0], registry=metrics.registry, host="127.0.0.1"
    ).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/livez", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert info.value.code == 503
        ready[0] = True
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            body = response.read().decode()
        assert 'scion_worker_executions_total{outcome="succeeded"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        assert info.value.code == 404
    finally:
        server.stop()


# `scion-worker run` flags.


def _parsed_run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[Any, Settings]:
    for name in ("PORT", "SCION_SCHEDULER_SUBSCRIPTION", "SCION_SCHEDULER_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, Any] = {}

    def fake_run_worker(settings: Settings, options: Any) -> int:
        seen["settings"], seen["options"] = settings, options
        return 0

    monkeypatch.setattr("worker.runner.run_worker", fake_run_worker)
    assert cli.main(argv) == 0
    return seen["options"], seen["settings"]


def test_run_flags_after_the_command_and_port_default(monkeypatch: pytest.MonkeyPatch) -> None:
    options, settings = _parsed_run(
        [
            "--project",
            "p1",
            "run",
            "--subscription",
            "subs",
            "--executors",
            "3",
            "--max-messages",
            "7",
            "--grace-period",
            "2.5",
            "--lease",
            "3",
        ],
        monkeypatch,
        {"PORT": "9191"},
    )
    assert settings.project == "p1" and settings.subscription == "subs"
    assert options.health_port == 9191 and options.executors == 3 and options.max_messages == 7
    assert options.grace_period == timedelta(seconds=2.5) and options.lease == timedelta(seconds=3)

    options, settings = _parsed_run(["run", "--health-port", "0"], monkeypatch,
                                    {"SCION_SCHEDULER_SUBSCRIPTION": "from-env"})
    assert options.health_port == 0 and settings.subscription == "from-env"
    options, _ = _parsed_run(["run"], monkeypatch, {})
    assert options.health_port == 8080 and options.grace_period == timedelta(seconds=30)


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["run", "--executors", "0"], {}, "--executors"),
    (["run", "--lease", "soon"], {}, "--lease"),
    (["run", "--health-port", "70000"], {}, "--health-port"),
    (["run", "--max-lease-extension", "601"], {}, "--max-lease-extension"),
    (["run"], {"PORT": "http"}, "PORT"),
])
def test_run_rejects_bad_flags_naming_them(
    argv: list[str], env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits 2 on a bad flag value
        code = int(exc.code or 0)
    assert code == 2
    assert named in capsys.readouterr().err


def test_run_requires_project_and_subscription(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SCION_SCHEDULER_PROJECT", raising=False)
    monkeypatch.setenv("SCION_SCHEDULER_SUBSCRIPTION", "")
    assert cli.main(["run", "--health-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "SCION_SCHEDULER_PROJECT" in err


def test_outcomes_keep_their_strings_and_name_every_final_state() -> None:
    # The strings are the `outcome` label of `scion_worker_executions` and the log field:
    # dashboards and alerts match them, so they never change.
    assert [str(outcome) for outcome in Outcome] == [
        "succeeded", "failed", "cancelled", "skipped", "missed", "duplicate", "busy", "not_due",
        "retry", "rejected", "interrupted", "lost", "error"]
    assert all(Outcome(state.value) == state for state in FINAL_STATES)
    metrics = WorkerMetrics()
    metrics.executions.labels(Outcome.NOT_DUE).inc()
    assert metrics.registry.get_sample_value(
        "scion_worker_executions_total", {"outcome": "not_due"}) == 1.0
