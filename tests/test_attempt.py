"""An attempt makes every shape of its fire from one value: the claim, the action's context,
the missed record and the log fields all carry the same IDs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.contract import build_message, decode_message, execution_id
from scheduler.model import Action, Schedule
from worker.action import ActionContext
from worker.attempt import Attempt
from worker.ledger import State
from worker.transport import Delivery

SLOT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=2)


def attempt_of(schedule: Schedule, stopping: threading.Event | None = None, **build: Any
               ) -> Attempt:
    message = build_message(schedule, **build)
    delivery = Delivery("m1", message.data, message.attributes, SLOT + timedelta(seconds=1))
    fire = decode_message(delivery.data, delivery.attributes)
    fire_time = fire.derive_fire_time(delivery.published_at)
    return Attempt.of(fire, fire_time, delivery, lambda _c: None, stopping)


SCHEDULE = Schedule(id="team/report", action=Action("custom", {"to": "ops"}),
                    cron="*/5 * * * *", labels={"team": "ops"}, overlap="skip")


def test_every_shape_carries_the_same_ids() -> None:
    attempt = attempt_of(SCHEDULE)
    eid = execution_id("team/report", SLOT, "scheduled")
    assert (attempt.execution_id, attempt.fire_time, attempt.schedule_id) == (
        eid, SLOT, "team/report")
    assert attempt.log_fields() == {"schedule_id": "team/report",
                                    "fire_time": "2026-03-02T10:00:00Z",
                                    "execution_id": eid, "trigger": "scheduled"}
    request = attempt.claim_request(worker_id="w1", lease=timedelta(seconds=12), now=NOW,
                                    retention=timedelta(days=1))
    assert (request.execution_id, request.fire_time, request.overlap, request.worker_id) == (
        eid, SLOT, "skip", "w1")
    assert request.message is not None and request.message.message_id == "m1"
    assert attempt.action_context(2) == ActionContext(
        schedule_id="team/report", fire_time=SLOT, execution_id=eid, trigger="scheduled",
        attempt=2, params={"to": "ops"}, labels={"team": "ops"})
    missed = attempt.missed_record(worker_id="w1", now=NOW, retention=timedelta(days=1),
                                   reason="too late")
    assert (missed.execution_id, missed.state, missed.error, missed.expire_at) == (
        eid, State.MISSED, "too late", NOW + timedelta(days=1))


def test_due_missed_and_stopped() -> None:
    attempt = attempt_of(SCHEDULE)
    assert attempt.is_due and not attempt.is_one_shot_slot
    assert attempt.missed_reason(NOW) is None
    assert attempt.missed_reason(SLOT + timedelta(hours=2)) is not None
    manual = attempt_of(SCHEDULE, trigger="manual", fire_time=SLOT - timedelta(days=3))
    assert manual.is_due and manual.missed_reason(SLOT + timedelta(days=1)) is None
    stopping = threading.Event()
    attempt = attempt_of(SCHEDULE, stopping)
    assert not attempt.stopped
    stopping.set()
    assert attempt.stopped
