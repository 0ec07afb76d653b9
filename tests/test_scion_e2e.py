"""The hub's JSON, end to end: `scion-scheduler sync --format scion` into the Cloud Scheduler
emulator, which fires into the Pub/Sub emulator at the next minute; `scion-worker run` processes
claim each fire in the Firestore emulator and fire it back into the reference hub.

The round-trip test waits for a real cron minute (up to a minute and a half): Cloud Scheduler fires
only at slots, and a one-shot only at its own minute.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import hub_stack
import pytest
from hub_stack import TOKEN, Stack, calls_for, record_of, wait_until
from scion_hub_data import envelope, event, new_id, schedule

from scheduler.config import Settings
from scheduler.contract import build_message, execution_id
from scheduler.model import format_instant
from scheduler.validation import schedules_from_data
from scion_scheduler.reference_hub import FireCall
from worker.action import ActionRegistry
from worker.actions.scion import ScionAction
from worker.firestore_ledger import FirestoreLedger
from worker.ledger import FINAL_STATES, Execution, State
from worker.pipeline import Pipeline
from worker.queue_transport import QueueTransport
from worker.transport import Delivery

pytestmark = pytest.mark.emulator


stack = hub_stack.stack  # the harness's fixture, in this module


def _next_slot(margin: timedelta = timedelta(seconds=15)) -> datetime:
    """The next minute boundary at least `margin` away (time to sync and start a worker)."""
    now = datetime.now(UTC)
    slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return slot if slot - now >= margin else slot + timedelta(minutes=1)


# --------------------------------------------------------------------------- sync only


def test_the_hubs_json_becomes_jobs_and_what_the_hub_marks_gone_is_removed(stack: Stack) -> None:
    active, paused = schedule(name="daily summary"), schedule(name="weekly", status="paused")
    deleted = schedule(name="old", status="deleted")
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    pending, cancelled = event(fire_at=later), event(fire_at=later, status="cancelled")
    pages = [envelope("schedules", [active, paused], next_cursor="page-2", total=3),
             envelope("schedules", [deleted], total=3),
             envelope("events", [pending, cancelled], total=2)]
    out = stack.sync(pages)
    assert out["plan"]["counts"]["create"] == 3
    jobs = stack.jobs()
    assert set(jobs) == {f"scion-{i['id']}" for i in (active, paused, pending)}
    assert jobs[f"scion-{paused['id']}"].state.name == "PAUSED"
    assert jobs[f"scion-{pending['id']}"].time_zone == "UTC"

    # The hub deleted the schedule and cancelled the event: without --prune, their jobs go all
    # the same, because the document says they must not exist.
    gone = [dict(active, status="deleted"), paused, deleted]
    out = stack.sync({"schedules": gone, "events": [dict(pending, status="cancelled")]})
    deletes = {s["schedule_id"] for s in out["plan"]["steps"] if s["kind"] == "delete"}
    assert deletes == {active["id"], pending["id"]}
    assert set(stack.jobs()) == {f"scion-{paused['id']}"}


# --------------------------------------------------------------------------- the round trip


@dataclass
class _RoundTrip:
    """The hub items of the round trip, one per case, all due at `slot`."""

    slot: datetime
    grove: str
    ok: dict[str, Any]
    dup: dict[str, Any]
    gone: dict[str, Any]
    flagged: dict[str, Any]
    flaky: dict[str, Any]
    one_shot: dict[str, Any]
    late_cancel: dict[str, Any]
    cancelled: dict[str, Any]


def _sync_every_case(stack: Stack) -> _RoundTrip:
    """Sync one item per case, due at the next slot, and set the hub's answer to each."""
    hub = stack.hub
    slot = _next_slot()
    # Daily at the slot's minute: every schedule fires at the slot and at no other time of the
    # test, so each switch below meets exactly the fire it is meant for.
    cron = f"{slot.minute} {slot.hour} * * *"
    grove = new_id()
    ok = schedule(name="ok", cron=cron, grove=grove)
    dup, gone, flagged, flaky = (
        schedule(name=n, cron=cron) for n in ("dup", "gone", "flagged", "flaky")
    )
    one_shot = event(fire_at=slot, event_type="dispatch_agent")
    late_cancel = event(fire_at=slot)
    cancelled = event(fire_at=slot, status="cancelled")
    stack.sync([envelope("schedules", [ok, dup, gone], next_cursor="cursor-2", total=5),
                envelope("schedules", [flagged, flaky], total=5),
                envelope("events", [one_shot, late_cancel, cancelled], total=3)])
    hub.set_behaviour(409, item_id=dup["id"])
    for item in (gone, flagged, late_cancel):  # deleted or cancelled at the hub after the sync
        hub.mark_gone(item["id"])
    hub.set_behaviour(500, item_id=flaky["id"], times=1)
    hub.hold(one_shot["id"])
    return _RoundTrip(slot, grove, ok, dup, gone, flagged, flaky, one_shot, late_cancel,
                      cancelled)


def _done(ledger: FirestoreLedger, item: dict[str, Any], slot: datetime) -> bool:
    record = record_of(ledger, item["id"], slot)
    return record is not None and record.state in FINAL_STATES


def _fire_then_take_the_one_shot_over(stack: Stack, ledger: FirestoreLedger,
                                      case: _RoundTrip) -> None:
    """Run the fires on one worker, kill it while the hub holds the one-shot's request, and
    see another worker take the one-shot over."""
    hub, slot, one_shot = stack.hub, case.slot, case.one_shot
    first = stack.start_worker("worker-a")
    # The one-shot's request is in the hub, which holds it unanswered; the other fires finish.
    hub.wait_for_arrival(one_shot["id"], timeout=(slot - datetime.now(UTC)).total_seconds() + 45)
    others = (case.ok, case.dup, case.gone, case.flagged, case.flaky, case.late_cancel)
    wait_until(
        lambda: all(_done(ledger, item, slot) for item in others), 60, "the other fires"
    )
    # The worker that sent the one-shot's request dies before hearing the answer; then the hub
    # acts on the request (it cannot tell that the caller has gone).
    first.kill()
    first.wait(timeout=10)
    hub.release(one_shot["id"])
    hub.wait_for(lambda calls: bool(calls_for(calls, one_shot["id"], slot)), 30)
    stack.start_worker("worker-b")
    # Pub/Sub hands the dead worker's message to another only when its ack deadline lapses,
    # which on the emulator takes from seconds to minutes (it also keeps pushing messages into
    # the dead worker's stream for a while). A redelivery is the job's message again, so the
    # test publishes that message again, every few seconds until a live worker has taken the
    # fire over; copies that arrive after that are duplicates the ledger suppresses.
    deadline = time.monotonic() + 90
    while not _done(ledger, one_shot, slot):
        assert time.monotonic() < deadline, "the one-shot was not taken over"
        stack.redeliver(one_shot["id"])
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _done(ledger, one_shot, slot), 5, "the one-shot to be taken over")


def _assert_the_hub_got_each_fire_once(calls: list[FireCall], case: _RoundTrip) -> None:
    slot, ok, one_shot = case.slot, case.ok, case.one_shot
    (call,) = calls_for(calls, ok["id"], slot)
    assert call.status == 200 and call.idempotency_key == execution_id(ok["id"], slot)
    assert call.grove_id == case.grove  # the fire URL's grove is the item's groveId
    assert call.body == {
        "scheduleId": ok["id"], "kind": "schedule", "groveId": case.grove, "name": "ok",
        "eventType": "message", "payload": json.loads(ok["payload"]),
        "fireTime": format_instant(slot), "executionId": execution_id(ok["id"], slot),
        "trigger": "scheduled", "attempt": 1,
    }
    assert [c.status for c in calls_for(calls, case.dup["id"], slot)] == [409]
    for item in (case.gone, case.flagged, case.late_cancel):
        assert [c.status for c in calls_for(calls, item["id"], slot)] == [410]
    assert [c.status for c in calls_for(calls, case.flaky["id"], slot)] == [500, 200]
    # The killed worker's request fired the one-shot; the takeover's got 409: it fired once.
    one_shot_calls = calls_for(calls, one_shot["id"], slot)
    assert [(c.status, c.body["attempt"]) for c in one_shot_calls] == [(200, 1), (409, 2)]
    assert {c.idempotency_key for c in one_shot_calls} == {execution_id(one_shot["id"], slot)}
    assert all(datetime.fromisoformat(c.received_at) >= slot for c in one_shot_calls)
    assert not [c for c in calls if c.item_id == case.cancelled["id"]]


def _assert_each_answer_is_recorded(ledger: FirestoreLedger, case: _RoundTrip) -> None:
    def outcome(item: dict[str, Any]) -> tuple[State, str | None, int]:
        record = record_of(ledger, item["id"], case.slot)
        assert record is not None
        return record.state, record.detail, record.attempt

    assert outcome(case.ok) == (State.SUCCEEDED, "HTTP 200", 1)
    assert outcome(case.dup) == (State.SUCCEEDED, "duplicate", 1)
    for item in (case.gone, case.flagged, case.late_cancel):
        what = "Schedule" if item is not case.late_cancel else "Scheduled event"
        detail = f"gone at the hub: {what} {item['id']} is gone"
        assert outcome(item)[:2] == (State.CANCELLED, detail)
    assert outcome(case.flaky) == (State.SUCCEEDED, "HTTP 200", 2)
    # Completed once, by the other worker's attempt 2, which found it done at the hub.
    assert outcome(case.one_shot) == (State.SUCCEEDED, "duplicate", 2)


def _reconcile_the_hubs_next_listing(stack: Stack, case: _RoundTrip) -> None:
    # At the next reconcile the hub's listing no longer has the deleted schedule (ListSchedules
    # leaves deleted ones out and DeleteSchedule is a hard delete); a listing filtered by status
    # can still show one as `deleted`; the events are `fired` and `cancelled` now.
    ok, dup, gone, flagged, flaky = case.ok, case.dup, case.gone, case.flagged, case.flaky
    one_shot, late_cancel = case.one_shot, case.late_cancel
    listing = {
        "schedules": [ok, dup, dict(flagged, status="deleted"), flaky],
        "events": [
            dict(one_shot, status="fired"),
            dict(late_cancel, status="cancelled"),
            case.cancelled,
        ],
    }
    out = stack.sync(listing)
    deletes = {s["schedule_id"] for s in out["plan"]["steps"] if s["kind"] == "delete"}
    assert deletes == {flagged["id"], one_shot["id"], late_cancel["id"]}
    # Left out of the listing, a job is kept without --prune, which is why a handover prunes.
    assert out["plan"]["kept_without_schedule"] == [f"scion-{gone['id']}"]
    out = stack.sync(listing, "--prune")
    assert [(s["kind"], s["schedule_id"]) for s in out["plan"]["steps"]] == [("delete", gone["id"])]
    assert set(stack.jobs()) == {f"scion-{i['id']}" for i in (ok, dup, flaky)}


@pytest.mark.slow
def test_fires_reach_the_hub_once_through_the_workers_and_each_answer_is_recorded(
    stack: Stack,
) -> None:
    """One minute, every case: a plain fire (of a schedule in a grove of its own), 409, 410
    from a schedule deleted at the hub, a 500 that is retried,
    a pending one-shot whose worker is killed while the hub holds its request, a one-shot
    cancelled at the hub after the sync, and one cancelled before it. The hub's JSON comes as
    its paged envelopes."""
    case = _sync_every_case(stack)
    ledger = stack.ledger()
    _fire_then_take_the_one_shot_over(stack, ledger, case)
    _assert_the_hub_got_each_fire_once(stack.hub.calls, case)
    _assert_each_answer_is_recorded(ledger, case)
    _reconcile_the_hubs_next_listing(stack, case)


# --------------------------------------------------------------------------- a hub without the endp


@pytest.mark.parametrize("stack", [{"fire_endpoint": False}], indirect=True)
def test_a_hub_without_the_fire_endpoint_fails_each_fire_and_the_worker_says_so_once(
        stack: Stack) -> None:
    """Today's hub has no fire endpoint: its routers answer a schedule's fire with 404
    "Schedule action not found" (handlers_schedules.go:134-135) and an event's with 405
    (handlers_scheduled_events.go:91-100). Manual fires through Pub/Sub reach a worker process;
    each is recorded `failed`, never `cancelled`, and the worker logs the cause once."""
    item = schedule(name="daily")
    one_shot = event(fire_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    stack.sync({"schedules": [item], "events": [one_shot]})
    worker = stack.start_worker("worker-a")
    ledger = stack.ledger()
    runs = {i["id"]: stack.run_now(i["id"]) for i in (item, one_shot)}

    def final(item_id: str) -> Execution | None:
        record = ledger.get(runs[item_id])
        return record if record is not None and record.state in FINAL_STATES else None

    wait_until(lambda: all(map(final, runs)), 90, "both fires to be recorded")
    for item_id in runs:
        record = final(item_id)
        assert record is not None and record.state is State.FAILED, record
        assert "the hub has no fire endpoint" in (record.error or "")
    worker.terminate()
    worker.wait(timeout=30)
    lines = [json.loads(line) for line in (stack.tmp / "worker-a.log").read_text().splitlines()
             if line.startswith("{")]
    said = [line for line in lines if "the hub has no fire endpoint;" in line.get("message", "")]
    assert len(said) == 1 and said[0]["level"] == "error"
    assert stack.hub.calls == []  # no fire endpoint, so no fire


# --------------------------------------------------------------------------- catch-up after an outa


def test_after_an_outage_latest_runs_one_fire_and_records_the_rest_missed(stack: Stack) -> None:
    """Fires for three consecutive hourly slots were queued while no worker ran (delivered as
    Cloud Scheduler published them: a few seconds after each slot); then a worker starts."""
    (s,) = schedules_from_data([schedule(cron="0 * * * *")], format="scion").schedules
    assert s.catchup == "latest"
    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    slots = [now.replace(minute=0) - timedelta(hours=h) for h in (2, 1, 0)]
    message = build_message(s)
    transport = QueueTransport(executors=2)
    for n, slot in enumerate(slots):
        transport.put(
            Delivery(f"m{n}", message.data, message.attributes, slot + timedelta(seconds=3))
        )
    ledger = stack.ledger()
    action = ScionAction(settings=Settings.from_env({}, hub_url=stack.hub.url, hub_token=TOKEN,
                                                        allowed_targets="127.0.0.1"))
    pipeline = Pipeline(ledger, ActionRegistry({"scion": action}), worker_id="late-worker",
                        clock=lambda: now)
    stop = threading.Event()
    runner = threading.Thread(target=transport.run, args=(pipeline.handle, stop), daemon=True)
    runner.start()
    try:
        assert transport.wait_idle(30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert [c.body["fireTime"] for c in stack.hub.calls] == [format_instant(slots[-1])]
    states = {r.fire_time: r.state for r in ledger.history(s.id)}
    assert states == {slots[0]: State.MISSED, slots[1]: State.MISSED, slots[2]: State.SUCCEEDED}


@pytest.mark.slow
def test_a_hub_expression_fires_at_the_hubs_instant_through_the_emulators(stack: Stack) -> None:
    """Syntax only the hub's robfig dialect has (a zone prefix, `?`, `N/60`) through the sync,
    the Cloud Scheduler emulator's job (its unix-cron translation), Pub/Sub and a worker: the hub
    is called back once, with its own fire time."""
    slot = _next_slot()
    local = slot.astimezone(ZoneInfo("Asia/Kolkata"))  # a half-hour offset from UTC
    cron = f"CRON_TZ=Asia/Kolkata {local.minute}/60 {local.hour} ? * ?"
    item = schedule(name="robfig", cron=cron)
    stack.sync([envelope("schedules", [item], total=1)])
    job = stack.jobs()[f"scion-{item['id']}"]
    assert (job.schedule, job.time_zone) == (f"{local.minute} {local.hour} * * *", "Asia/Kolkata")
    assert job.pubsub_target.attributes["cron-dialect"] == "robfig"
    stack.start_worker("worker")
    ledger = stack.ledger()

    def succeeded() -> bool:
        record = record_of(ledger, item["id"], slot)
        return record is not None and record.state is State.SUCCEEDED

    wait_until(succeeded, (slot - datetime.now(UTC)).total_seconds() + 45, "the fire")
    assert len(calls_for(stack.hub.calls, item["id"], slot)) == 1
