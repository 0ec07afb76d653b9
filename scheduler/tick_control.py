"""`TickControl`: the control operations in tick mode (issue 17), with what a user sees unchanged.

`scheduler.control.with_registry` builds it when `SCION_SCHEDULER_MODE=ticks`. Syncs go through
`scheduler.tick_sync` (documents, the tick job, no per-schedule jobs); the single-schedule
operations (upsert, remove, pause, resume) write one document each. Reads (list, describe, run,
the HTTP API) see each document as the job it stands for: the very job jobs mode would hold
(`JobSpec.desired_job` of its definition), paused while the document owes nothing, its
`schedule_time` the document's `next_fire_time`. So `describe` shows the same fields, a manual
run publishes the same message, and the API's ETag is the same fingerprint, in both modes.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from google.cloud import scheduler_v1

from scheduler import groves
from scheduler.config import ConfigError, Settings
from scheduler.control import SchedulerControl
from scheduler.model import Schedule
from scheduler.registry import Entry, ScheduleRegistry, document_id
from scheduler.sync import ApplyResult, StepOutcome
from scheduler.sync_plan import Plan, Step, StepKind
from scheduler.tick_steps import DocumentStep, schedule_steps
from scheduler.tick_sync import TickSyncer

_PAUSED, _ENABLED = scheduler_v1.Job.State.PAUSED, scheduler_v1.Job.State.ENABLED


class TickControl(SchedulerControl):
    """`SchedulerControl` in tick mode: the schedule registry is the store of schedules."""

    def __init__(self, settings: Settings, *, registry: ScheduleRegistry | None = None,
                 **kwargs: Any) -> None:
        if registry is None:
            raise ConfigError("SCION_SCHEDULER_MODE=ticks keeps the schedules in Firestore: set "
                              "FIRESTORE_EMULATOR_HOST next to CLOUD_SCHEDULER_EMULATOR_HOST")
        super().__init__(settings, registry=registry, **kwargs)
        self.ticks = TickSyncer(registry, self.syncer, registry.owner or self.spec.prefix)

    def _registry(self) -> ScheduleRegistry:
        return self.ticks.registry

    # -- sync --------------------------------------------------------------------------------

    def plan(self, schedules: Sequence[Schedule], *, prune: bool = True,
             keep: Collection[str] = (), verify: bool = False) -> Plan:
        """What `reconcile` would change: document writes, the tick job, per-schedule job
        deletes (see `scheduler.tick_sync`); `verify`: read every document, not trusting the
        sync manifest (`scheduler.tick_manifest`)."""
        return self.ticks.plan(schedules, prune=prune, keep=keep, verify=verify)

    def apply(self, plan: Plan) -> ApplyResult:
        """Run a plan's steps (`scheduler.tick_sync.TickSyncer.apply`)."""
        return self.ticks.apply(plan)

    def plan_grove(self, listing: groves.GroveListing, grove: str) -> groves.GrovePlan:
        """A grove's plan in tick mode: which items are the grove's, refused or gone is decided
        as in jobs mode (`scheduler.groves.plan_grove`, over the jobs the documents stand for);
        each schedule it would change gets its document's write instead."""
        decided = groves.plan_grove(self.schedule_jobs(), listing, grove, self.spec,
                                    now=self.clock(), grace=self.syncer.grace)
        by_id = {s.id: s for s in listing.schedules}
        ids = {s.schedule_id for s in decided.plan.steps if s.schedule_id is not None}
        states = self.ticks.states(document_id(i) for i in ids)
        steps: list[Step] = []
        for sid in sorted(ids):
            state, job_id = states.get(document_id(sid)), self.spec.job_id(sid)
            if sid in by_id:
                steps += schedule_steps(by_id[sid], state, job_id, now=self.clock(),
                                        grace=self.syncer.grace,
                                        signing_key=self.spec.signing_key)
            elif state is not None:
                steps.append(DocumentStep("delete", job_id, sid, "no schedule"))
        return replace(decided, plan=replace(decided.plan, steps=tuple(steps)))

    def upsert(self, schedule: Schedule) -> ApplyResult:
        """Bring one schedule's document in line: one read, at most one write (and a past-due
        one-shot's fire, as in jobs mode)."""
        return self.apply(self.ticks.plan_one(schedule))

    def remove(self, schedule_id: str) -> ApplyResult:
        """Delete a schedule's document; one that is already gone is success."""
        if self.ticks.state(schedule_id) is None:
            return self._noted("delete", schedule_id, "schedule removed", "already gone")
        return self.apply(Plan((self._step("delete", schedule_id, "schedule removed"),),
                               prune=False))

    def pause(self, schedule_id: str) -> ApplyResult:
        """Owe nothing from now on (the next sync follows the schedule's own `paused`)."""
        entry = self._registry().get(schedule_id)
        if entry is None:
            return self._missing("pause", schedule_id)
        if entry.owed.paused_since is not None:
            return self._noted("pause", schedule_id, "paused on request", "already paused")
        step = replace(self._step("pause", schedule_id, "paused on request"),
                       schedule=entry.owed.schedule)
        return self.apply(Plan((step,), prune=False))

    def resume(self, schedule_id: str) -> ApplyResult:
        """Owe the schedule's slots again from now on."""
        entry = self._registry().get(schedule_id)
        if entry is None:
            return self._missing("resume", schedule_id)
        if entry.owed.paused_since is None and not entry.owed.schedule.paused:
            return self._noted("resume", schedule_id, "resumed on request", "already enabled")
        schedule = replace(entry.owed.schedule, paused=False)
        step = replace(self._step("resume", schedule_id, "resumed on request"), schedule=schedule)
        return self.apply(Plan((step,), prune=False))

    def _step(self, kind: StepKind, schedule_id: str, reason: str) -> DocumentStep:
        return DocumentStep(kind, self.spec.job_id(schedule_id), schedule_id, reason,
                            paused=kind == "pause")

    def _noted(self, kind: StepKind, schedule_id: str, reason: str, note: str) -> ApplyResult:
        step = self._step(kind, schedule_id, reason)
        return ApplyResult(Plan((step,), prune=False), (StepOutcome(step, "ok", note=note),))

    def _missing(self, kind: StepKind, schedule_id: str) -> ApplyResult:
        started = time.monotonic()
        step = self._step(kind, schedule_id, f"{kind}d on request")
        error = f"404 not found: no schedule {schedule_id!r} in this deployment's registry"
        return ApplyResult(Plan((step,), prune=False), (StepOutcome(step, "failed", error),),
                           time.monotonic() - started)

    # -- read --------------------------------------------------------------------------------

    def schedule_jobs(self) -> list[Any]:
        """Every document of this deployment as the job it stands for."""
        return [self.job_for(entry) for entry in self._registry().load().values()]

    def job_of(self, schedule_id: str) -> Any:
        """A schedule's document as the job it stands for; None when it has none."""
        entry = self._registry().get(schedule_id)
        return self.job_for(entry) if entry is not None else None

    def job_for(self, entry: Entry) -> scheduler_v1.Job:
        """The job jobs mode would hold for a document: its definition's, paused while the
        document owes nothing, next due at the document's `next_fire_time`."""
        job = self.spec.desired_job(entry.owed.schedule)
        paused = entry.owed.paused_since is not None or entry.owed.schedule.paused
        job.state = scheduler_v1.Job.State(_PAUSED if paused else _ENABLED)
        if entry.next_fire_time is not None:
            job.schedule_time = entry.next_fire_time
        return job
