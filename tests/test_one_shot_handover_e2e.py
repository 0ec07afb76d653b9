"""One-shots handed over to a worker, end to end (the stack of `hub_stack`, as in
`test_one_shot_e2e`).

* A pending event handed over after its job's slot is fired by the sync and held until its
  `fireAt`; a worker killed while it holds the fire is taken over, and the event still fires
  on time.
* A pending event handed over after its `fireAt` fires once, as the hub fires one found past
  due at start-up and marks it `expired` (pkg/hub/scheduler.go:237-247, :296-299); syncing it
  again fires nothing.
"""

from __future__ import annotations

import time
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


@pytest.mark.slow
def test_a_worker_killed_during_the_hold_is_taken_over_and_the_event_still_fires_on_time(
    scion_stack: Stack,
) -> None:
    stack = scion_stack
    workers = [stack.start_worker("worker-a"), stack.start_worker("worker-b")]
    for name in ("worker-a", "worker-b"):
        wait_until(lambda n=name: stack.logged("streaming pull open", worker=n), 60,
                   f"{name} to subscribe")
    # Handed over after its job's slot (the minute at or before fireAt less the 30 s lead):
    # the sync publishes the job's own message at once, and the worker holds it 30-40 s, as
    # the job's fire at its slot is held (`test_one_shot_e2e`) but without waiting for a slot.
    now = datetime.now(UTC)
    fire_at = min(now + timedelta(seconds=40),
                  now.replace(second=0) + timedelta(seconds=89)).replace(microsecond=250000)
    assert one_shot_slot(fire_at) <= now
    item = event(fire_at=fire_at)
    out = stack.sync([envelope("events", [item], total=1)])
    assert [(s["kind"], s["status"]) for s in out["result"]["outcomes"]] == [
        ("create", "ok"), ("fire", "ok")]
    ledger = stack.ledger()
    wait_until(lambda: record_of(ledger, item["id"], fire_at) is not None, 30,
               "the sync's fire to be claimed")
    held = record_of(ledger, item["id"], fire_at)
    assert held is not None and held.worker_id is not None
    # Worker IDs are `{hostname}-{pid}-{random}`.
    holder = next(w for w in workers if w.pid == int(held.worker_id.rsplit("-", 2)[1]))
    holder.kill()
    holder.wait(timeout=10)
    # The dead holder's claim lapses after its 5 s lease. Pub/Sub hands its message on only
    # when the ack deadline lapses (on the emulator, after seconds to minutes), so the test
    # publishes the job's message again, as a redelivery, until the survivor has taken over.
    while (record := record_of(ledger, item["id"], fire_at)) is not None \
            and record.worker_id == held.worker_id:
        assert datetime.now(UTC) < fire_at, "not taken over before fireAt"
        stack.redeliver(item["id"])
        time.sleep(3)
    stack.hub.wait_for(lambda calls: bool(calls_for(calls, item["id"], fire_at)),
                       (fire_at - datetime.now(UTC)).total_seconds() + 30)
    [call] = calls_for(stack.hub.calls, item["id"], fire_at)
    late = datetime.fromisoformat(call.received_at) - fire_at
    assert abs(late.total_seconds()) <= 2, f"fired {late.total_seconds():+.3f} s from fireAt"
    assert call.body["attempt"] == 2
    wait_until(lambda: (r := record_of(ledger, item["id"], fire_at)) is not None
                and r.state is State.SUCCEEDED, 30, "the outcome to be recorded")


def test_a_past_due_event_handed_over_fires_once_as_expired(scion_stack: Stack) -> None:
    stack = scion_stack
    hub = stack.hub
    fire_at = datetime.now(UTC).replace(microsecond=250000) - timedelta(hours=3)
    item = event(fire_at=fire_at)
    listing = [envelope("events", [item], total=1)]
    out = stack.sync(listing)
    assert [(s["kind"], s["status"]) for s in out["result"]["outcomes"]] == [
        ("create", "ok"), ("fire", "ok")]
    stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    hub.wait_for(lambda calls: bool(calls_for(calls, item["id"], fire_at)), 60)
    # The job the first sync wrote says the fire went out: the second sync fires nothing.
    again = stack.sync(listing)
    assert again["plan"]["steps"] == []
    ledger = stack.ledger()
    wait_until(lambda: (r := record_of(ledger, item["id"], fire_at)) is not None
                and r.state is State.SUCCEEDED, 30, "the outcome to be recorded")
    record = record_of(ledger, item["id"], fire_at)
    assert record is not None and record.trigger == "expired"
    [call] = calls_for(hub.calls, item["id"], fire_at)
    assert call.body["trigger"] == "expired"
    assert call.idempotency_key == execution_id(item["id"], fire_at)
