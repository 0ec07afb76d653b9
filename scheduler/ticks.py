"""Tick mode (issue 17): the reserved tick schedule, its shards, and what the tick of a minute
publishes.

In tick mode Cloud Scheduler keeps one job per deployment, `{job_prefix}_tick`, which publishes
the reserved tick schedule's contract message every minute. A worker claims it like any fire
(its execution ID comes from the minute) and runs the `tick` action (`worker.actions.tick`):
it reads the registry documents due by then (`scheduler.registry`: `owner == P and
next_fire_time < due_before(M)`, ordered by `next_fire_time`), publishes one contract fire per
due slot and advances each document's `next_fire_time`. A tick with more due documents than
one process publishes quickly hands pages of them to shard fires, claimed by any replica.

Which slots the tick of minute M publishes (`plan_document`), so that each fire arrives when a
job's would:

* a cron schedule: every owed slot from its `next_fire_time` up to M itself (a minute with no
  tick leaves the slots due, and the next tick publishes them all, each judged by the catch-up
  rule in the worker's pipeline), except those older than the catch-up window plus a minute,
  which the pipeline could only record missed: the tick records them missed itself, unpublished
  (`DuePlan.missed`); the document then advances to the first slot after M;
* a one-shot: its `at`, in the tick of the minute its job would fire in
  (`scheduler.model.one_shot_slot`, 30 to 90 seconds ahead); the worker holds the fire until
  `at`, as it holds a job's early one-shot fire. Its document then has no next fire time.

Every fire is `scheduler.contract.build_message` of the schedule with the slot's exact
`fire-time` and trigger `scheduled`, so its execution ID is the one its job's fire would have
(`scheduler.contract.execution_id(id, slot)`) and the per-fire claim keeps one of a tick's fire
and a job's, or of two ticks' (a takeover, an overlap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from scheduler.contract import (
    ATTR_SCHEDULE_ID,
    Message,
    build_message,
    execution_id,
    slot_messages,
)
from scheduler.cron import CronDialect
from scheduler.due import NONE_CATCHUP_GRACE, Owed, latest_slots, slots_and_next
from scheduler.model import Action, Schedule, one_shot_slot
from scheduler.reserved import SHARD_INFIX, TICK_ACTION_TYPE, TICK_SCHEDULE_ID, is_tick_schedule

_DOCUMENTS_PARAM = "documents"
# The tick job's ID within a deployment's job prefix: `_` then two characters that are not
# lowercase hex digits, which `scheduler.naming.job_id_for` never writes after the prefix (its
# `_` always comes before two hex digits, or before a second `_` and a 52-character digest) and
# `schedule_id_for` reads as no schedule. So no schedule ID, `tick` included, has this job ID.
# Earlier versions named it `{job_prefix}tick`, which is the job of a schedule `tick`: a tick
# job of that name is found by its message (`is_tick_message`) and retired by the next sync.
TICK_JOB_SUFFIX = "_tick"

# The reserved schedule. `catchup: latest`: a tick delivered after the next one was due is
# recorded missed, since the newer tick publishes everything still due (its query has no lower
# bound); `overlap: allow`: a long tick never delays the next minute's slots.
TICK_SCHEDULE = Schedule(
    id=TICK_SCHEDULE_ID,
    action=Action(TICK_ACTION_TYPE),
    cron="* * * * *",
    timezone="UTC",
    overlap="allow",
    catchup="latest",
    catchup_window=timedelta(minutes=15),
    description="tick mode: publishes the due fires of every schedule (issue 17)",
)

# How far past its minute a tick looks. A document's `next_fire_time` is the minute whose tick
# publishes it (`scheduler.registry.first_slot`); a one-shot's written by earlier versions is its
# `at`: those in this minute's first half go out in the tick before, 0 to 30 s ahead.
LOOKAHEAD = timedelta(minutes=1)
# Most slots a tick publishes for one document: the newest ones. It also bounds the slots it
# records missed for one document (`DuePlan.missed`: those beyond the catch-up window, and those
# past this bound), the newest ones too: after an outage longer than that many slots, the older
# ones get no record (in jobs mode, no more than Pub/Sub's retention of their messages). Each
# one is a ledger write (up to 500 in one commit) and a step of the cron walked back from the
# window's edge (about 20-35 us on croniter): 1,000 cost about 30 ms per document, and one tick's
# documents of the same cron and next fire time share the walk.
MAX_SLOTS_PER_DOCUMENT = 1_000


def tick_job_id(job_prefix: str) -> str:
    """The Cloud Scheduler job ID of a deployment's tick."""
    return f"{job_prefix}{TICK_JOB_SUFFIX}"


def tick_message(signing_key: str | None = None) -> Message:
    """The message the tick job publishes every minute (its slot is the minute it fires in)."""
    return build_message(TICK_SCHEDULE, signing_key=signing_key)


def is_tick_message(attributes: Mapping[str, str]) -> bool:
    """Whether a job's message attributes are the tick's (whatever the job is called)."""
    return attributes.get(ATTR_SCHEDULE_ID) == TICK_SCHEDULE_ID


def tick_execution_id(minute: datetime) -> str:
    """The execution ID of the tick of `minute`."""
    return execution_id(TICK_SCHEDULE_ID, minute)


def due_before(minute: datetime) -> datetime:
    """The due query's bound for the tick of `minute`: documents whose `next_fire_time` is
    earlier than this may have a slot to publish (a cron slot of a whole minute: only those up
    to `minute` itself, none of the next minute read a minute early)."""
    return minute + LOOKAHEAD


@dataclass(frozen=True)
class Shard:
    """A page of due documents that the tick of `minute` hands to any replica."""

    minute: datetime
    documents: tuple[str, ...]

    @property
    def schedule_id(self) -> str:
        """The shard's reserved schedule ID: the same pages make the same shard."""
        return f"{TICK_SCHEDULE_ID}{SHARD_INFIX}{self.documents[0]}"

    @property
    def execution_id(self) -> str:
        """The shard's execution ID (its fire time is the tick's minute)."""
        return execution_id(self.schedule_id, self.minute)

    def message(self, signing_key: str | None = None) -> Message:
        """The shard's fire: the tick schedule under the shard's ID, with the documents as the
        action's parameters and the tick's minute as its exact fire time."""
        # `catchup: all`, not the tick's `latest`: a shard is the rest of a tick already claimed,
        # and the next minute's tick does not redo it. Handed out after the claimer has read
        # every due ID, a 100,000-document tick's shards arrive after the next minute has begun
        # and were all recorded missed, each minute again (bench_ticks.py --only memory).
        schedule = replace(TICK_SCHEDULE, id=self.schedule_id, catchup="all", action=Action(
            TICK_ACTION_TYPE, {_DOCUMENTS_PARAM: list(self.documents)}))
        return build_message(schedule, signing_key=signing_key, fire_time=self.minute)


def shard_documents(schedule_id: str, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The documents of a shard fire (None for the tick itself); ValueError when the fire is
    neither the tick nor a well-formed shard."""
    if schedule_id == TICK_SCHEDULE_ID and not params:
        return None
    documents = params.get(_DOCUMENTS_PARAM)
    if (not is_tick_schedule(schedule_id) or set(params) != {_DOCUMENTS_PARAM}
            or not isinstance(documents, list) or not documents
            or not all(isinstance(d, str) and d for d in documents)
            or schedule_id != f"{TICK_SCHEDULE_ID}{SHARD_INFIX}{documents[0]}"):
        raise ValueError(f"schedule {schedule_id!r}: not the tick or one of its shards")
    return tuple(documents)


@dataclass(frozen=True)
class DuePlan:
    """What the tick of a minute does with one due document."""

    slots: tuple[datetime, ...]
    # The document's new `next_fire_time` (None: no slot is left).
    next_fire_time: datetime | None
    # Whether older slots were left out: beyond the catch-up window at any time after the
    # minute (the pipeline could only record them missed), or past MAX_SLOTS_PER_DOCUMENT.
    skipped: bool = False
    # The owed slots left out, oldest first (the newest MAX_SLOTS_PER_DOCUMENT of them): not
    # published, but recorded missed by the tick, as the pipeline records a late fire.
    missed: tuple[datetime, ...] = ()


_WalkKey = tuple[str, str, CronDialect, datetime, datetime]


@dataclass
class Walks:
    """One tick's cron walks, `plan_document`'s memo: by (cron, time zone, dialect, start,
    end), the slots published and the next one (`forward`), and the left-out slots walked back
    from the window's edge (`back`)."""

    forward: dict[_WalkKey, tuple[list[datetime], datetime | None]] = field(default_factory=dict)
    back: dict[_WalkKey, list[datetime]] = field(default_factory=dict)


def plan_document(owed: Owed, next_fire_time: datetime, minute: datetime,
                  walks: Walks | None = None) -> DuePlan | None:
    """Which slots of a document the tick of `minute` publishes and where the document advances
    to, given its stored `next_fire_time`; None when it has nothing to publish yet (or is
    paused: the control module clears a paused document's next fire time, and a tick never
    races it to a value). `walks`: the walks of the documents planned before it in the same
    tick, reused and added to (many schedules share a cron and are due at the same slot)."""
    schedule = owed.schedule
    if schedule.paused:
        return None
    if schedule.at is not None:
        if one_shot_slot(schedule.at) > minute:
            return None
        owes = owed.owes(schedule.at) and next_fire_time <= schedule.at
        return DuePlan((schedule.at,) if owes else (), None)
    if next_fire_time > minute:
        return None
    # A slot older than this is beyond the catch-up window at any time after `minute`: the
    # pipeline could only record it missed.
    oldest = minute - schedule.catchup_window - NONE_CATCHUP_GRACE
    start = max(next_fire_time, oldest) - timedelta(microseconds=1)
    walks = Walks() if walks is None else walks
    key = _walk_key(schedule, start, minute)
    if key not in walks.forward:
        walks.forward[key] = slots_and_next(schedule, start, minute)
    walked, following = walks.forward[key]
    slots = [s for s in walked if owed.owes(s)]
    over = slots[:-MAX_SLOTS_PER_DOCUMENT][-MAX_SLOTS_PER_DOCUMENT:]
    older = _older_slots(owed, next_fire_time, oldest, walks)
    missed = (older + over)[-MAX_SLOTS_PER_DOCUMENT:]
    return DuePlan(tuple(slots[-MAX_SLOTS_PER_DOCUMENT:]), following,
                   next_fire_time < oldest or len(slots) > MAX_SLOTS_PER_DOCUMENT, tuple(missed))


def _walk_key(schedule: Schedule, start: datetime, end: datetime) -> _WalkKey:
    return (schedule.effective_cron, schedule.effective_timezone, schedule.cron_dialect, start,
            end)


def _older_slots(owed: Owed, next_fire_time: datetime, oldest: datetime,
                 walks: Walks) -> list[datetime]:
    """The newest MAX_SLOTS_PER_DOCUMENT owed slots from `next_fire_time` to before `oldest`,
    oldest first: walked back from the newest one owed, never over the whole outage."""
    start = max(next_fire_time, owed.owed_since)
    end = oldest if owed.paused_since is None else min(oldest, owed.paused_since)
    if start >= end:
        return []
    key = _walk_key(owed.schedule, start, end)
    if key not in walks.back:
        walks.back[key] = latest_slots(owed.schedule, start, end, MAX_SLOTS_PER_DOCUMENT)
    return walks.back[key]


def fire_messages(schedule: Schedule, slots: Sequence[datetime],
                  signing_key: str | None = None) -> list[Message]:
    """The contract fire of each slot: the job's message, with the slot's exact fire time."""
    return slot_messages(schedule, slots, signing_key=signing_key)
