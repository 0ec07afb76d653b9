"""One attempt at a fire: the value the pipeline's steps pass, from the decoded delivery to the
recorded outcome.

A fire takes several shapes on its way to the target: the transport's `Delivery`, the
contract's `Fire`, the ledger's `ClaimRequest` and `Execution`, the action's `ActionContext`.
An `Attempt` holds what they are all made from (the fire, its slot, its execution ID, the
delivery that brought it, the handler of its action type and the event that stops the worker)
and makes each of them, so no step takes the fire apart again or is handed its pieces one by
one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.contract import Fire, execution_id
from scheduler.cron import is_slot
from scheduler.due import missed_reason
from scheduler.model import format_instant
from worker.action import ActionContext, ActionHandler
from worker.ledger import ClaimRequest, Execution, FireMessage, kept_message, missed_execution
from worker.transport import Delivery


@dataclass(frozen=True)
class Attempt:
    """One delivery of one fire, decoded: its fire and slot (`fire_time`, derived once), its
    execution ID, the delivery, the action's handler, and `stopping` (set when the worker
    begins to stop; None: never)."""

    fire: Fire
    fire_time: datetime
    execution_id: str
    delivery: Delivery
    handler: ActionHandler
    stopping: threading.Event | None = None

    @classmethod
    def of(
        cls,
        fire: Fire,
        fire_time: datetime,
        delivery: Delivery,
        handler: ActionHandler,
        stopping: threading.Event | None = None,
    ) -> Attempt:
        """The attempt at `fire`'s slot `fire_time`, under the slot's own execution ID."""
        eid = execution_id(fire.schedule_id, fire_time, fire.trigger)
        return cls(fire, fire_time, eid, delivery, handler, stopping)

    @property
    def schedule_id(self) -> str:
        """The schedule the fire belongs to."""
        return self.fire.schedule_id

    @property
    def trigger(self) -> str:
        """What fired it: `scheduled`, `manual` or `audit`."""
        return self.fire.trigger

    def log_fields(self) -> dict[str, Any]:
        """The fields every log line about this fire carries; the pipeline binds them once."""
        return {
            "schedule_id": self.schedule_id,
            "fire_time": format_instant(self.fire_time),
            "execution_id": self.execution_id,
            "trigger": self.trigger,
        }

    @property
    def stopped(self) -> bool:
        """True once the worker began to stop."""
        return self.stopping is not None and self.stopping.is_set()

    @property
    def is_due(self) -> bool:
        """The one-shot rule: its job's cron repeats every year, only the `at` slot is real.
        A manual run of a one-shot carries its own fire time and is always due. An audit fire
        carries its slot's time, which must be one of the schedule's slots."""
        if self.trigger == "manual":
            return True
        if self.fire.at is not None:
            return self.fire_time == self.fire.at
        return self.trigger == "scheduled" or is_slot(self.fire, self.fire_time)

    @property
    def is_one_shot_slot(self) -> bool:
        """True for a one-shot's own fire, the one the pipeline holds until its `at` when it
        came early."""
        return self.fire_time == self.fire.at

    def missed_reason(self, now: datetime) -> str | None:
        """Why the fire is too late to start at `now` (None when it may run): the catch-up
        policy, as the audit applies it too (`scheduler.due.missed_reason`). Manual fires are
        never missed: someone asked for them now. An expired one-shot's fire is its scheduled
        fire, late, so the policy applies to it as to any late delivery."""
        if self.trigger == "manual":
            return None
        fire = self.fire
        return missed_reason(fire, fire.catchup, fire.catchup_window, self.fire_time, now)

    def claim_request(
        self, *, worker_id: str, lease: timedelta, now: datetime, retention: timedelta
    ) -> ClaimRequest:
        """The claim of this fire by `worker_id`. The delivered message is kept with the
        running execution (when small enough), for the reaper (`worker.reaper`)."""
        delivery = self.delivery
        message = FireMessage(
            delivery.message_id, delivery.data, delivery.attributes, delivery.published_at
        )
        return ClaimRequest(
            execution_id=self.execution_id,
            schedule_id=self.schedule_id,
            fire_time=self.fire_time,
            trigger=self.trigger,
            worker_id=worker_id,
            lease=lease,
            overlap=self.fire.overlap,
            now=now,
            retention=retention,
            message=kept_message(message),
        )

    def action_context(self, attempt: int) -> ActionContext:
        """What the action's handler is called with, on the claim's `attempt`."""
        return ActionContext(
            schedule_id=self.schedule_id,
            fire_time=self.fire_time,
            execution_id=self.execution_id,
            trigger=self.trigger,
            attempt=attempt,
            params=self.fire.action.params,
            labels=self.fire.labels,
        )

    def missed_record(
        self, *, worker_id: str, now: datetime, retention: timedelta, reason: str
    ) -> Execution:
        """The final record of this fire when it came too late to start, for `reason`."""
        return missed_execution(
            self.execution_id,
            self.schedule_id,
            self.fire_time,
            self.trigger,
            worker_id=worker_id,
            now=now,
            retention=retention,
            error=reason,
        )
