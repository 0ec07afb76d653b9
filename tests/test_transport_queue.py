"""The queue transport (the local fallback's), with a stub handler (no ledger): acks, redeliveries,
backoff and stopping (helpers: `transport_harness`)."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

from transport_harness import ACK, WAIT_S, Recorder, Running, delivery, serving

from worker.queue_transport import QueueTransport
from worker.transport import Delivery, Disposition, Outcome

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
