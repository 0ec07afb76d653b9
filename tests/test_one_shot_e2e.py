"""One-shots fire like the hub's, end to end: the hub's JSON synced into the Cloud Scheduler
emulator, fires through the Pub/Sub emulator, claimed in the Firestore emulator by two
`scion-worker run` processes and fired back into the reference hub (the stack of
`hub_stack`). The ones handed over late are in `test_one_shot_handover_e2e`.

* A pending event fires at its exact `fireAt` second, as the hub's `time.AfterFunc` does (scion
  pkg/hub/scheduler.go:263-271): its job publishes at the minute before and a worker holds the
  fire until `fireAt`; a copy delivered during the hold is a duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hub_stack
import pytest
from hub_stack import Stack, calls_for, record_of, wait_until
from scion_hub_data import envelope, event

from scheduler.contract import execution_id
from scheduler.model import one_shot_slot
from worker.ledger import State

pytestmark = pytest.mark.emulator
# `hub_stack`'s stack fixture, registered here under this name.
scion_stack = hub_stack.stack


def _fire_at_a_second_ahead() -> datetime:
    """A `fireAt` 51-111 s ahead, at second 31.25: its job fires at a whole minute at least 20 s
    from now (time to sync and start the workers), 31.25 s ahead of it (one_shot_slot: the
    minute at or before `fireAt` less the 30 s lead)."""
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if minute - now < timedelta(seconds=20):
        minute += timedelta(minutes=1)
    return minute + timedelta(seconds=31.25)


@pytest.mark.slow
def test_a_one_shot_event_fires_within_two_seconds_of_its_fire_at_through_two_workers(
    scion_stack: Stack,
) -> None:
    stack = scion_stack
    hub = stack.hub
    fire_at = _fire_at_a_second_ahead()
    job_slot = one_shot_slot(fire_at)
    item = event(fire_at=fire_at)
    out = stack.sync([envelope("events", [item], total=1)])
    assert [s["kind"] for s in out["plan"]["steps"]] == ["create"]  # its job fires it
    job = stack.jobs()[f"scion-{item['id']}"]
    assert job.schedule == f"{job_slot.minute} {job_slot.hour} {job_slot.day} {job_slot.month} *"
    stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    ledger = stack.ledger()
    eid = execution_id(item["id"], fire_at)

    # The job publishes at its slot; a worker claims the fire and holds it until fireAt.
    wait_until(lambda: record_of(ledger, item["id"], fire_at) is not None,
                (job_slot - datetime.now(UTC)).total_seconds() + 30, "the job's fire to be claimed")
    held = record_of(ledger, item["id"], fire_at)
    assert held is not None and held.state is State.RUNNING and datetime.now(UTC) < fire_at
    assert not hub.calls
    # A copy of the fire delivered during the hold (Pub/Sub delivers at least once) is busy.
    stack.redeliver(item["id"])

    hub.wait_for(lambda calls: bool(calls_for(calls, item["id"], fire_at)),
                 (fire_at - datetime.now(UTC)).total_seconds() + 30)
    wait_until(lambda: (r := record_of(ledger, item["id"], fire_at)) is not None
                and r.state is State.SUCCEEDED, 30, "the outcome to be recorded")
    [call] = calls_for(hub.calls, item["id"], fire_at)
    late = datetime.fromisoformat(call.received_at) - fire_at
    assert abs(late.total_seconds()) <= 2, f"fired {late.total_seconds():+.3f} s from fireAt"
    assert call.idempotency_key == eid and call.body["trigger"] == "scheduled"
    record = record_of(ledger, item["id"], fire_at)
    assert record is not None and (record.state, record.attempt) == (State.SUCCEEDED, 1)
    # The copy was busy while the fire was held, and is acked as a duplicate once it ran: the
    # hub never gets a second call.
    wait_until(lambda: any(stack.logged(busy, execution_id=eid) for busy in BUSY)
               and stack.logged(DUPLICATE, execution_id=eid), 60,
               "the copy to be found busy, then a duplicate")
    assert len(calls_for(hub.calls, item["id"], fire_at)) == 1


# Pub/Sub chooses the stream the copy goes to: the other worker's, or the holder's own.
BUSY = ("fire is running on another worker; redelivery later",
        "fire is being handled by this worker already; redelivery later")
DUPLICATE = "duplicate delivery of a finished fire"
