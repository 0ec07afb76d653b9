"""One-shots fire like the hub's: at their exact `fireAt` second (the hub's `time.AfterFunc`,
scion pkg/hub/scheduler.go:263-271), not at a minute.

The job fires at the minute at least `ONE_SHOT_LEAD` before `at`; the worker claims the fire,
holds it until `at` (its lease renewed meanwhile) and then runs it. These tests drive the
pipeline with the fake clock of `pipeline_harness`, through the pipeline's `wait` seam, on the
in-memory ledger (and, where the ledger decides, on SQLite and the Firestore emulator too);
`test_one_shot_e2e.py` shows the same through Cloud Scheduler, Pub/Sub, Firestore and two
worker processes.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pipeline_harness
import pytest
from google.cloud import scheduler_v1
from pipeline_harness import (
    KEY,
    LEDGERS,
    SLOT,
    WAIT_S,
    Harness,
    delivery,
    in_thread,
    schedule,
    wait_for,
)
from scion_hub_data import event as hub_event
from scion_hub_data import schedule as hub_schedule

from scheduler.contract import ATTR_TRIGGER, build_message, execution_id
from scheduler.jobs import JobRetry, JobSpec
from scheduler.model import ONE_SHOT_LEAD, Schedule, one_shot_slot
from scheduler.one_shots import MAX_LATE_FIRE
from scheduler.sync_plan import Step, compute_plan
from scheduler.validation import schedules_from_data
from worker.action import ActionContext, ActionRegistry
from worker.ledger import ClaimResult, State
from worker.pipeline import Pipeline
from worker.transport import Delivery, Disposition, Outcome

# The `pipeline_harness` fixture `h`, here on each ledger: memory, SQLite and Firestore (emulator).
any_ledger = pipeline_harness.h
on_every_ledger = pytest.mark.parametrize("any_ledger", LEDGERS, indirect=True)

AT = datetime(2026, 3, 2, 10, 0, 42, 250000, tzinfo=UTC)
JOB_SLOT = one_shot_slot(AT)  # 10:00:00, when the job publishes


def holding(h: Harness, wait: object, *, worker_id: str = "w1") -> Pipeline:
    """The harness's pipeline again, with a `wait` seam of the test's own."""
    h.pipeline = Pipeline(
        h.ledger, ActionRegistry({"custom": h.action}), worker_id=worker_id, signing_key=KEY,
        lease=h.pipeline.lease, metrics=h.metrics, clock=h.clock,
        wait=wait,  # type: ignore[arg-type]
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
    assert h.handle(delivery(sched, JOB_SLOT + timedelta(seconds=0.3))).outcome == Outcome.SUCCEEDED
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
    assert h.handle(delivery(schedule(cron=None, at=AT), AT)).outcome == Outcome.SUCCEEDED
    assert waits == [] and [c.fire_time for c in h.action.calls] == [AT]


def test_only_a_one_shot_is_held_not_an_early_cron_slot_nor_a_manual_fire() -> None:
    h = Harness(now=SLOT - timedelta(seconds=2))
    waits: list[float] = []
    holding(h, fake_wait(h, waits))
    # Published 3 s before its slot: early only by the clocks' difference, so it runs now.
    assert h.handle(delivery(schedule(), SLOT - timedelta(seconds=3))).outcome == Outcome.SUCCEEDED
    later = SLOT + timedelta(minutes=1)
    manual = delivery(schedule(), trigger="manual", fire_time=later)
    assert h.handle(manual).outcome == Outcome.SUCCEEDED
    assert waits == [] and [c.fire_time for c in h.action.calls] == [SLOT, later]


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
    assert (busy.ack, busy.outcome) == (False, Outcome.BUSY) and h.action.calls == []
    release.set()
    thread.join(WAIT_S)
    assert out == [Disposition(ack=True, outcome=Outcome.SUCCEEDED)]
    assert h.handle(delivery(sched, JOB_SLOT)).outcome == Outcome.DUPLICATE
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
    assert out == [Disposition(ack=False, outcome=Outcome.INTERRUPTED)]
    assert h.action.calls == []
    # Released: another replica takes it over at once, still ahead of `at`, and holds it.
    waits: list[float] = []
    other = holding(h, fake_wait(h, waits), worker_id="w2")
    assert other.handle(delivery(sched, JOB_SLOT)).outcome == Outcome.SUCCEEDED
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
    assert h.handle(delivery(sched, JOB_SLOT)).outcome == Outcome.SUCCEEDED
    assert claims == [ClaimResult.TAKEN_OVER] and h.clock() == AT
    assert [(c.fire_time, c.attempt) for c in h.action.calls] == [(AT, 2)]


def test_the_action_sees_the_exact_fire_time() -> None:
    """The `X-Scion-Fire-Time` the hub gets is `fireAt` itself, sub-second part included."""
    seen: list[ActionContext] = []
    h = Harness(now=AT)
    h.action.behaviour = lambda context: seen.append(context) and None
    assert h.handle(delivery(schedule(cron=None, at=AT), JOB_SLOT)).outcome == Outcome.SUCCEEDED
    assert seen[0].fire_time == AT and seen[0].fire_time.microsecond == 250000


# --- a sync fires what a job can no longer fire -------------------------------------------------

SPEC = JobSpec("projects/p/locations/l", "projects/p/topics/fires", "scion-",
               JobRetry(3, timedelta(seconds=5), timedelta(minutes=1), 3, timedelta(0)), KEY)
GRACE = timedelta(minutes=10)


def hub_items(*items: dict[str, Any]) -> list[Schedule]:
    """Hub JSON (shapes of scion pkg/store/models.go, see `scion_hub_data`) as schedules."""
    return list(schedules_from_data(list(items), format="scion",
                                    known_action_types=frozenset({"scion"})).schedules)


def scion_pipeline(h: Harness, now: datetime) -> Harness:
    """The harness at `now`, its recorder registered as the hub's `scion` action."""
    h.clock.set(now)
    h.pipeline = Pipeline(h.ledger, ActionRegistry({"scion": h.action}), worker_id="w1",
                          signing_key=KEY, clock=h.clock)
    return h


def kinds(steps: tuple[Step, ...]) -> list[tuple[str, str | None]]:
    return [(step.kind, step.message.attributes[ATTR_TRIGGER] if step.message else None)
            for step in steps]


def test_a_one_shot_handed_over_after_its_job_slot_is_fired_by_the_sync_and_held() -> None:
    sched = schedule(cron=None, at=AT)
    now = JOB_SLOT + timedelta(seconds=10)  # the job would never fire this year
    plan = compute_plan([], [sched], SPEC, now=now, grace=GRACE)
    assert kinds(plan.steps) == [("create", None), ("fire", "scheduled")]
    # The sync's fire is the job's own message: the worker holds it until `at`.
    h = Harness(now=now)
    waits: list[float] = []
    holding(h, fake_wait(h, waits))
    fire = plan.steps[1].message
    assert fire is not None
    delivered = Delivery("m-sync", fire.data, fire.attributes, now + timedelta(seconds=0.2))
    assert h.handle(delivered).outcome == Outcome.SUCCEEDED
    assert [c.fire_time for c in h.action.calls] == [AT] and h.clock() == AT
    # A later sync finds the job it wrote for that `at`, and fires nothing.
    assert compute_plan([SPEC.desired_job(sched)], [sched], SPEC, now=now, grace=GRACE).is_noop


@on_every_ledger
def test_a_past_due_one_shot_fires_once_as_expired_however_often_it_is_synced(
    any_ledger: Harness,
) -> None:
    [event] = hub_items(hub_event(fire_at=AT))
    now = AT + timedelta(hours=5)  # the hub was down, as at its start-up recovery
    plan = compute_plan([], [event], SPEC, now=now, grace=GRACE)
    assert kinds(plan.steps) == [("create", None), ("fire", "expired")]
    # The second sync finds the job the first one wrote: no second fire.
    job = SPEC.desired_job(event)
    assert compute_plan([job], [event], SPEC, now=now + timedelta(minutes=5), grace=GRACE).is_noop
    # Even a fire published twice (the job deleted by hand in between) runs once: it has the
    # one-shot's own execution ID.
    fire = plan.steps[1].message
    assert fire is not None
    h = scion_pipeline(any_ledger, now)
    first = h.handle(Delivery("m1", fire.data, fire.attributes, now))
    again = h.handle(Delivery("m2", fire.data, fire.attributes, now + timedelta(minutes=5)))
    assert (first.outcome, again.outcome) == (Outcome.SUCCEEDED, Outcome.DUPLICATE)
    record = h.ledger.get(execution_id(event.id, AT))
    assert record is not None and record.trigger == "expired" and record.fire_time == AT
    assert [(c.fire_time, c.trigger) for c in h.action.calls] == [(AT, "expired")]


@on_every_ledger
def test_a_one_shot_already_fired_by_its_job_is_a_duplicate_of_its_expired_fire(
    any_ledger: Harness,
) -> None:
    [event] = hub_items(hub_event(fire_at=AT))
    h = scion_pipeline(any_ledger, AT)
    scheduled = build_message(event, signing_key=KEY)
    assert h.handle(Delivery("m1", scheduled.data, scheduled.attributes, JOB_SLOT)).outcome \
        == Outcome.SUCCEEDED
    expired = build_message(event, signing_key=KEY, trigger="expired")
    h.clock.set(AT + timedelta(hours=1))
    assert h.handle(Delivery("m2", expired.data, expired.attributes, h.clock())).outcome \
        == Outcome.DUPLICATE
    assert len(h.action.calls) == 1


def test_past_due_one_shots_are_bound_by_their_window_and_at_most_seven_days() -> None:
    native = schedule(cron=None, at=AT)  # catch-up window 15 minutes
    [event] = hub_items(hub_event(fire_at=AT))  # the hub's: 7 days
    assert event.catchup_window == MAX_LATE_FIRE == timedelta(days=7)
    for sched, bound in ((native, timedelta(minutes=15)), (event, MAX_LATE_FIRE)):
        within = compute_plan([], [sched], SPEC, now=AT + bound, grace=GRACE)
        assert kinds(within.steps)[-1] == ("fire", "expired")
        beyond = compute_plan([], [sched], SPEC, now=AT + bound + timedelta(seconds=1), grace=GRACE)
        assert beyond.is_noop and beyond.expired == (sched.id,)


def test_a_paused_one_shot_is_not_fired_and_a_resumed_one_is() -> None:
    sched = schedule(cron=None, at=AT, paused=True)
    now = AT + timedelta(minutes=1)
    paused_job = SPEC.desired_job(sched)
    paused_job.state = scheduler_v1.Job.State.PAUSED
    assert kinds(compute_plan([paused_job], [sched], SPEC, now=now, grace=GRACE).steps) == []
    resumed = replace(sched, paused=False)
    assert kinds(compute_plan([paused_job], [resumed], SPEC, now=now, grace=GRACE).steps) == [
        ("resume", None), ("fire", "expired")]


# --- a hub schedule after an outage fires once, however late ------------------------------------

@on_every_ledger
def test_a_hub_schedule_whose_last_slot_was_three_days_ago_still_fires_once(
    any_ledger: Harness,
) -> None:
    """The hub's evaluator fires a schedule whose next_run_at has passed at its first tick,
    however late (scion pkg/hub/server.go:1715-1735), and moves next_run_at past now (:1754).
    Here the workers come back after 3 days to that week's backlog: the newest fire runs, the
    older ones are recorded missed (`catchup: latest`)."""
    [weekly] = hub_items(hub_schedule(cron="0 9 * * MON"))
    mondays = [datetime(2026, 2, 16, 9, tzinfo=UTC), datetime(2026, 2, 23, 9, tzinfo=UTC)]
    now = mondays[-1] + timedelta(days=3)
    h = scion_pipeline(any_ledger, now)
    message = build_message(weekly, signing_key=KEY)
    outcomes = [h.handle(Delivery(f"m{i}", message.data, message.attributes, slot)).outcome
                for i, slot in enumerate(mondays)]
    assert outcomes == [Outcome.MISSED, Outcome.SUCCEEDED]
    assert [c.fire_time for c in h.action.calls] == [mondays[-1]]
    # A native schedule keeps its own policy: 15 minutes, so 3 days late is missed.
    native = replace(weekly, id="native-weekly", catchup_window=timedelta(minutes=15))
    late = build_message(native, signing_key=KEY)
    late_delivery = Delivery("m9", late.data, late.attributes, mondays[-1])
    assert h.handle(late_delivery).outcome == Outcome.MISSED
    assert len(h.action.calls) == 1
