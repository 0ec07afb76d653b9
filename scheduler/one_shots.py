"""One-shots at sync time: when a one-shot's job is done with, and the fire a sync publishes
itself for a one-shot whose job can no longer fire it.

The hub fires a one-shot at its exact `fireAt` (scion pkg/hub/scheduler.go:263-271) and, at
start-up, fires each pending event already past its `fireAt` once, marking it `expired`
(:237-247, :296-299). Here a one-shot's job fires ahead of `at` (`scheduler.model.one_shot_slot`)
and the worker holds the fire until `at`; when a sync writes the job after that slot, or after
`at` itself, the job will not fire this year, so the sync publishes the fire: the job's own
message before `at`, an `expired` fire after it. Both have the one-shot's execution ID, so
however many are published, and whether or not the job fired too, the fire runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from google.cloud import scheduler_v1

from scheduler.contract import ATTR_AT, Message, build_message
from scheduler.jobs import attributes_of, is_paused
from scheduler.model import Schedule, format_instant

# A sync fires a past-due one-shot however late its catch-up window allows, and never later
# than this: Pub/Sub keeps a subscription's fires at most 7 days, so no scheduled fire is ever
# later, and the ledger keeps every record for 30 days, so a fire published again within this
# bound finds its record and is a duplicate.
MAX_LATE_FIRE = timedelta(days=7)


@dataclass(frozen=True)
class SyncFire:
    """A fire a sync publishes itself, and why."""

    message: Message
    reason: str


def late_fire_bound(schedule: Schedule) -> timedelta:
    """How late after `at` a sync may still fire a one-shot itself."""
    return min(schedule.catchup_window, MAX_LATE_FIRE)


def is_done_with(schedule: Schedule, now: datetime, grace: timedelta) -> bool:
    """Whether a one-shot's job is done with: `grace` after `at`, or as long as a sync may
    still fire it late, whichever is longer. Until then the job is the record that its fire
    went out (at the job's slot, or from the sync that wrote the job), so no sync fires it
    again. Always False for a cron schedule."""
    if schedule.at is None:
        return False
    return schedule.at + max(grace, late_fire_bound(schedule)) < now


def sync_fire(schedule: Schedule, job: scheduler_v1.Job | None, *, now: datetime,
              signing_key: str | None) -> SyncFire | None:
    """The fire a sync publishes for a one-shot whose job can no longer fire it: the job's slot
    has passed, and the job is missing, paused or for another `at`. None otherwise, and for a
    paused one-shot or one later than `late_fire_bound`."""
    at, slot = schedule.at, schedule.job_slot
    if at is None or slot is None or schedule.paused or now < slot:
        return None
    if job is not None and not is_paused(job) \
            and attributes_of(job).get(ATTR_AT) == format_instant(at):
        return None  # the job fired it at its slot, or the sync that wrote it late did
    if now < at:
        return SyncFire(build_message(schedule, signing_key=signing_key),
                        f"its job's slot has passed; fired now, held until {format_instant(at)}")
    if now - at > late_fire_bound(schedule):
        return None
    return SyncFire(build_message(schedule, signing_key=signing_key, trigger="expired"),
                    f"past due since {format_instant(at)}: fired once now, as expired")
