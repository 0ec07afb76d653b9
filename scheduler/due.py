"""The due-slot finder: which slots a schedule owed in a window, and which of them nobody fired.

Pure functions over values (window, schedule definitions as the registry knows them, the
execution IDs the ledger holds), shared by the worker's audit (`worker.audit`) and, later, by
tick mode's catch-up (issue 17), so that "what was owed" has one definition. Slots come from
`scheduler.cron`, the semantics (and cron dialect) the worker derives fire times with.

What a schedule owes: every slot of its effective cron (a one-shot: its `at`, once) from
the moment its current definition took effect (`owed_since`: created, edited, or resumed; a
slot before it belonged to an older definition or to nobody) until it was paused
(`paused_since`, also set while its job is being written), never a manual run. A slot is
unaccounted for when no execution record has its ID (`scheduler.contract.execution_id` of the
slot, which a scheduled and an audit fire share); any record, running or final, accounts for it.

Whether an owed slot may still start is the schedule's catch-up policy (`missed_reason`), which
the worker's pipeline applies to every delivery of a slot as well.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.contract import execution_id
from scheduler.cron import CronDialect, CronSpec, iter_fires, next_fires
from scheduler.model import Catchup, Schedule, format_instant

# `catchup: none` still tolerates ordinary delivery delay; beyond this a fire counts as missed.
NONE_CATCHUP_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Owed:
    """A schedule definition and the span of time in which its slots are owed."""

    schedule: Schedule
    owed_since: datetime
    paused_since: datetime | None = None

    def owes(self, slot: datetime) -> bool:
        """Whether `slot` fell while this definition was in effect and not paused (or held
        while its job was being written: `paused_since` on an active schedule)."""
        if slot < self.owed_since:
            return False
        if self.paused_since is not None:
            return slot < self.paused_since
        return not self.schedule.paused


@dataclass(frozen=True)
class Slot:
    """One owed slot nobody accounted for."""

    schedule: Schedule
    fire_time: datetime
    execution_id: str


def slots_in(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's slots in `(start, end]`, oldest first (a one-shot: its `at`, the fire
    time its job's slot stands for)."""
    return slots_and_next(schedule, start, end)[0]


def slots_and_next(schedule: Schedule, start: datetime,
                   end: datetime) -> tuple[list[datetime], datetime | None]:
    """`slots_in(schedule, start, end)` and the first slot after `end` (None when there is
    none), in one walk: tick mode publishes the first and advances to the second."""
    if schedule.at is not None:
        return ([schedule.at] if start < schedule.at <= end else [],
                schedule.at if schedule.at > end else None)
    slots: list[datetime] = []
    for slot in iter_fires(schedule, start):
        if slot > end:
            return slots, slot
        slots.append(slot)
    return slots, None


def latest_slots(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """The newest `limit` slots of the schedule in `[start, end)`, oldest first. It walks back
    from `end` and stops after `limit` slots, so it costs `limit` steps of the cron however long
    `[start, end)` is (an outage of a year of a minutely cron is still `limit` steps)."""
    if schedule.at is not None:
        return [schedule.at] if start <= schedule.at < end and limit > 0 else []
    slots: list[datetime] = []
    if limit <= 0:
        return slots
    for slot in iter_fires(schedule, end, reverse=True):
        if slot < start:
            break
        slots.append(slot)
        if len(slots) == limit:
            break
    slots.reverse()
    return slots


def unaccounted(owed: Iterable[Owed], recorded: Collection[str], start: datetime,
                end: datetime) -> tuple[int, list[Slot]]:
    """How many slots in `(start, end]` the schedules owed, and those of them whose execution ID
    is not in `recorded`, oldest first."""
    count = 0
    missing: list[Slot] = []
    # Schedules with the same cron share its walk (most do: a tick-mode deployment audits
    # thousands of them every minute), as a tick's do (`scheduler.ticks.plan_document`).
    walks: dict[tuple[datetime | None, str, str, CronDialect], list[datetime]] = {}
    for entry in owed:
        schedule = entry.schedule
        key = (schedule.at, schedule.effective_cron, schedule.effective_timezone,
               schedule.cron_dialect)
        if key not in walks:
            walks[key] = slots_in(schedule, start, end)
        for slot in walks[key]:
            if not entry.owes(slot):
                continue
            count += 1
            eid = execution_id(entry.schedule.id, slot)
            if eid not in recorded:
                missing.append(Slot(entry.schedule, slot, eid))
    missing.sort(key=lambda item: (item.fire_time, item.schedule.id))
    return count, missing


def missed_reason(spec: CronSpec, catchup: Catchup, window: timedelta, fire_time: datetime,
                  now: datetime) -> str | None:
    """Why a slot's fire is too late to start at `now` under the catch-up policy (None when it
    may run): later than the catch-up window; with `none`, more than a minute late; with
    `latest`, superseded by a newer slot that is due."""
    late = now - fire_time
    if late > window:
        return f"late by {late.total_seconds():.0f}s, beyond the catch-up window of " \
               f"{window.total_seconds():.0f}s"
    if catchup == "none" and late > NONE_CATCHUP_GRACE:
        return f"late by {late.total_seconds():.0f}s and catchup is none"
    if catchup == "latest":
        newer = next_fires(spec, fire_time, 1)
        if newer and newer[0] <= now:
            return f"superseded by the slot at {format_instant(newer[0])} (catchup: latest)"
    return None
