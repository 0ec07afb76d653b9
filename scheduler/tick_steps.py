"""Tick mode's document steps (issue 17): what a sync writes to one schedule's registry document
(`scheduler.registry`), planned from what it read of it (`DocState`); `scheduler.tick_sync`
plans and applies them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from scheduler.model import Schedule, format_instant
from scheduler.one_shots import is_done_with, sync_fire
from scheduler.registry import definition_of, document_of, sync_digest
from scheduler.sync_plan import Step

Write = Literal["create", "set", "update", "delete"]


@dataclass(frozen=True)
class DocState:
    """What a plan reads of one registry document."""

    schedule_id: str
    definition: str
    fingerprint: str
    # Held or paused from then on (owes nothing); None while active.
    paused_since: datetime | None
    owner: str | None = None


@dataclass(frozen=True)
class DocumentStep(Step):
    """One write to one schedule's registry document. `job_id` is the job the schedule would
    have in jobs mode, so that a plan names each schedule the same way in both modes.
    `schedule` is what to write (None only to delete); `paused_since` the document's as read;
    `new_definition` whether what is owed restarts."""

    service: ClassVar[str] = "Firestore"

    schedule: Schedule | None = field(default=None, compare=False, repr=False)
    paused_since: datetime | None = None
    new_definition: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-compatible data, marked as a document's."""
        return {**super().to_dict(), "target": "document"}

    def describe(self) -> str:
        """One human-readable line."""
        return f"{self.kind:<7} document of {self.job_id} (schedule {self.schedule_id!r}): " \
               f"{self.reason}"

    def write(self, now: datetime, owner: str) -> tuple[Write, dict[str, Any]]:
        """The Firestore write of this step at `now`."""
        schedule = self.schedule
        if self.kind == "delete":
            return "delete", {}
        assert schedule is not None
        definition = definition_of(schedule)
        if self.kind == "pause":
            return "update", {"definition": definition,
                              "sync_digest": sync_digest(definition, True),
                              "paused_since": self.paused_since or now, "next_fire_time": None,
                              "updated_at": now}
        if self.kind == "update" and not self.new_definition:
            # Only what a fire does not depend on changed: what is owed, and when, stays.
            held = self.paused_since is not None
            return "update", {"definition": definition, "updated_at": now,
                              "sync_digest": sync_digest(definition, held)}
        paused_since = (self.paused_since or now) if schedule.paused else None
        # A create must not overwrite a document there already (another deployment's).
        return ("create" if self.kind == "create" else "set"), document_of(
            schedule, now, paused_since, now, owner)


def document_steps(schedule: Schedule, state: DocState | None, job_id: str) -> list[DocumentStep]:
    """The write (at most one) that brings a schedule's document in line with it."""
    def step(kind: Any, reason: str, new: bool = False) -> DocumentStep:
        return DocumentStep(kind, job_id, schedule.id, reason, paused=schedule.paused,
                            schedule=schedule, new_definition=new,
                            paused_since=state.paused_since if state is not None else None)

    if state is None:
        return [step("create", "no document", True)]
    if state.fingerprint != schedule.fingerprint():
        return [step("update", "document differs from its schedule", True)]
    held = state.paused_since is not None
    if schedule.paused and not held:
        return [step("pause", "schedule is paused")]
    if not schedule.paused and held:
        return [step("resume", "schedule is not paused")]
    if state.definition != definition_of(schedule) or state.owner is None:
        return [step("update", "document differs from its schedule")]
    return []


def schedule_steps(schedule: Schedule, state: DocState | None, job_id: str, *, now: datetime,
                   grace: timedelta, signing_key: str | None) -> list[Step]:
    """A schedule's document write and, for a one-shot past its job's slot whose document did
    not stand for it yet, the sync's own fire (as `scheduler.sync.steps_for` in jobs mode)."""
    if is_done_with(schedule, now, grace):
        if state is None:
            return []
        assert schedule.at is not None
        return [DocumentStep("delete", job_id, schedule.id,
                             f"one-shot fired at {format_instant(schedule.at)}; grace has passed")]
    steps: list[Step] = list(document_steps(schedule, state, job_id))
    written = any(s.kind in ("create", "resume") or getattr(s, "new_definition", False)
                  for s in steps)
    fire = sync_fire(schedule, None, now=now, signing_key=signing_key) if written else None
    if fire is not None:
        steps.append(Step("fire", job_id, schedule.id, fire.reason, message=fire.message))
    return steps
