"""One-shots fire like the hub's: at their exact `fireAt` second (the hub's `time.AfterFunc`,
scion pkg/hub/scheduler.go:263-271), not at a minute.

The job fires at the minute at least `ONE_SHOT_LEAD` before `at`; the worker claims the fire,
holds it until `at` (its lease renewed meanwhile) and then runs it. These tests drive the
pipeline on the in-memory ledger with the fake clock of `test_pipeline`, through the pipeline's
`wait` seam; the emulator test in `test_one_shot_e2e.py` shows the same through Cloud
Scheduler, Pub/Sub, Firestore and two worker processes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from test_pipeline import KEY, WAIT_S, Harness, delivery, in_thread, schedule, wait_for

from scheduler.contract import execution_id
from scheduler.model import ONE_SHOT_LEAD, one_shot_slot
from worker.action import ActionContext, ActionRegistry
from worker.ledger import ClaimResult, State
from worker.pipeline import Disposition, Pipeline

AT = datetime(2026, 3, 2, 10, 0, 42, 250000, tzinfo=UTC)
JOB_SLOT = one_shot_slot(AT)  # 10:00:00, when the job publishes


def holding(h: Harness, wait: object, *, worker_id: str = "w1") -> Pipeline:
    """The harness's pipeline again, with a `wait` seam of the test's own."""
    h.pipeline = Pipeline(
        h.ledger, ActionRegistry({"custom": h.action}), worker_id=worker_id, signing_key=KEY,
        lease=h.pipeline.lease, metrics=h.metrics, clock=h.clock, wait=wait,  # type: ignore[arg-type]
    )
    return h.pipeline


def fake_wait(h: Harness, waits: list[float]) -> object:
    """A wait that lets the fake time pass instead of real time."""
    def wait(stop: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        h.clock.advance(timedelta(seconds=seconds))
        return stop.is_set()
    return wait


def test_the_job_publishes_ahead_and_the_worker_runs_the_fire_at_its_second() -> None:
    assert datetime(2026, 3, 2, 10, 0, tzinfo=UTC) == JOB_SLOT
    assert AT - JOB_SLOT >= ONE_SHOT_LEAD
    h = Harness(now=JOB_SLOT + timedelta(seconds=0.4))
    waits: list[float] = []
    holding(h, fake_wait(h, waits))
    started: list[datetime] = []
    h.action.behaviour = lambda _: started.append(h.clock()) and None
    sched = schedule(cron=None, at=AT)
    assert h.handle(delivery(sched, JOB_SLOT + timedelta(seconds=0.3))).outcome == "succeeded"
    assert started == [AT]
    assert sum(waits) == (AT - JOB_SLOT - timedelta(seconds=0.4)).total_seconds()
    [context] = h.action.calls
    assert context.fire_time == AT and context.execution_id == execution_id(sched.id, AT)
    record = h.ledger.get(execution_id(sched.id, AT))
    assert record is not None and record.state is State.SUCCEEDED and record.fire_time == AT


def test_a_fire_delivered_at_or_after_its_second_is_not_held() -> None:
    # The local clock emits a one-shot at `at` itself; a takeover may come after it.
    h = Harness(now=AT)
    waits: list[float] = []
    holding(h, fake_wait(h, waits))
    assert h.handle(delivery(schedule(cron=None, at=AT), AT)).outcome == "succeeded"
    assert waits == [] and [c.fire_time for c in h.action.calls] == [AT]


def test_a_duplicate_during_the_hold_is_busy_and_the_held_lease_is_renewed() -> None:
    h = Harness(now=JOB_SLOT + timedelta(seconds=1), lease=timedelta(seconds=0.3))
    entered, release = threading.Event(), threading.Event()

    def wait(stop: threading.Event, seconds: float) -> bool:
        entered.set()
        assert release.wait(WAIT_S)
        h.clock.set(AT)
        return stop.is_set()

    holding(h, wait)
    sched = schedule(cron=None, at=AT)
    eid = execution_id(sched.id, AT)
    thread, out = in_thread(lambda: h.handle(delivery(sched, JOB_SLOT)))
    assert entered.wait(WAIT_S)
    # The heartbeat keeps the held claim alive while it waits (real time, a 0.3 s lease).
    wait_for(lambda: sum(1 for e, _, ok in h.ledger.renewals if e == eid and ok) >= 2)
    busy = h.handle(delivery(sched, JOB_SLOT + timedelta(seconds=2)))
    assert (busy.ack, busy.outcome) == (False, "busy") and h.action.calls == []
    release.set()
    thread.join(WAIT_S)
    assert out == [Disposition(ack=True, outcome="succeeded")]
    assert h.handle(delivery(sched, JOB_SLOT)).outcome == "duplicate"
    assert [c.fire_time for c in h.action.calls] == [AT]


def test_a_worker_stopping_during_the_hold_hands_the_fire_to_another_which_holds_it() -> None:
    h = Harness(now=JOB_SLOT + timedelta(seconds=1))
    entered = threading.Event()
    stopping = threading.Event()

    def wait(stop: threading.Event, seconds: float) -> bool:
        entered.set()
        return stop.wait(WAIT_S)

    holding(h, wait)
    sched = schedule(cron=None, at=AT)
    thread, out = in_thread(lambda: h.handle(delivery(sched, JOB_SLOT), stopping))
    assert entered.wait(WAIT_S)
    stopping.set()
    thread.join(WAIT_S)
    assert out == [Disposition(ack=False, outcome="interrupted")]
    assert h.action.calls == []
    # Released: another replica takes it over at once, still ahead of `at`, and holds it.
    waits: list[float] = []
    other = holding(h, fake_wait(h, waits), worker_id="w2")
    assert other.handle(delivery(sched, JOB_SLOT)).outcome == "succeeded"
    assert waits and h.clock() == AT
    [context] = h.action.calls
    assert (context.fire_time, context.attempt) == (AT, 2)


def test_a_worker_that_died_during_the_hold_is_taken_over_when_its_lease_lapses() -> None:
    h = Harness(now=JOB_SLOT + timedelta(seconds=1))
    sched = schedule(cron=None, at=AT)
    h.claim_as("w-dead", sched, AT, timedelta(seconds=15))
    h.clock.set(JOB_SLOT + timedelta(seconds=20))  # its lease is over, `at` still ahead
    waits: list[float] = []
    holding(h, fake_wait(h, waits))
    claims: list[ClaimResult] = []
    original = h.ledger.claim

    def spy(request: object) -> object:
        claim = original(request)  # type: ignore[arg-type]
        claims.append(claim.result)
        return claim

    h.ledger.claim = spy  # type: ignore[assignment, method-assign]
    assert h.handle(delivery(sched, JOB_SLOT)).outcome == "succeeded"
    assert claims == [ClaimResult.TAKEN_OVER] and h.clock() == AT
    assert [(c.fire_time, c.attempt) for c in h.action.calls] == [(AT, 2)]


def test_the_action_sees_the_exact_fire_time() -> None:
    """The `X-Scion-Fire-Time` the hub gets is `fireAt` itself, sub-second part included."""
    seen: list[ActionContext] = []
    h = Harness(now=AT)
    h.action.behaviour = lambda context: seen.append(context) and None
    assert h.handle(delivery(schedule(cron=None, at=AT), JOB_SLOT)).outcome == "succeeded"
    assert seen[0].fire_time == AT and seen[0].fire_time.microsecond == 250000
