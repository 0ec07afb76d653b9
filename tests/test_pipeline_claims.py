"""The pipeline runs a fire once: success, duplicates, claims held elsewhere, overlap
(harness: `pipeline_harness`)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from pipeline_harness import (
    SLOT,
    WAIT_S,
    Harness,
    Recorder,
    delivery,
    in_thread,
    on_every_ledger,
    pipeline_on,
    schedule,
)

from scheduler.contract import execution_id
from worker.action import (
    ActionContext,
    ActionResult,
)
from worker.ledger import State
from worker.transport import Disposition, Outcome

# Success, duplicates, registered action types.


@on_every_ledger
def test_runs_registered_action_once_and_records_success(h: Harness) -> None:
    sched = schedule()
    assert h.handle(delivery(sched)) == Disposition(ack=True, outcome=Outcome.SUCCEEDED)
    [context] = h.action.calls
    eid = execution_id(sched.id, SLOT)
    assert context == ActionContext(
        schedule_id=sched.id,
        fire_time=SLOT,
        execution_id=eid,
        trigger="scheduled",
        attempt=1,
        params={"to": "ops"},
        labels={"team": "ops"},
    )
    record = h.ledger.get(eid)
    assert record is not None and record.state is State.SUCCEEDED and record.worker_id == "w1"
    assert h.outcomes("succeeded") == 1
    assert (
        h.metrics.registry.get_sample_value(
            "scion_worker_fires_received_total", {"trigger": "scheduled"}
        )
        == 1
    )
    assert h.metrics.registry.get_sample_value("scion_worker_fire_to_start_lag_seconds_count") == 1


@on_every_ledger
def test_duplicate_delivery_is_acked_without_running(h: Harness) -> None:
    sched = schedule()
    h.handle(delivery(sched))
    # A duplicate publish of the same slot: new message ID, publish time a little later.
    again = h.handle(delivery(sched, SLOT + timedelta(seconds=3)))
    assert again == Disposition(ack=True, outcome=Outcome.DUPLICATE)
    assert len(h.action.calls) == 1
    assert h.metrics.registry.get_sample_value("scion_worker_duplicates_suppressed_total") == 1


def test_action_result_state_and_detail_are_recorded(h: Harness) -> None:
    h.action.behaviour = lambda _: ActionResult(State.CANCELLED, "target gone")
    sched = schedule()
    assert h.handle(delivery(sched)).outcome == Outcome.CANCELLED
    record = h.ledger.get(execution_id(sched.id, SLOT))
    assert record is not None and record.state is State.CANCELLED and record.detail == "target gone"


def test_manual_trigger_is_never_deduplicated_against_its_slot(h: Harness) -> None:
    sched = schedule()
    assert h.handle(delivery(sched)).outcome == Outcome.SUCCEEDED
    manual = delivery(sched, SLOT + timedelta(seconds=5), trigger="manual", fire_time=SLOT)
    assert h.handle(manual).outcome == Outcome.SUCCEEDED
    assert [c.trigger for c in h.action.calls] == ["scheduled", "manual"]
    assert h.action.calls[0].execution_id != h.action.calls[1].execution_id


def test_manual_fire_is_never_missed(h: Harness) -> None:
    h.clock.set(SLOT + timedelta(days=2))
    manual = delivery(schedule(catchup="none"), SLOT, trigger="manual", fire_time=SLOT)
    assert h.handle(manual).outcome == Outcome.SUCCEEDED


# Claims held elsewhere, overlap.


@on_every_ledger
def test_busy_fire_is_nacked_until_the_holders_lease_ends(h: Harness) -> None:
    sched = schedule()
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    h.clock.advance(timedelta(seconds=20))
    result = h.handle(delivery(sched))
    assert result == Disposition(ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=40))
    assert h.action.calls == []


@on_every_ledger
def test_a_long_running_fires_duplicate_waits_as_long_as_it_has_run(h: Harness) -> None:
    """The reaper takes the fire over if its holder dies (its message is kept), so a duplicate
    need not come back every lease and use up the dead-letter policy's attempts."""
    sched = schedule()
    started, release = threading.Event(), threading.Event()

    def behaviour(context: ActionContext) -> None:
        started.set()
        release.wait(WAIT_S)

    h.action.behaviour = behaviour
    thread, out = in_thread(lambda: h.handle(delivery(sched)))
    try:
        assert started.wait(WAIT_S)
        h.clock.advance(timedelta(seconds=100))
        assert h.pipeline.ledger.renew(
            execution_id(sched.id, SLOT), "w1", h.clock() + timedelta(seconds=12)
        )
        other = pipeline_on(
            h.ledger, Recorder(), worker_id="w2", lease=timedelta(seconds=12), clock=h.clock
        )
        result = other.handle(delivery(sched))
        assert result == Disposition(ack=False, outcome=Outcome.BUSY, delay=timedelta(seconds=100))
    finally:
        release.set()
        thread.join(WAIT_S)
    assert out[0].outcome == Outcome.SUCCEEDED


@on_every_ledger
def test_fire_of_a_dead_holder_is_taken_over_after_its_lease(h: Harness) -> None:
    sched = schedule()
    h.claim_as("w2", sched, SLOT, timedelta(seconds=60))
    h.clock.advance(timedelta(seconds=61))
    assert h.handle(delivery(sched)).outcome == Outcome.SUCCEEDED
    assert [c.attempt for c in h.action.calls] == [2]


@on_every_ledger
@pytest.mark.parametrize(
    ("overlap", "second"), [("skip", Outcome.SKIPPED), ("allow", Outcome.SUCCEEDED)]
)
def test_overlap_policy(h: Harness, overlap: str, second: Outcome) -> None:
    sched = schedule(overlap=overlap)
    first_started, release_first = threading.Event(), threading.Event()

    def behaviour(context: ActionContext) -> None:
        if context.fire_time == SLOT:
            first_started.set()
            assert release_first.wait(WAIT_S)

    h.action.behaviour = behaviour
    thread, first = in_thread(lambda: h.handle(delivery(sched)))
    assert first_started.wait(WAIT_S)
    next_slot = SLOT + timedelta(minutes=5)
    h.clock.set(next_slot + timedelta(seconds=2))
    assert h.handle(delivery(sched, next_slot + timedelta(seconds=1))).outcome == second
    release_first.set()
    thread.join(WAIT_S)
    assert first == [Disposition(ack=True, outcome=Outcome.SUCCEEDED)]
    record = h.ledger.get(execution_id(sched.id, next_slot))
    assert record is not None and record.state is State(second)


@on_every_ledger
def test_concurrent_deliveries_of_one_fire_run_it_once(h: Harness) -> None:
    # The clock is frozen: every claim has the same worker and the same `now`.
    sched = schedule()
    results: list[Disposition] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def deliver() -> None:
        go.wait(WAIT_S)
        outcome = h.handle(delivery(sched))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert len(h.action.calls) == 1 and len(results) == 8
    assert [r.outcome for r in results].count(Outcome.SUCCEEDED) == 1
    assert {r.outcome for r in results} <= {Outcome.SUCCEEDED, Outcome.BUSY, Outcome.DUPLICATE}
