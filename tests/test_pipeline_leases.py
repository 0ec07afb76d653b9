"""The pipeline's lease: heartbeat, loss, shutdown, a claim that lands late and duplicates in
one process (harness: `pipeline_harness`)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from memory_ledger import MemoryLedger
from pipeline_harness import (
    SLOT,
    WAIT_S,
    FakeClock,
    Harness,
    Recorder,
    delivery,
    in_thread,
    on_every_ledger,
    pipeline_on,
    schedule,
    wait_for,
)
from structlog.testing import capture_logs

from scheduler.contract import execution_id
from worker.action import (
    ActionContext,
    ActionError,
    ActionResult,
)
from worker.ledger import ClaimRequest, State
from worker.transport import Disposition, Outcome

# The lease: heartbeat, loss, shutdown.


def test_heartbeat_renews_the_lease_during_a_long_action() -> None:
    h = Harness(lease=timedelta(seconds=0.3))
    eid = execution_id("team/report", SLOT)

    def long_action(_: ActionContext) -> None:
        wait_for(lambda: sum(1 for e, _, ok in h.ledger.renewals if e == eid and ok) >= 2)

    h.action.behaviour = long_action
    assert h.handle(delivery(schedule())).outcome == Outcome.SUCCEEDED


def test_lost_lease_leaves_the_outcome_to_the_new_holder() -> None:
    h = Harness(lease=timedelta(seconds=0.3))
    eid = execution_id("team/report", SLOT)

    def taken_over_meanwhile(_: ActionContext) -> None:
        h.ledger.steal(eid, "w2")
        wait_for(lambda: any(e == eid and not ok for e, _, ok in h.ledger.renewals))

    h.action.behaviour = taken_over_meanwhile
    with capture_logs() as logs:
        assert h.handle(delivery(schedule())) == Disposition(ack=True, outcome=Outcome.LOST)
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.RUNNING and record.worker_id == "w2"
    assert any(e["event"].startswith("lease lost") for e in logs)


def test_stopping_before_the_claim_returns_the_delivery_unclaimed(h: Harness) -> None:
    stopping = threading.Event()
    stopping.set()
    sched = schedule()
    interrupted = Disposition(ack=False, outcome=Outcome.INTERRUPTED)
    assert h.handle(delivery(sched), stopping) == interrupted
    assert h.action.calls == [] and h.ledger.history(sched.id) == []


@on_every_ledger
def test_release_running_hands_the_fire_to_another_worker(h: Harness) -> None:
    sched = schedule()
    eid = execution_id(sched.id, SLOT)
    started, finish = threading.Event(), threading.Event()

    def stuck(_: ActionContext) -> None:
        started.set()
        assert finish.wait(WAIT_S)

    h.action.behaviour = stuck
    thread, out = in_thread(lambda: h.handle(delivery(sched)))
    assert started.wait(WAIT_S)
    assert h.pipeline.release_running("shutdown grace period over") == [eid]
    # No lease to wait for: another replica takes the fire over at once.
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    finish.set()
    thread.join(WAIT_S)
    assert out == [Disposition(ack=True, outcome=Outcome.LOST)]


# A claim that lands late (the store hung longer than the lease) and duplicates in one process.


class SlowClaimLedger(MemoryLedger):
    """Each claim lands `delay` after it was asked for (the clock moves on meanwhile), and
    `taken` says whether another worker took the fire in that time."""

    def __init__(self, clock: FakeClock, delay: timedelta, taken: bool = False) -> None:
        super().__init__()
        self.clock, self.delay, self.taken = clock, delay, taken

    def claim(self, request: ClaimRequest) -> Any:
        claim = super().claim(request)
        self.clock.advance(self.delay)
        return claim

    def renew(self, execution_id: str, worker_id: str, lease_until: datetime) -> bool:
        return not self.taken and super().renew(execution_id, worker_id, lease_until)


@pytest.mark.parametrize("taken", [False, True])
def test_a_claim_whose_lease_lapsed_on_the_way_is_renewed_before_the_action(taken: bool) -> None:
    clock = FakeClock(SLOT + timedelta(seconds=2))
    ledger, recorder = SlowClaimLedger(clock, timedelta(seconds=61), taken), Recorder()
    pipeline = pipeline_on(ledger, recorder, clock=clock, lease=timedelta(seconds=60))
    result = pipeline.handle(delivery(schedule()))
    if taken:
        assert result == Disposition(ack=True, outcome=Outcome.LOST) and recorder.calls == []
    else:
        assert result.outcome == Outcome.SUCCEEDED and len(recorder.calls) == 1


def test_a_second_delivery_of_a_fire_this_process_is_running_waits() -> None:
    started, release = threading.Event(), threading.Event()

    def behaviour(_: ActionContext) -> ActionResult | None:
        started.set()
        release.wait(10)
        return None

    recorder = Recorder(behaviour)
    pipeline = pipeline_on(MemoryLedger(), recorder)
    first: list[Disposition] = []
    thread = threading.Thread(target=lambda: first.append(pipeline.handle(delivery(schedule()))))
    thread.start()
    assert started.wait(10)
    second = pipeline.handle(delivery(schedule()))
    release.set()
    thread.join(10)
    assert second.outcome == Outcome.BUSY and not second.ack
    assert first[0].outcome == Outcome.SUCCEEDED and len(recorder.calls) == 1


def test_a_duplicate_elsewhere_during_a_retry_wait_finds_the_fire_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker takes a released fire back before it waits to retry, so a duplicate delivered
    to another worker meanwhile spends no attempt of its own."""
    import worker.finishing as finishing

    monkeypatch.setattr(finishing, "RETRY_BASE_DELAY", timedelta(milliseconds=500))
    ledger, failures = MemoryLedger(), iter([ActionError("HTTP 503", retryable=True)])

    def behaviour(_: ActionContext) -> ActionResult | None:
        error = next(failures, None)
        if error is not None:
            raise error
        return None

    first, other = Recorder(behaviour), Recorder()
    workers = [
        pipeline_on(ledger, recorder, worker_id=name, retry_budget=timedelta(seconds=5))
        for name, recorder in (("w1", first), ("w2", other))
    ]
    results: list[Disposition] = []
    thread = threading.Thread(
        target=lambda: results.append(workers[0].handle(delivery(schedule())))
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not first.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # inside the 500 ms wait
    assert workers[1].handle(delivery(schedule())).outcome == Outcome.BUSY
    thread.join(10)
    assert results[0].outcome == Outcome.SUCCEEDED and other.calls == []
    assert [c.attempt for c in first.calls] == [1, 2]
